//! rvvmm's seccomp filters on this host's kernel: a filtered thread that makes a call outside
//! its list is stopped with one line naming the thread and the call, the work its list is for
//! still runs, `log` lets the call through, and the main thread's list lets it start a filtered
//! thread. Each case runs in a child process (this test executable run again for that one
//! test), since a filter cannot be taken off and a trip ends the process.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use rvvmm::seccomp::{self, SeccompMode, ThreadKind};

const CHILD: &str = "RVVMM_SECCOMP_CHILD";
/// A child's status when the kernel refused the filter.
const NO_SECCOMP: i32 = 77;

/// In the parent: runs `test` again in a child with [`CHILD`] set and returns its output, or
/// `None` where seccomp cannot be had (riscv64 tests under qemu-user, whose linux-user refuses
/// filters). In the child: `None` too, and the caller runs the case.
fn child(test: &str) -> Option<Output> {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        return None;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap();
    if out.status.code() == Some(NO_SECCOMP) {
        assert!(
            common::riscv64_under_emulation(),
            "the kernel refused a seccomp filter: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("skipped: no seccomp under qemu-user");
        return None;
    }
    Some(out)
}

/// The child's side: filters on for this process, `kind`'s on this thread.
fn filtered(mode: SeccompMode, kind: ThreadKind) {
    seccomp::enable(mode).unwrap();
    if let Err(e) = seccomp::apply(kind) {
        eprintln!("{e}");
        std::process::exit(NO_SECCOMP);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a vCPU thread does besides KVM: allocate, lock, wait with a time-out, log, write.
fn vcpu_work() {
    let big = vec![7u8; 16 << 20];
    let pair = std::sync::Mutex::new(big.iter().map(|&b| u64::from(b)).sum::<u64>());
    let cv = std::sync::Condvar::new();
    let guard = pair.lock().unwrap();
    let (guard, _) = cv
        .wait_timeout(guard, std::time::Duration::from_millis(5))
        .unwrap();
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1));
    eprintln!(
        "work done: sum {} in {:?}",
        *guard,
        started.elapsed() > std::time::Duration::ZERO
    );
}

#[test]
fn a_call_outside_the_list_stops_rvvmm_with_a_line_naming_it() {
    let Some(out) = child("a_call_outside_the_list_stops_rvvmm_with_a_line_naming_it") else {
        if std::env::var(CHILD).is_ok() {
            filtered(SeccompMode::Enforce, ThreadKind::Vcpu);
            vcpu_work();
            seccomp::trip();
            eprintln!("still running after the trip");
            std::process::exit(0);
        }
        return;
    };
    let text = text(&out);
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{text}");
    assert!(text.contains("work done: sum 117440512 in true"), "{text}");
    let line = format!(
        "rvvmm: seccomp: the vcpu thread made system call {}, which its filter does not allow",
        seccomp::FORBIDDEN_FOR_TESTS
    );
    assert!(text.contains(&line), "{text}");
    assert!(!text.contains("still running"), "{text}");
}

#[test]
fn log_mode_lets_the_call_through() {
    let Some(out) = child("log_mode_lets_the_call_through") else {
        if std::env::var(CHILD).is_ok() {
            filtered(SeccompMode::Log, ThreadKind::Vcpu);
            seccomp::trip();
            eprintln!("still running after the trip");
            std::process::exit(0);
        }
        return;
    };
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("still running after the trip"), "{text}");
}

