//! The signals that stop rvvmm cleanly (SIGTERM, SIGINT, SIGHUP): blocked in every thread and
//! read from a signalfd by the control loop, which stops the VM as for any other request (the
//! terminal is restored, a disk's last writes are done) and ends rvvmm with status 0, as QEMU
//! does on SIGTERM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The stop signals.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A signalfd for [`STOP_SIGNALS`].
#[derive(Debug)]
pub struct StopSignals {
    fd: OwnedFd,
}

impl StopSignals {
    /// Blocks the stop signals in this thread (and so in every thread it starts later: call it
    /// before any) and opens a signalfd that reads them.
    pub fn block() -> std::io::Result<Self> {
        // SAFETY: a zeroed sigset_t is valid storage; sigemptyset/sigaddset initialise it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in STOP_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not wanted (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignals { fd })
    }

    /// The fd to watch.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The signal waiting, if any.
    pub fn read(&self) -> Option<libc::c_int> {
        // SAFETY: a zeroed signalfd_siginfo is valid storage for the read below.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`, which has that size.
        let n = unsafe {
            libc::read(
                self.fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (n == size as isize).then_some(info.ssi_signo as libc::c_int)
    }
}

/// A stop signal's name.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
