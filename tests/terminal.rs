//! The terminal rvvmm puts in raw mode, on a pseudo-terminal: given back while a SIGTSTP from
//! outside holds rvvmm stopped, raw again once it continues, and restored when SIGTERM ends it
//! (under the default seccomp filters, which the handlers' calls must pass).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn canonical(fd: &OwnedFd) -> bool {
    // SAFETY: a zeroed termios is valid storage for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal; `t` is valid storage.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag & libc::ICANON != 0
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigtstp_gives_the_terminal_back_and_sigcont_takes_it_again() {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors; the name and settings pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned here from now on.
    let (_master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    assert!(canonical(&slave));
    let dir = std::env::temp_dir().join(format!("rvvmm-tty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");
    // With only --api-socket, rvvmm enters raw mode and waits for vm.create: no KVM needed.
    // riscv64 tests under qemu-user (no isa line in /proc/cpuinfo): its linux-user refuses
    // seccomp filters, so rvvmm runs without them there.
    let qemu_user = common::riscv64_under_emulation();
    // rvvmm in a process group of its own, whose parent (this test) is in another group of
    // the same session: a group that is not orphaned, so SIGTSTP's default action (stop) is
    // carried out. In an orphaned group (a CI job whose launcher has exited) the kernel
    // discards it; rvvmm then gives the terminal back and takes it again at once.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rvvmm"))
        .process_group(0)
        .arg("--api-socket")
        .arg(&socket)
        .args(if qemu_user {
            &["--seccomp", "false"][..]
        } else {
            &[]
        })
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    wait_for("raw mode", || !canonical(&slave));

    // SAFETY: signals a child of this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTSTP) }, 0);
    let mut status = 0;
    wait_for("rvvmm stopped", || {
        // SAFETY: polls this process's own child; `status` is valid storage.
        unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED | libc::WNOHANG) == pid }
    });
    assert!(libc::WIFSTOPPED(status), "status {status:#x}");
    assert!(canonical(&slave), "stopped rvvmm left the terminal raw");

    // SAFETY: signals a child of this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_for("raw mode after SIGCONT", || !canonical(&slave));

    // SAFETY: signals a child of this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        canonical(&slave),
        "the terminal was not restored at the end"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
