//! The REST API end to end: a scripted VM run by the real control loop, driven over the Unix
//! socket by the client `rvvmm remote` uses, and by raw (malformed) requests.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rvvmm::api::client::{call, parse_answer, remote, Answer};
use rvvmm::api::server::{ApiError, ApiServer};
use rvvmm::arch::riscv64::layout::TESTDEV_BASE;
use rvvmm::console::BufferConsole;
use rvvmm::hypervisor::scripted::{ScriptedVm, Step};
use rvvmm::hypervisor::{MpState, RawExit};
use rvvmm::{VmConfig, Vmm};
use serde_json::Value;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvvmm-api-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A VM whose hart 0 makes MMIO exits forever and whose hart 1 idles, served on an API socket
/// in a thread; returns the socket and the VMM's exit status when it ends.
/// A 2-vCPU VM with the test device, 16 MiB and a one-instruction kernel, served on
/// `dir/api.sock` (returned with the VMM).
fn served_vmm(dir: &Path) -> (PathBuf, Vmm) {
    let kernel = dir.join("guest.bin");
    std::fs::write(&kernel, [0x73, 0x00, 0x50, 0x10]).unwrap();
    let socket = dir.join("api.sock");
    let config = VmConfig {
        kernel,
        memory: Some(16 << 20),
        cpus: Some(2),
        testdev: true,
        ..Default::default()
    };
    let vmm = Vmm::new(config, std::sync::Arc::new(BufferConsole::default()))
        .unwrap()
        .with_api(ApiServer::bind(&socket).unwrap())
        .unwrap();
    (socket, vmm)
}

fn start(tag: &str) -> (PathBuf, mpsc::Receiver<Result<i32, String>>) {
    let (socket, mut vmm) = served_vmm(&temp_dir(tag));
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let status = vmm.run(|| {
            Ok(ScriptedVm::new()
                .script(
                    0,
                    MpState::Runnable,
                    vec![Step::Busy(RawExit::MmioWrite {
                        addr: TESTDEV_BASE,
                        len: 4,
                        data: [1, 0, 0, 0, 0, 0, 0, 0],
                    })],
                )
                .script(1, MpState::Runnable, vec![Step::Idle]))
        });
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    (socket, finished)
}

fn get(socket: &Path, endpoint: &str) -> Answer {
    call(socket, "GET", endpoint, None).unwrap()
}

fn put(socket: &Path, endpoint: &str) -> Answer {
    call(socket, "PUT", endpoint, None).unwrap()
}

fn body(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {:?}", answer.body))
}

