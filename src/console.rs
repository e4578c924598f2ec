//! The host side of the guest console: where DBCN (and later the UART) writes and reads.

use std::io::Write;
use std::sync::Mutex;

/// A byte sink and a non-blocking byte source shared by every vCPU.
pub trait Console: Send + Sync {
    /// Writes all of `bytes` to the host (blocking until they are taken: no output is dropped).
    fn write(&self, bytes: &[u8]);
    /// Reads what is waiting, up to `buf.len()` bytes, without blocking; 0 when nothing is.
    fn read(&self, buf: &mut [u8]) -> usize;
}

/// The process's stdin and stdout.
#[derive(Debug, Default)]
pub struct StdioConsole {
    // Serialises readers so two harts never split one pending line between them.
    read_lock: Mutex<()>,
}

impl Console for StdioConsole {
    fn write(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
            log::warn!("console output lost: {e}");
        }
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let _guard = self.read_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut pollfd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is a valid, initialised pollfd and we pass a count of 1; a zero
        // timeout makes poll return at once.
        let ready = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if ready <= 0 || pollfd.revents & libc::POLLIN == 0 {
            return 0;
        }
        // Not std's Stdin: its buffer could hold bytes that poll no longer reports.
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes. poll said stdin is readable,
        // so this read does not block (it returns 0 at end of file).
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        n.max(0) as usize
    }
}

/// A console in memory, for tests: output is collected, input is a queue.
#[derive(Debug, Default)]
pub struct BufferConsole {
    /// Everything written.
    pub output: Mutex<Vec<u8>>,
    /// Bytes waiting to be read.
    pub input: Mutex<std::collections::VecDeque<u8>>,
}

impl BufferConsole {
    /// What was written, as text.
    pub fn output_string(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

impl Console for BufferConsole {
    fn write(&self, bytes: &[u8]) {
        self.output.lock().unwrap().extend_from_slice(bytes);
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        let mut input = self.input.lock().unwrap();
        let n = buf.len().min(input.len());
        for (dst, src) in buf.iter_mut().zip(input.drain(..n)) {
            *dst = src;
        }
        n
    }
}
