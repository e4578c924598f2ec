//! The `rvvmm` command's handling of bad input: one line, the right status, never a panic.

use std::process::{Command, Output};

/// The rvvmm under test: cargo's build of it, or `RVVMM_BIN` (the lab runs these tests in
/// its L1, where the test executable is far from the tree that built it).
fn rvvmm_bin() -> String {
    std::env::var("RVVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rvvmm").into())
}

fn rvvmm(args: &[&str]) -> Output {
    Command::new(rvvmm_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("rvvmm runs")
}

/// A file holding `bytes` in a directory of this test run's own.
fn temp_file(dir: &str, name: &str, bytes: impl AsRef<[u8]>) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
}

#[test]
fn no_kernel_is_a_usage_error() {
    let out = rvvmm(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--kernel <FILE>"));
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for args in [
        &["--kernel", "k", "--cpus", "0"][..],
        &["--kernel", "k", "--cpus", "33"],
        &["--kernel", "k", "--memory", "lots"],
        &["--kernel", "k", "--memory", "1M"],
        &["--kernel", "k", "--memory", "1T"],
        &["--kernel", "k", "--bogus"],
        &["--kernel", "k", "--timeout", "0"],
        &["--kernel", "k", "--timeout", "soon"],
        &["--kernel", "k", "--timeout", "-5s"],
        &["--kernel", "k", "--suspend-seconds", "0"],
        &["--kernel", "k", "--suspend-seconds", "later"],
        &["--kernel", "k", "--serial-log", ""],
        &["--kernel", "k", "--seccomp", "yes"],
        &["--kernel", "k", "--vsock", "cid=2,socket=/tmp/v.sock"],
        &[
            "--kernel",
            "k",
            "--vsock",
            "cid=4294967295,socket=/tmp/v.sock",
        ],
        &["--kernel", "k", "--vsock", "cid=3"],
        &["--kernel", "k", "--vsock", "socket=/tmp/v.sock"],
        &["--kernel", "k", "--vsock", "cid=three,socket=/tmp/v.sock"],
        &[
            "--kernel",
            "k",
            "--vsock",
            "cid=3,socket=/tmp/v.sock,color=red",
        ],
        &[
            "--kernel",
            "k",
            "--vsock",
            &format!("cid=3,socket=/tmp/{}", "v".repeat(100)),
        ],
        &["--kernel", "k", "--fs", "socket=/tmp/vfs.sock"],
        &["--kernel", "k", "--fs", "tag=share"],
        &[
            "--kernel",
            "k",
            "--fs",
            &format!("tag={},socket=/tmp/vfs.sock", "t".repeat(37)),
        ],
        &[
            "--kernel",
            "k",
            "--fs",
            "tag=a,socket=/tmp/v,queue_size=1000",
        ],
        &["--kernel", "k", "--fs", "tag=a,socket=/tmp/v,cache=always"],
    ] {
        let out = rvvmm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    }
}

#[test]
fn an_unwritable_serial_log_is_a_usage_error_before_anything_starts() {
    let kernel = temp_file("rvvmm-cli-serial-log", "guest.bin", [0x73, 0, 0x50, 0x10]);
    let out = rvvmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--serial-log",
        "/nonexistent/dir/console.log",
    ]);
    assert_one_line_error(
        &out,
        2,
        "--serial-log: /nonexistent/dir/console.log: No such file",
    );
    let out = rvvmm(&["--kernel", kernel.to_str().unwrap(), "--timeout", "0"]);
    assert!(
        stderr(&out).contains("a timeout of zero"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_vsock_socket_path_in_use_is_one_line_before_anything_starts() {
    let kernel = temp_file("rvvmm-cli-vsock", "guest.bin", [0x73, 0, 0x50, 0x10]);
    let taken = kernel.with_file_name("taken.sock");
    std::fs::write(&taken, b"not a socket").unwrap();
    let out = rvvmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--vsock",
        &format!("cid=3,socket={}", taken.display()),
    ]);
    assert_one_line_error(
        &out,
        1,
        "the path exists and is not a socket; remove it or choose another",
    );
    assert_eq!(
        std::fs::read(&taken).unwrap(),
        b"not a socket",
        "left alone"
    );
}

#[test]
fn a_virtio_fs_backend_nobody_serves_is_a_usage_error_before_anything_starts() {
    let kernel = temp_file("rvvmm-cli-fs", "guest.bin", [0x73, 0, 0x50, 0x10]);
    let absent = kernel.with_file_name("absent.sock");
    let out = rvvmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--fs",
        &format!("tag=share,socket={}", absent.display()),
    ]);
    assert_one_line_error(
        &out,
        2,
        "virtio-fs 'share': cannot connect to the backend's socket",
    );
    // A socket file whose listener is gone: refused, the same one line.
    let dead = kernel.with_file_name("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let out = rvvmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--fs",
        &format!("tag=share,socket={}", dead.display()),
    ]);
    assert_one_line_error(&out, 2, "Connection refused");
}