fn state(socket: &Path) -> String {
    body(&get(socket, "vm.info"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn mmio_writes(socket: &Path) -> u64 {
    body(&get(socket, "vm.counters"))["_vcpu0"]["exits_mmio_write"]
        .as_u64()
        .unwrap()
}

/// Sends raw bytes and reads the whole answer.
fn raw(socket: &Path, bytes: &[u8]) -> Answer {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and stop reading before all is sent (a refused body).
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_answer(&out).unwrap()
}

#[test]
fn every_endpoint_and_every_refusal() {
    let (socket, finished) = start("all");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is the owner's only");

    let ping = get(&socket, "vmm.ping");
    assert_eq!(ping.status, 200);
    assert_eq!(body(&ping)["pid"], std::process::id());
    let info = body(&get(&socket, "vm.info"));
    assert_eq!(info["state"], "Running");
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 2);
    assert_eq!(info["memory_actual_size"], 16u64 << 20);

    // Refused by the state: resume while running, pause twice.
    let resume = put(&socket, "vm.resume");
    assert_eq!(resume.status, 405, "{resume:?}");
    assert!(resume.body.contains("the VM is running: cannot resume"));
    assert_eq!(put(&socket, "vm.pause").status, 204);
    assert_eq!(state(&socket), "Paused");
    assert_eq!(put(&socket, "vm.pause").status, 405);
    // Paused: hart 0 makes no exits.
    let before = mmio_writes(&socket);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(mmio_writes(&socket), before, "exits while paused");
    assert_eq!(put(&socket, "vm.resume").status, 204);
    assert_eq!(state(&socket), "Running");
    let mut after = before;
    // Generous: the lab runs these tests in a nested guest under QEMU's TCG.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        after = mmio_writes(&socket);
        if after > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(after > before, "no exits after resume");
    let counters = body(&get(&socket, "vm.counters"));
    assert!(counters["_serial"]["tx_bytes"].is_u64());
    assert!(counters["_vcpu1"]["exits_interrupted"].as_u64().unwrap() > 0);

    // Bad requests: the VM runs on.
    assert_eq!(get(&socket, "vm.nope").status, 404);
    assert_eq!(get(&socket, "vm.pause").status, 405);
    assert_eq!(put(&socket, "vm.coredump").status, 501);
    assert_eq!(
        call(&socket, "PUT", "vm.pause", Some("{not json"))
            .unwrap()
            .status,
        400
    );
    assert_eq!(raw(&socket, b"\x00\x01garbage\r\n\r\n").status, 400);
    let big = format!(
        "PUT /api/v1/vm.pause HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    let refused = raw(&socket, big.as_bytes());
    assert_eq!(refused.status, 413, "{refused:?}");
    assert_eq!(
        raw(
            &socket,
            b"PUT /api/v1/vm.pause HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .status,
        411
    );
    // A client that leaves mid-request costs nothing.
    {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(b"PUT /api/v1/vm.pa").unwrap();
    }
    let power = put(&socket, "vm.power-button");
    assert_eq!(power.status, 400);
    assert!(power.body.contains("no power button"));
    assert_eq!(state(&socket), "Running");

    // vm.shutdown stops the VM, the process stays; then every VM action is refused but boot.
    assert_eq!(put(&socket, "vm.shutdown").status, 204);
    assert_eq!(state(&socket), "Shutdown");
    for endpoint in ["vm.pause", "vm.resume", "vm.shutdown", "vm.reboot"] {
        assert_eq!(put(&socket, endpoint).status, 405, "{endpoint}");
    }
    assert_eq!(get(&socket, "vm.counters").status, 405);
    assert_eq!(put(&socket, "vm.boot").status, 204);
    assert_eq!(state(&socket), "Running");
    assert_eq!(put(&socket, "vm.boot").status, 405);
    assert_eq!(put(&socket, "vm.reboot").status, 204);
    assert_eq!(state(&socket), "Running");
    // Paused, then the VMM shut down: rvvmm ends with status 0 and removes its socket.
    assert_eq!(put(&socket, "vm.pause").status, 204);
    assert_eq!(put(&socket, "vmm.shutdown").status, 204);
    let status = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("rvvmm did not end after vmm.shutdown");
    assert_eq!(status, Ok(0));
    assert!(!socket.exists(), "the socket file stays behind");
}

#[test]
fn the_client_reports_the_servers_error() {
    let (socket, finished) = start("client");
    assert!(remote(&socket, "ping", None).unwrap().contains("\"pid\""));
    let err = remote(&socket, "resume", None).unwrap_err().to_string();
    assert_eq!(err, "vm.resume: HTTP 405: the VM is running: cannot resume");
    assert!(remote(&socket, "shutdown-vmm", None).unwrap().is_empty());
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(20)).unwrap(),
        Ok(0)
    );
    let err = remote(&socket, "ping", None).unwrap_err().to_string();
    assert!(err.starts_with("cannot reach the API at"), "{err}");
}

#[test]
fn a_socket_path_is_taken_only_when_nobody_listens() {
    let dir = temp_dir("stale");
    let path = dir.join("api.sock");
    let _ = std::fs::remove_file(&path);
    let live = UnixListener::bind(&path).unwrap();
    assert!(matches!(ApiServer::bind(&path), Err(ApiError::InUse(_))));
    drop(live); // the file stays: a stale socket
    assert!(path.exists());
    let server = ApiServer::bind(&path).expect("a stale socket is taken over");
    drop(server);
    assert!(!path.exists(), "an unserved socket is removed");
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    let err = ApiServer::bind(&file).err().unwrap();
    assert!(matches!(err, ApiError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "left alone");
}

/// rvvmm started with only an API socket: no VM until `vm.create`, which takes a Cloud
/// Hypervisor VmConfig, refuses a bad one with the CLI's message, and `vm.boot` starts it;
/// `vm.delete` forgets it.
#[test]
fn create_boot_shutdown_delete_over_the_api() {
    let dir = temp_dir("create");
    let kernel = dir.join("guest.bin");
    std::fs::write(&kernel, [0x73, 0x00, 0x50, 0x10]).unwrap();
    let socket = dir.join("api.sock");
    let mut vmm = Vmm::without_vm(std::sync::Arc::new(BufferConsole::default()))
        .with_api(ApiServer::bind(&socket).unwrap())
        .unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let status =
            vmm.run(|| Ok(ScriptedVm::new().script(0, MpState::Runnable, vec![Step::Idle])));
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    let send = |endpoint: &str, body: &str| call(&socket, "PUT", endpoint, Some(body)).unwrap();

    let info = get(&socket, "vm.info");
    assert_eq!(info.status, 404, "{info:?}");
    assert!(info.body.contains("no VM is created"), "{info:?}");
    assert_eq!(put(&socket, "vm.boot").status, 404);

    // Refused, with the field named, and nothing created.
    for (bad, needle) in [
        ("{\"payload\": {\"kernel\": 7}}", "payload.kernel: invalid type"),
        ("{\"payload\": {}, \"pmem\": [{\"file\": \"x\"}]}", "pmem:"),
        ("{\"payload\": {\"kernel\": \"/nonexistent/Image\"}}", "payload.kernel: /nonexistent/Image: No such file"),
        ("{\"payload\": {\"kernel\": \"k\"}, \"memory\": {\"size\": 4096}}", "memory.size: 4096 bytes is less than"),
        ("{\"payload\": {\"kernel\": \"k\"}, \"cpus\": {\"boot_vcpus\": 1, \"topology\": {\"packages\": 2}}}", "cpus.topology"),
    ] {
        let answer = send("vm.create", bad);
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
        assert!(answer.body.contains(needle), "{needle:?} not in {answer:?}");
    }
    assert_eq!(get(&socket, "vm.info").status, 404);

    // What Kata sends carries Cloud Hypervisor's defaults: accepted.
    let config = format!(
        "{{\"cpus\": {{\"boot_vcpus\": 1, \"max_vcpus\": 1}}, \"memory\": {{\"size\": 16777216, \"shared\": false}}, \
         \"payload\": {{\"kernel\": \"{}\", \"cmdline\": \"console=hvc0\"}}, \"iommu\": false, \"pvpanic\": false, \
         \"serial\": {{\"mode\": \"Tty\"}}, \"console\": {{\"mode\": \"Off\", \"iommu\": false}}}}",
        kernel.display()
    );
    assert_eq!(send("vm.create", &config).status, 204);
    let info = body(&get(&socket, "vm.info"));
    assert_eq!(info["state"], "Created");
    assert_eq!(info["config"]["payload"]["cmdline"], "console=hvc0");
    assert_eq!(info["config"]["memory"]["size"], 16u64 << 20);
    let again = send("vm.create", &config);
    assert_eq!(again.status, 405, "{again:?}");
    assert_eq!(put(&socket, "vm.counters").status, 405);

    assert_eq!(put(&socket, "vm.boot").status, 204);
    assert_eq!(state(&socket), "Running");
    assert_eq!(put(&socket, "vm.shutdown").status, 204);
    assert_eq!(state(&socket), "Shutdown");
    assert_eq!(put(&socket, "vm.delete").status, 204);
    assert_eq!(get(&socket, "vm.info").status, 404);
    // And a new one after it.
    assert_eq!(send("vm.create", &config).status, 204);
    assert_eq!(put(&socket, "vm.boot").status, 204);
    assert_eq!(state(&socket), "Running");

    assert_eq!(put(&socket, "vmm.shutdown").status, 204);
    let status = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("rvvmm did not end after vmm.shutdown");
    assert_eq!(status, Ok(0));
}

/// Snapshot and restore through the API and `Vmm::from_snapshot`, on scripted vCPUs: the
/// restored vCPUs get every register back and the same mp_state, the VM comes back paused, and
/// refusals (not paused, bad URL, a VM already there, a damaged file) name what is wrong.
#[test]
fn snapshot_then_restore_gives_the_registers_back() {
    use rvvmm::arch::riscv64::regs;
    let dir = temp_dir("snap");
    let snap = dir.join("snapshot");
    let (socket, mut vmm) = served_vmm(&dir);
    let vm = ScriptedVm::new()
        .with_reg(regs::a(5), 0x1234_5678)
        .script(0, MpState::Runnable, vec![Step::Idle])
        .script(1, MpState::Stopped, vec![Step::Idle]);
    let first = vm.record_handle(0);
    let mut vm = Some(vm);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let status = vmm.run(|| Ok(vm.take().expect("one boot")));
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    let send = |endpoint: &str, body: &str| call(&socket, "PUT", endpoint, Some(body)).unwrap();
    let url = format!("{{\"destination_url\": \"file://{}\"}}", snap.display());
    let refused = send("vm.snapshot", &url);
    assert_eq!(refused.status, 405, "{refused:?}");
    assert!(refused.body.contains("must be paused"), "{refused:?}");
    assert_eq!(put(&socket, "vm.pause").status, 204);
    let bad = send("vm.snapshot", "{\"destination_url\": \"/no/scheme\"}");
    assert_eq!(bad.status, 400, "{bad:?}");
    let taken = send("vm.snapshot", &url);
    assert_eq!(taken.status, 204, "{taken:?}");
    assert_eq!(state(&socket), "Paused", "a snapshot leaves the VM paused");
    let again = send(
        "vm.restore",
        &format!("{{\"source_url\": \"file://{}\"}}", snap.display()),
    );
    assert_eq!(again.status, 405, "a VM is there: {again:?}");
    assert_eq!(put(&socket, "vmm.shutdown").status, 204);
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(30)).unwrap(),
        Ok(0)
    );
    let saved_regs = first.lock().unwrap().regs.clone();
    assert_eq!(saved_regs.get(&regs::a(5)), Some(&0x1234_5678));

    // A fresh VMM from the snapshot: paused, every register back.
    let vm = ScriptedVm::new()
        .script(0, MpState::Runnable, vec![Step::Idle])
        .script(1, MpState::Runnable, vec![Step::Idle]);
    let restored = vm.record_handle(0);
    let mut vm = Some(vm);
    let socket2 = dir.join("api2.sock");
    let mut vmm = Vmm::from_snapshot(&snap, false, std::sync::Arc::new(BufferConsole::default()))
        .unwrap()
        .with_api(ApiServer::bind(&socket2).unwrap())
        .unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let status = vmm.run(|| Ok(vm.take().expect("one boot")));
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if socket2.exists() && call(&socket2, "GET", "vm.info", None).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&socket2), "Paused");
    for (id, value) in &saved_regs {
        assert_eq!(
            restored.lock().unwrap().regs.get(id),
            Some(value),
            "register {id:#x}"
        );
    }
    assert_eq!(put(&socket2, "vm.resume").status, 204);
    assert_eq!(state(&socket2), "Running");
    assert_eq!(put(&socket2, "vmm.shutdown").status, 204);
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(30)).unwrap(),
        Ok(0)
    );

    // A flipped byte in the state file: refused before anything is built, naming the section.
    let state_file = snap.join("state.snap");
    let mut bytes = std::fs::read(&state_file).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x20;
    std::fs::write(&state_file, &bytes).unwrap();
    let e = Vmm::from_snapshot(&snap, false, std::sync::Arc::new(BufferConsole::default()))
        .err()
        .expect("a damaged snapshot is refused")
        .to_string();
    assert!(e.contains("checksum does not match"), "{e}");
}
