//! The process's stdin and stdout as the guest console.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, Once};

use super::{Console, ConsoleEvent, Listener};

/// Input waiting beyond this many bytes makes the reader thread wait for the guest to take
/// some: input is delayed, never dropped, and memory stays bounded.
const INPUT_LIMIT: usize = 64 * 1024;
/// Ctrl-A: the escape key. Ctrl-A x quits; Ctrl-A Ctrl-A sends one Ctrl-A.
const ESCAPE: u8 = 0x01;

/// stdin and stdout.
pub struct StdioConsole {
    input: Mutex<VecDeque<u8>>,
    drained: Condvar,
    listener: Mutex<Option<Listener>>,
    started: Once,
    escape: bool,
}

impl StdioConsole {
    /// A console on stdin/stdout. With `escape`, Ctrl-A x is the quit sequence (for an
    /// interactive terminal).
    pub fn new(escape: bool) -> Arc<Self> {
        Arc::new(StdioConsole {
            input: Mutex::new(VecDeque::new()),
            drained: Condvar::new(),
            listener: Mutex::new(None),
            started: Once::new(),
            escape,
        })
    }

    /// Starts the thread that reads stdin (once).
    pub fn start_input(self: &Arc<Self>) {
        let me = self.clone();
        self.started.call_once(move || {
            let spawned = std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || me.input_loop());
            if let Err(e) = spawned {
                log::warn!("cannot start the console input thread: {e}; guest input is off");
            }
        });
    }

    fn notify(&self, event: ConsoleEvent) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(l) = listener {
            l(event);
        }
    }

    fn input_loop(&self) {
        let mut buf = [0u8; 1024];
        let mut after_escape = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length; a blocking read of stdin.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                log::debug!("console input ended");
                return;
            }
            let mut bytes = Vec::with_capacity(n as usize);
            let quit = if self.escape {
                filter_escape(&mut after_escape, &buf[..n as usize], &mut bytes)
            } else {
                bytes.extend_from_slice(&buf[..n as usize]);
                false
            };
            self.push(&bytes);
            self.notify(ConsoleEvent::Input);
            if quit {
                self.notify(ConsoleEvent::Quit);
                return;
            }
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in bytes.chunks(INPUT_LIMIT / 2) {
            while input.len() + chunk.len() > INPUT_LIMIT {
                drop(input);
                self.notify(ConsoleEvent::Input);
                input = self.input.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = self
                    .drained
                    .wait_timeout(input, std::time::Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner());
                input = guard;
            }
            input.extend(chunk);
        }
    }
}

/// Copies `input` to `out`, interpreting the escape key: Ctrl-A x quits (returns true; the
/// rest of `input` is dropped), Ctrl-A Ctrl-A is one Ctrl-A, Ctrl-A and anything else pass
/// through. `after_escape` carries a trailing Ctrl-A over to the next call.
pub fn filter_escape(after_escape: &mut bool, input: &[u8], out: &mut Vec<u8>) -> bool {
    for &b in input {
        if *after_escape {
            *after_escape = false;
            match b {
                b'x' | b'X' => return true,
                ESCAPE => out.push(ESCAPE),
                _ => out.extend([ESCAPE, b]),
            }
        } else if b == ESCAPE {
            *after_escape = true;
        } else {
            out.push(b);
        }
    }
    false
}

impl Console for StdioConsole {
    fn write(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
            log::warn!("console output lost: {e}");
        }
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let n = buf.len().min(input.len());
        for (dst, src) in buf.iter_mut().zip(input.drain(..n)) {
            *dst = src;
        }
        if n > 0 {
            self.drained.notify_all();
        }
        n
    }

    fn set_listener(&self, listener: Option<Listener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = listener;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut state = false;
        let mut out = Vec::new();
        for chunk in chunks {
            if filter_escape(&mut state, chunk, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn escape_sequences() {
        assert_eq!(run(&[b"ls\r"]), (b"ls\r".to_vec(), false));
        assert_eq!(run(&[b"ab\x01xcd"]), (b"ab".to_vec(), true));
        assert_eq!(
            run(&[b"a\x01", b"x"]),
            (b"a".to_vec(), true),
            "split across reads"
        );
        assert_eq!(run(&[b"\x01\x01b"]), (b"\x01b".to_vec(), false));
        assert_eq!(run(&[b"\x01c"]), (b"\x01c".to_vec(), false));
    }

    #[test]
    fn input_is_queued_and_read_without_blocking() {
        let console = StdioConsole::new(false);
        let mut buf = [0u8; 8];
        assert_eq!(console.read(&mut buf), 0);
        console.push(b"hello");
        assert_eq!(console.read(&mut buf[..3]), 3);
        assert_eq!(&buf[..3], b"hel");
        assert_eq!(console.read(&mut buf), 2);
    }
}