#[test]
fn missing_kernel_names_the_path_and_the_os_error() {
    let out = rvvmm(&["--kernel", "/nonexistent/Image"]);
    assert_one_line_error(
        &out,
        2,
        "--kernel: /nonexistent/Image: No such file or directory",
    );
}

#[test]
fn a_directory_is_not_a_kernel() {
    let out = rvvmm(&["--kernel", "/"]);
    assert_one_line_error(&out, 1, "cannot read kernel /");
}

#[test]
fn empty_kernel_is_refused() {
    let empty = temp_file("rvvmm-cli", "empty.bin", b"");
    let out = rvvmm(&["--kernel", empty.to_str().unwrap()]);
    assert_one_line_error(&out, 1, "is empty");
}

#[test]
fn kernel_larger_than_ram_is_refused() {
    let big = temp_file("rvvmm-cli-big", "big.bin", vec![0u8; 5 << 20]);
    let out = rvvmm(&["--kernel", big.to_str().unwrap(), "--memory", "4M"]);
    assert_one_line_error(&out, 1, "raise --memory");
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn a_host_without_riscv_kvm_is_told_so() {
    let k = temp_file("rvvmm-cli-ok", "ok.bin", [0x73, 0x00, 0x50, 0x10]);
    let out = rvvmm(&["--kernel", k.to_str().unwrap()]);
    assert_one_line_error(&out, 1, "only on a riscv64 host with KVM");
}

#[test]
fn huge_pages_need_whole_pages_and_a_reservation() {
    let k = temp_file("rvvmm-cli-huge", "ok.bin", [0x73, 0x00, 0x50, 0x10]);
    let k = k.to_str().unwrap();
    let out = rvvmm(&["--kernel", k, "--hugepages", "--memory", "5M"]);
    assert_one_line_error(
        &out,
        2,
        "--memory: with hugepages, RAM must be a multiple of 2 MiB",
    );
    // Without huge pages reserved the reservation fails at once, with the way to make some.
    let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    if reserved.trim() == "0" {
        let out = rvvmm(&["--kernel", k, "--hugepages", "--memory", "8M"]);
        assert_one_line_error(&out, 1, "/proc/sys/vm/nr_hugepages");
    }
}

#[test]
fn remote_reports_an_unreachable_socket_in_one_line() {
    let out = rvvmm(&["remote", "--api-socket", "/nonexistent/api.sock", "ping"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.starts_with("rvvmm remote: cannot reach the API at /nonexistent/api.sock"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
}

#[test]
fn remote_without_a_command_is_a_usage_error() {
    let out = rvvmm(&["remote", "--api-socket", "/tmp/x.sock"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unusable_api_socket_path_is_a_one_line_error() {
    let kernel = temp_file("rvvmm-cli-api", "guest.bin", [0x73, 0x00, 0x50, 0x10]);
    let kernel = kernel.to_str().unwrap();
    // A directory that does not exist.
    let out = rvvmm(&[
        "--kernel",
        kernel,
        "--api-socket",
        "/nonexistent/dir/api.sock",
    ]);
    assert_one_line_error(
        &out,
        1,
        "--api-socket /nonexistent/dir/api.sock: No such file",
    );
    // A file that is not a socket: refused, and left alone.
    let file = temp_file("rvvmm-cli-api", "not-a-socket", b"keep me");
    let out = rvvmm(&["--kernel", kernel, "--api-socket", file.to_str().unwrap()]);
    assert_one_line_error(&out, 1, "the path exists and is not a socket");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// `--print-config` turns a command line into a config file; flags override the file; a QEMU
/// dtb gives the hart count and RAM size; stderr says where each value came from.
#[test]
fn print_config_round_trips_and_flags_override_the_file() {
    let k = temp_file("rvvmm-cli-conf", "k.bin", [0x73, 0x00, 0x50, 0x10]);
    // Carried in the test executable, which also runs far from the tree (the lab's L1).
    let dtb = temp_file(
        "rvvmm-cli-conf",
        "virt.dtb",
        include_bytes!("data/qemu-virt-smp2.dtb"),
    );
    let dtb = dtb.to_str().unwrap();
    let out = rvvmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--dtb",
        dtb,
        "--cmdline",
        "console=ttyS0",
        "--rng",
        "--print-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cpus"]["boot_vcpus"], 2, "the dtb's harts");
    assert_eq!(json["memory"]["size"], 2u64 << 30, "the dtb's RAM");
    let err = stderr(&out);
    assert!(err.contains("cpus.boot_vcpus = 2  (dtb "), "{err}");
    assert!(
        err.contains("payload.cmdline = \"console=ttyS0\"  (--cmdline)"),
        "{err}"
    );
    assert!(err.contains("rvvmm.irqchip = \"auto\"  (default)"), "{err}");

    let file = temp_file("rvvmm-cli-conf", "vm.json", &out.stdout);
    let out = rvvmm(&[
        "--config",
        file.to_str().unwrap(),
        "--cpus",
        "1",
        "--print-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["cpus"]["boot_vcpus"], 1, "the flag wins");
    assert_eq!(again["payload"], json["payload"]);
    assert_eq!(again["rng"], json["rng"]);
    let err = stderr(&out);
    assert!(err.contains("cpus.boot_vcpus = 1  (--cpus)"), "{err}");
    assert!(err.contains("payload.kernel = "), "{err}");
    assert!(err.contains("(config file)"), "{err}");
}

#[test]
fn bad_config_files_are_one_line_usage_errors() {
    let k = temp_file("rvvmm-cli-badconf", "k.bin", [0x73, 0x00, 0x50, 0x10]);
    let k = k.to_str().unwrap();
    for (text, needle) in [
        ("{".to_string(), "not JSON"),
        (
            format!("{{\"payload\": {{\"kernel\": \"{k}\"}}, \"cpus\": {{\"boot_vcpus\": 99}}}}"),
            "cpus.boot_vcpus: 99 vCPUs",
        ),
        (
            format!("{{\"payload\": {{\"kernel\": \"{k}\"}}, \"balloon\": {{\"size\": 1}}}}"),
            "balloon: ",
        ),
        (
            format!(
                "{{\"payload\": {{\"kernel\": \"{k}\", \"initramfs\": \"/nonexistent/initrd\"}}}}"
            ),
            "payload.initramfs: /nonexistent/initrd: No such file",
        ),
        ("{\"payload\": {}}".to_string(), "payload.kernel: no kernel"),
    ] {
        let file = temp_file("rvvmm-cli-badconf", "vm.json", &text);
        let out = rvvmm(&["--config", file.to_str().unwrap()]);
        assert_one_line_error(&out, 2, needle);
    }
    let out = rvvmm(&["--config", "/nonexistent/vm.json"]);
    assert_one_line_error(&out, 2, "config /nonexistent/vm.json: No such file");
    let out = rvvmm(&["--config", "/"]);
    assert_one_line_error(&out, 2, "config /: Is a directory");
    let out = rvvmm(&["--config", "/dev/zero"]);
    assert_one_line_error(&out, 2, "config /dev/zero: not a regular file");
    let out = rvvmm(&["--api-socket", "/tmp/x.sock", "--memory", "512M"]);
    assert_one_line_error(&out, 2, "need --kernel or --config");
    let out = rvvmm(&["--kernel", k, "--disable-isa", "q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown ISA extension 'q'"));
}

/// A FIFO (nobody writing) or a device given as an input file is refused at once, in one line,
/// never waited on or read without end: rvvmm with each must finish within seconds.
#[test]
fn special_files_as_inputs_are_refused_at_once() {
    let k = temp_file("rvvmm-cli-special", "guest.bin", [0x73, 0x00, 0x50, 0x10]);
    let fifo = k.with_file_name("fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (k, fifo) = (k.to_str().unwrap(), fifo.to_str().unwrap());
    for (args, code) in [
        (vec!["--kernel", fifo], 1),
        (vec!["--kernel", "/dev/zero"], 1),
        (vec!["--kernel", k, "--initrd", fifo], 1),
        (vec!["--kernel", k, "--dtb", fifo], 2),
        (vec!["--kernel", k, "--dtb", "/dev/zero"], 2),
        (vec!["--config", fifo], 2),
    ] {
        let mut child = Command::new(rvvmm_bin())
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{args:?}: rvvmm still runs after 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_one_line_error(&out, code, "not a regular file");
    }
}

#[test]
fn restore_refusals_are_one_line() {
    let out = rvvmm(&["--restore", "/no/scheme"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown restore option"),
        "{}",
        stderr(&out)
    );
    let out = rvvmm(&["--restore", "file:///x", "--kernel", "k"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = rvvmm(&["--restore", "source_url=file:///nonexistent/snap"]);
    assert_one_line_error(
        &out,
        1,
        "/nonexistent/snap/state.snap: No such file or directory",
    );
    let dir = temp_file("rvvmm-cli-snap", "state.snap", b"RVVMMSNP and then garbage");
    let url = format!("file://{}", dir.parent().unwrap().display());
    let out = rvvmm(&["--restore", &url]);
    assert_one_line_error(&out, 1, "the header's checksum does not match");
}
