//! A console in memory, for tests.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{Console, ConsoleEvent, Listener};

/// A console in memory, for tests: output is collected, input is a queue.
#[derive(Default)]
pub struct BufferConsole {
    /// Everything written.
    pub output: Mutex<Vec<u8>>,
    /// Bytes waiting to be read.
    pub input: Mutex<VecDeque<u8>>,
    listener: Mutex<Option<Listener>>,
}

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