#[test]
fn the_main_threads_list_starts_filtered_threads() {
    let Some(out) = child("the_main_threads_list_starts_filtered_threads") else {
        if std::env::var(CHILD).is_ok() {
            filtered(SeccompMode::Enforce, ThreadKind::Main);
            for kind in [ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Stdin] {
                std::thread::Builder::new()
                    .name(format!("{kind:?}"))
                    .spawn(move || {
                        seccomp::apply(kind).unwrap();
                        vcpu_work();
                    })
                    .unwrap()
                    .join()
                    .unwrap();
            }
            // The main thread's own work: files (a snapshot's), an eventfd and an epoll.
            let dir = std::env::temp_dir().join(format!("rvvmm-seccomp-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("a"), b"x").unwrap();
            std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
            let _ = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
            let _ = vmm_sys_util::epoll::Epoll::new().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            eprintln!("main thread done");
            std::process::exit(0);
        }
        return;
    };
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("work done: sum 117440512").count(),
        3,
        "{text}"
    );
    assert!(text.contains("main thread done"), "{text}");
}

/// ioctl(-1, cmd): EBADF if the filters let it through (a trapped one ends the process).
fn ioctl_errno(cmd: u64) -> i32 {
    // SAFETY: fd -1 is never open, so the kernel fails the call before reading any argument.
    let rc = unsafe { libc::syscall(libc::SYS_ioctl, -1, cmd, 0) };
    assert_eq!(rc, -1);
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

#[test]
fn a_vcpu_thread_runs_its_ioctls_and_no_other_kvm_ioctl() {
    let Some(out) = child("a_vcpu_thread_runs_its_ioctls_and_no_other_kvm_ioctl") else {
        if std::env::var(CHILD).is_ok() {
            // As in rvvmm: the main thread's filter, then the vCPU thread's own on top.
            filtered(SeccompMode::Enforce, ThreadKind::Main);
            std::thread::spawn(|| {
                seccomp::apply(ThreadKind::Vcpu).unwrap();
                // KVM_RUN, KVM_IRQ_LINE, KVM_INTERRUPT (the fast path), KVM_SET_ONE_REG (the
                // full list).
                for cmd in [0xae80, 0x4008_ae61, 0x4004_ae86, 0x4010_aeac] {
                    eprintln!("ioctl {cmd:#x}: errno {}", ioctl_errno(cmd));
                }
                // KVM_CREATE_VM: a KVM ioctl the main thread may issue, a vCPU thread not.
                ioctl_errno(0xae01);
                eprintln!("still running after KVM_CREATE_VM");
            })
            .join()
            .unwrap();
            std::process::exit(0);
        }
        return;
    };
    let text = text(&out);
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{text}");
    for cmd in ["0xae80", "0x4008ae61", "0x4004ae86", "0x4010aeac"] {
        assert!(
            text.contains(&format!("ioctl {cmd}: errno {}", libc::EBADF)),
            "{text}"
        );
    }
    let line = format!(
        "the vcpu thread made system call {}, which its filter does not allow",
        libc::SYS_ioctl
    );
    assert!(text.contains(&line), "{text}");
    assert!(!text.contains("still running"), "{text}");
}

/// The device thread's vsock work, under the main thread's filter and its own (filters
/// stack): accept host connections, connect to a host listener (a Unix socket; any other
/// family is refused), read, write, shut down; the main thread binds the socket (`vm.create`
/// does it under the filter).
#[test]
fn the_device_thread_serves_unix_sockets_and_no_other_family() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let Some(out) = child("the_device_thread_serves_unix_sockets_and_no_other_family") else {
        if std::env::var(CHILD).is_ok() {
            let path = std::env::temp_dir().join(format!("rvvmm-seccomp-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            filtered(SeccompMode::Enforce, ThreadKind::Main);
            let listener = UnixListener::bind(&path).unwrap();
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                seccomp::apply(ThreadKind::EventLoop).unwrap();
                let mut client = UnixStream::connect(&path).unwrap();
                let (mut served, _) = listener.accept().unwrap();
                served.set_nonblocking(true).unwrap();
                client.write_all(b"ping").unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut buf = [0u8; 4];
                served.read_exact(&mut buf).unwrap();
                eprintln!("unix work done: {}", String::from_utf8_lossy(&buf));
                let _ = std::fs::remove_file(&path);
                // SAFETY: socket takes no pointers; AF_INET is outside the list.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                eprintln!("still running after an AF_INET socket");
                std::process::exit(0);
            })
            .join()
            .unwrap();
        }
        return;
    };
    let text = text(&out);
    assert!(text.contains("unix work done: ping"), "{text}");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{text}");
    assert!(
        text.contains(&format!("system call {}", libc::SYS_socket)),
        "{text}"
    );
}
