//! The guest console's output to stdout, never holding a vCPU for long: a reader that stops
//! reading (a pipe nobody drains, a stopped terminal) must not hang the guest's next console
//! write, nor a power-off or Ctrl-A x behind it.
//!
//! Writes go to stdout through a non-blocking descriptor of their own (stdout reopened through
//! /proc/self/fd/1, so stdin, which may share stdout's terminal, keeps blocking reads). A full
//! stdout is waited on, as long as it takes at least some output every [`STALL`]; after a
//! whole [`STALL`] with none, what the guest writes is dropped (and counted) until stdout takes
//! output again, with one warning when it starts and one when it ends.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// How long stdout may take no output at all before console output is dropped.
pub const STALL: Duration = Duration::from_secs(2);

/// stdout as the console writes it.
pub struct StdoutSink {
    fd: RawFd,
    /// The descriptor opened here, if stdout was reopened (closed on drop).
    _own: Option<File>,
    stall: Duration,
    /// While stdout takes nothing: the bytes dropped so far.
    dropped: Option<u64>,
}

impl StdoutSink {
    /// The process's stdout: a pipe, FIFO or terminal reopened non-blocking; a regular file
    /// (or a socket) as it is (a file does not stall; a reopened file would not share
    /// stdout's offset with stderr).
    pub fn stdout() -> Self {
        // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid stat buffer; fstat only writes it.
        let ok = unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) } == 0;
        let kind = st.st_mode & libc::S_IFMT;
        let own = (ok && (kind == libc::S_IFIFO || kind == libc::S_IFCHR))
            .then(|| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open("/proc/self/fd/1")
                    .ok()
            })
            .flatten();
        let fd = own.as_ref().map_or(libc::STDOUT_FILENO, |f| f.as_raw_fd());
        Self::on(fd, own, STALL)
    }

    /// A sink on `fd`, dropping output after `stall` without progress.
    fn on(fd: RawFd, own: Option<File>, stall: Duration) -> Self {
        StdoutSink {
            fd,
            _own: own,
            stall,
            dropped: None,
        }
    }

    /// Writes `bytes`, waiting while stdout makes progress; drops them once it has taken
    /// nothing for the stall time (then at once, until it takes output again).
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: the pointer and length describe `bytes`.
            let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
            if n > 0 {
                bytes = &bytes[n as usize..];
                if let Some(dropped) = self.dropped.take() {
                    log::warn!(
                        "stdout takes console output again; {dropped} bytes were dropped while it took none"
                    );
                }
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    let wait = if self.dropped.is_some() {
                        Duration::ZERO
                    } else {
                        self.stall
                    };
                    if !self.wait_writable(wait) {
                        self.drop_output(bytes.len());
                        return;
                    }
                }
                _ if n == 0 => return,
                _ => {
                    crate::guest_warn!("console output lost: {e}");
                    return;
                }
            }
        }
    }

    /// Whether stdout becomes writable within `wait`.
    fn wait_writable(&self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 {
                return rc > 0;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    fn drop_output(&mut self, len: usize) {
        match &mut self.dropped {
            Some(dropped) => *dropped += len as u64,
            None => {
                log::warn!(
                    "stdout has taken no console output for {} s: dropping it until it does",
                    self.stall.as_secs_f64()
                );
                self.dropped = Some(len as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Instant;

    #[test]
    fn a_stalled_reader_costs_one_stall_then_nothing_and_output_resumes() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        // SAFETY: both descriptors are new and owned here from now on.
        let (mut reader, writer) = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let mut sink = StdoutSink::on(writer.as_raw_fd(), Some(writer), Duration::from_millis(200));
        // Fill the pipe (64 KiB) and more: the reader takes nothing.
        let started = Instant::now();
        sink.write(&[b'x'; 100 * 1024]);
        let first = started.elapsed();
        assert!(first >= Duration::from_millis(200), "{first:?}");
        assert!(first < Duration::from_secs(15), "{first:?}");
        assert!(sink.dropped.unwrap() > 0);
        // While stalled, a write costs no wait.
        let started = Instant::now();
        for _ in 0..100 {
            sink.write(b"more");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "100 writes while stalled must not wait 200 ms each"
        );
        // The reader drains: output flows again.
        let mut buf = vec![0u8; 128 * 1024];
        let got = reader.read(&mut buf).unwrap();
        assert!(got > 0);
        sink.write(b"again");
        assert!(sink.dropped.is_none());
    }
}
