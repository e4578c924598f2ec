//! The host side of the guest console, shared by SBI DBCN and the UART.
//!
//! Output is written synchronously (blocking until the host takes it: nothing is dropped when the
//! guest writes faster than stdout drains). Input is a bounded queue filled on the event loop
//! (or by a thread, for stdin epoll cannot watch); consumers pull from it without blocking, and
//! a listener is told when bytes arrive.

#[cfg(any(test, feature = "testing"))]
mod buffer;
pub mod output;
mod stdio;
pub mod terminal;

use std::sync::Arc;

#[cfg(any(test, feature = "testing"))]
pub use buffer::BufferConsole;

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
