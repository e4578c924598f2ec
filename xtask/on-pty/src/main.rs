//! `on-pty CMD [ARGS...]`: runs CMD in a new session with a fresh pseudo-terminal as its
//! controlling terminal, stdin, stdout and stderr; copies this process's stdin to the
//! terminal and the terminal's output to this process's stdout; exits with CMD's status.
//!
//! The bench's U-Boot comparison types at U-Boot's prompt under rvvmm and under kvmtool from a
//! FIFO. kvmtool reads its console only when stdin is a tty (its `term_init` starts no input
//! thread otherwise), and the L1 busybox has no `script`; this is that much of `script`.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

fn fail(what: &str) -> ExitCode {
    eprintln!("on-pty: {what}: {}", io::Error::last_os_error());
    ExitCode::from(125)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: on-pty CMD [ARGS...]");
        return ExitCode::from(2);
    };
    // SAFETY: posix_openpt takes flags only and returns a new fd or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    // SAFETY: grantpt and unlockpt act on the fd just opened.
    if master < 0 || unsafe { libc::grantpt(master) } != 0 || unsafe { libc::unlockpt(master) } != 0
    {
        return fail("cannot open a pseudo-terminal");
    }
    // SAFETY: master is an fd this process owns and nothing else wraps.
    let mut master = unsafe { File::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer and its length are this array's.
    if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
        return fail("ptsname");
    }
    // SAFETY: ptsname_r wrote a NUL-terminated name into the buffer.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let open = || OpenOptions::new().read(true).write(true).open(&name);
    let (Ok(tty_in), Ok(tty_out), Ok(tty_err)) = (open(), open(), open()) else {
        return fail("cannot open the terminal's slave side");
    };
    let mut command = Command::new(cmd);
    command
        .args(rest)
        .stdin(Stdio::from(tty_in))
        .stdout(Stdio::from(tty_out))
        .stderr(Stdio::from(tty_err));
    // SAFETY: setsid and ioctl are async-signal-safe; between fork and exec they make the new
    // process a session leader whose controlling terminal is its stdin, the pty.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("on-pty: cannot run {cmd}: {e}");
            return ExitCode::from(127);
        }
    };
    // The Command holds this process's slave fds: closed, once the child (and any process it
    // left holding the terminal) is gone, reading the master says EIO.
    drop(command);
    let Ok(mut to_child) = master.try_clone() else {
        return fail("dup");
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = io::stdin().lock();
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if to_child.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = master.read(&mut buf) {
        if stdout
            .write_all(&buf[..n])
            .and_then(|_| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    match child.wait() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(128) as u8),
        Err(e) => {
            eprintln!("on-pty: wait: {e}");
            ExitCode::from(125)
        }
    }
}
