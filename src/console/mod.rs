//! The host side of the guest console, shared by SBI DBCN and the UART.
//!
//! Output is written synchronously (blocking until the host takes it: nothing is dropped when the
//! guest writes faster than stdout drains). Input is a bounded queue filled on the event loop
//! (or by a thread, for stdin epoll cannot watch); consumers pull from it without blocking, and
//! a listener is told when bytes arrive.

mod stdio;
pub mod terminal;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub use stdio::StdioConsole;

/// What the console tells its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Input bytes are waiting.
    Input,
    /// The user typed the escape sequence to quit (Ctrl-A x).
    Quit,
}

/// Called where the console reads its input (the event loop, or the input thread).
pub type Listener = Arc<dyn Fn(ConsoleEvent) + Send + Sync>;

/// A byte sink and a non-blocking byte source shared by every vCPU.
pub trait Console: Send + Sync {
    /// Writes all of `bytes` to the host.
    fn write(&self, bytes: &[u8]);
    /// Takes what input is waiting, up to `buf.len()` bytes, without blocking; 0 when none is.
    fn read(&self, buf: &mut [u8]) -> usize;
    /// Sets (or clears) who is told about input and the quit sequence.
    fn set_listener(&self, listener: Option<Listener>);
    /// The event-loop subscriber that reads this console's input, if it is read there; each
    /// boot's event loop takes one.
    fn input_subscriber(self: Arc<Self>) -> Option<crate::event_loop::Subscriber> {
        None
    }
}

/// A console in memory, for tests: output is collected, input is a queue.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct BufferConsole {
    /// Everything written.
    pub output: Mutex<Vec<u8>>,
    /// Bytes waiting to be read.
    pub input: Mutex<VecDeque<u8>>,
    listener: Mutex<Option<Listener>>,
}

#[cfg(any(test, feature = "testing"))]
impl BufferConsole {
    /// What was written, as text.
    pub fn output_string(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Queues input and tells the listener, as the stdin thread would.
    pub fn type_in(&self, bytes: &[u8]) {
        self.input.lock().unwrap().extend(bytes);
        let listener = self.listener.lock().unwrap().clone();
        if let Some(l) = listener {
            l(ConsoleEvent::Input);
        }
    }
}

#[cfg(any(test, feature = "testing"))]
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

    fn set_listener(&self, listener: Option<Listener>) {
        *self.listener.lock().unwrap() = listener;
    }
}
