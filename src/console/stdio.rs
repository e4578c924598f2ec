//! The process's stdin and stdout as the guest console.
//!
//! Input is read on the event loop: [`StdioConsole::input_subscriber`] is an event-manager
//! subscriber on fd 0 that reads it when it is readable, as vmm-reference reads its stdin.
//! stdin that epoll cannot watch (a regular file, /dev/null) is read by a thread instead.
//! Either way the bytes go into one bounded queue that the guest's devices drain.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::output::StdoutSink;
use super::{Console, ConsoleEvent, Listener};
use crate::event_loop::{set_watched, Subscriber};

/// Input waiting beyond this many bytes stops the reading of stdin until the guest takes
/// some: input is delayed, never dropped, and memory stays bounded.
const INPUT_LIMIT: usize = 64 * 1024;
/// Most bytes one read of stdin takes.
const READ_CHUNK: usize = 1024;
/// Ctrl-A: the escape key. Ctrl-A x quits; Ctrl-A Ctrl-A sends one Ctrl-A.
const ESCAPE: u8 = 0x01;

/// How stdin is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputMode {
    /// Not yet started.
    Off,
    /// By each boot's event loop.
    Subscriber,
    /// By a thread (stdin that epoll cannot watch).
    Thread,
    /// Ended: EOF, an error, or the quit sequence.
    Ended,
}

/// stdin and stdout.
pub struct StdioConsole {
    input: Mutex<VecDeque<u8>>,
    drained: Condvar,
    listener: Mutex<Option<Listener>>,
    started: Once,
    mode: Mutex<InputMode>,
    escape: bool,
    after_escape: Mutex<bool>,
    /// Set when the queue was full and stdin is no longer watched; the guest's next read
    /// signals `room`.
    stalled: AtomicBool,
    room: EventFd,
    /// The input fd: stdin (another fd in tests).
    fd: RawFd,
    /// Held while writing the output: stdout, and the `--serial-log` file if there is one.
    output: Mutex<(StdoutSink, Option<std::fs::File>)>,
    /// Whether the output goes to stdout (not with `--serial-log FILE,only`).
    to_stdout: bool,
}

impl StdioConsole {
    /// A console on stdin/stdout. With `escape`, Ctrl-A x is the quit sequence (for an
    /// interactive terminal).
    pub fn new(escape: bool) -> Arc<Self> {
        Self::with_input(libc::STDIN_FILENO, escape, None, true)
    }

    /// A console on stdin whose output also goes to `log` (`--serial-log`), or only there
    /// when `to_stdout` is false.
    pub fn with_log(escape: bool, log: std::fs::File, to_stdout: bool) -> Arc<Self> {
        Self::with_input(libc::STDIN_FILENO, escape, Some(log), to_stdout)
    }

    /// A console reading `fd` (which stays open as long as the console).
    fn with_input(
        fd: RawFd,
        escape: bool,
        log: Option<std::fs::File>,
        to_stdout: bool,
    ) -> Arc<Self> {
        Arc::new(StdioConsole {
            fd,
            output: Mutex::new((StdoutSink::stdout(), log)),
            to_stdout,
            input: Mutex::new(VecDeque::new()),
            drained: Condvar::new(),
            listener: Mutex::new(None),
            started: Once::new(),
            mode: Mutex::new(InputMode::Off),
            escape,
            after_escape: Mutex::new(false),
            stalled: AtomicBool::new(false),
            room: EventFd::new(EFD_NONBLOCK).expect("an eventfd for the console"),
        })
    }

    /// Starts reading stdin (once): on the event loop when epoll can watch it, else on a
    /// thread.
    pub fn start_input(self: &Arc<Self>) {
        let me = self.clone();
        self.started.call_once(move || {
            if is_dev_null(me.fd) {
                log::debug!("console input is /dev/null: none");
                *me.lock_mode() = InputMode::Ended;
                return;
            }
            if pollable(me.fd) {
                *me.lock_mode() = InputMode::Subscriber;
                return;
            }
            *me.lock_mode() = InputMode::Thread;
            let thread = me.clone();
            let spawned = std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || thread.input_loop());
            if let Err(e) = spawned {
                log::warn!("cannot start the console input thread: {e}; guest input is off");
            }
        });
    }

    fn lock_mode(&self) -> std::sync::MutexGuard<'_, InputMode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Reads stdin once (at most `max` bytes) and queues what it got. Returns false when
    /// input has ended (EOF, an error, the quit sequence).
    fn read_stdin(&self, max: usize) -> bool {
        let mut buf = [0u8; READ_CHUNK];
        let max = max.min(READ_CHUNK);
        let n = loop {
            // SAFETY: `buf` is valid for writes of `max` bytes.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), max) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n <= 0 {
            log::debug!("console input ended");
            *self.lock_mode() = InputMode::Ended;
            return false;
        }
        let mut bytes = Vec::with_capacity(n as usize);
        let quit = if self.escape {
            let mut after = self.after_escape.lock().unwrap_or_else(|e| e.into_inner());
            filter_escape(&mut after, &buf[..n as usize], &mut bytes)
        } else {
            bytes.extend_from_slice(&buf[..n as usize]);
            false
        };
        self.push(&bytes);
        self.notify(ConsoleEvent::Input);
        if quit {
            *self.lock_mode() = InputMode::Ended;
            self.notify(ConsoleEvent::Quit);
            return false;
        }
        true
    }

    fn room_left(&self) -> usize {
        let input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        INPUT_LIMIT.saturating_sub(input.len())
    }

    /// The thread of stdin that epoll cannot watch: blocking reads, waiting for room.
    fn input_loop(&self) {
        crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Stdin);
        loop {
            let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
            while input.len() >= INPUT_LIMIT {
                drop(input);
                self.notify(ConsoleEvent::Input);
                input = self.input.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = self
                    .drained
                    .wait_timeout(input, std::time::Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner());
                input = guard;
            }
            let room = INPUT_LIMIT - input.len();
            drop(input);
            if !self.read_stdin(room) {
                return;
            }
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        input.extend(bytes);
    }
}

/// Whether `fd` is /dev/null (character device 1:3), which never has input.
fn is_dev_null(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer; fstat only writes it.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

/// Whether epoll can watch `fd` (not a regular file, not /dev/null).
fn pollable(fd: RawFd) -> bool {
    // SAFETY: a new epoll fd, checked, and closed below.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return false;
    }
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both fds are open; `event` is a valid epoll_event.
    let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut event) };
    // SAFETY: `epfd` is ours and closed once.
    unsafe { libc::close(epfd) };
    rc == 0
}

/// stdin on the event loop: reads it when readable, stops watching it while the input queue
/// is full (until the guest's next read signals room) and when it ends.
struct StdinSubscriber {
    console: Arc<StdioConsole>,
    watching: bool,
}

/// Event data: stdin, and the room eventfd.
const STDIN_EVENT: u32 = 0;
const ROOM_EVENT: u32 = 1;

impl StdinSubscriber {
    fn stdin_events(&self) -> Events {
        Events::with_data_raw(self.console.fd, STDIN_EVENT, EventSet::IN)
    }

    fn watch(&mut self, ops: &mut EventOps, want: bool) {
        if let Err(e) = set_watched(ops, self.stdin_events(), &mut self.watching, want) {
            log::warn!("console: cannot (un)watch stdin: {e:?}");
        }
    }

    /// Watches stdin only while the input queue has room; when full, the guest's next read
    /// signals `room`.
    fn follow_room(&mut self, ops: &mut EventOps) {
        let room = self.console.room_left();
        self.console.stalled.store(room == 0, Ordering::Release);
        if room == 0 {
            // The guest may have read between the check and the flag: look again.
            self.console.notify(ConsoleEvent::Input);
        }
        self.watch(ops, room > 0 || self.console.room_left() > 0);
    }
}

impl MutEventSubscriber for StdinSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.console.room,
            ROOM_EVENT,
            EventSet::IN,
        )) {
            log::warn!("console: cannot watch its room event: {e:?}");
        }
        self.follow_room(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() == ROOM_EVENT {
            let _ = self.console.room.read();
        } else if !self.console.read_stdin(self.console.room_left()) {
            let _ = ops.remove(Events::with_data(
                &self.console.room,
                ROOM_EVENT,
                EventSet::IN,
            ));
            self.watch(ops, false);
            return;
        }
        self.follow_room(ops);
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
        // Straight to fd 1 (no std buffer to copy through and flush, no reentrant lock): one
        // write(2) per guest write, serialized by `output` so harts' lines do not interleave.
        let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let (stdout, log) = &mut *output;
        if self.to_stdout {
            stdout.write(bytes);
        }
        if let Some(file) = log.as_mut() {
            use std::io::Write;
            if let Err(e) = file.write_all(bytes) {
                // Once: a full disk would otherwise warn for every byte.
                log::warn!("--serial-log: {e}; the console is no longer logged");
                *log = None;
            }
        }
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let n = buf.len().min(input.len());
        for (dst, src) in buf.iter_mut().zip(input.drain(..n)) {
            *dst = src;
        }
        drop(input);
        if n > 0 {
            self.drained.notify_all();
            if self.stalled.swap(false, Ordering::AcqRel) {
                let _ = self.room.write(1);
            }
        }
        n
    }

    fn set_listener(&self, listener: Option<Listener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = listener;
    }

    fn input_subscriber(self: Arc<Self>) -> Option<Subscriber> {
        if *self.lock_mode() != InputMode::Subscriber {
            return None;
        }
        Some(Box::new(StdinSubscriber {
            console: self,
            watching: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    /// A console on a pipe, read by an event loop; returns it, the pipe's write end and the
    /// events its listener saw.
    fn piped(
        escape: bool,
    ) -> (
        Arc<StdioConsole>,
        std::fs::File,
        crate::event_loop::EventLoop,
        Arc<Mutex<Vec<ConsoleEvent>>>,
    ) {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 returns.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fds[1] is a new fd nothing else owns.
        let writer = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let console = StdioConsole::with_input(fds[0], escape, None, true);
        console.start_input();
        assert_eq!(*console.lock_mode(), InputMode::Subscriber);
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        console.set_listener(Some(Arc::new(move |e| seen.lock().unwrap().push(e))));
        let subscriber = console.clone().input_subscriber().unwrap();
        let el = crate::event_loop::EventLoop::start(vec![subscriber]).unwrap();
        (console, writer, el, events)
    }

    /// How long a test waits for the event loop: generous, as the lab runs these tests in a
    /// nested guest under QEMU's TCG, where 4 s once did not suffice.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

    fn read_all(console: &StdioConsole, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let started = std::time::Instant::now();
        while started.elapsed() < PATIENCE {
            let n = console.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
            if got.len() >= want {
                break;
            }
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        got
    }

    #[test]
    fn stdin_is_read_on_the_event_loop_with_bounded_memory() {
        let (console, mut writer, _el, events) = piped(false);
        writer.write_all(b"hello").unwrap();
        assert_eq!(read_all(&console, 5), b"hello");
        // The loop queues the bytes, then tells the listener: a reader can see them first
        // (seen once in the lab's L1), so the event is waited for, not expected at once.
        let started = std::time::Instant::now();
        while !events.lock().unwrap().contains(&ConsoleEvent::Input) {
            assert!(
                started.elapsed() < PATIENCE,
                "the listener never heard of the input"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // More than the queue holds, from a writer that blocks on the full pipe: the loop
        // stops reading at the limit and goes on when the guest drains; nothing is lost.
        let total = 3 * INPUT_LIMIT;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&data).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(console.input.lock().unwrap().len() <= INPUT_LIMIT);
        assert_eq!(read_all(&console, total), expected);
        w.join().unwrap();
    }

    #[test]
    fn the_escape_sequence_quits() {
        let (_console, mut writer, _el, events) = piped(true);
        writer.write_all(b"ab\x01x").unwrap();
        let started = std::time::Instant::now();
        while started.elapsed() < PATIENCE {
            if events.lock().unwrap().contains(&ConsoleEvent::Quit) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("no Quit event");
    }

    #[test]
    fn dev_null_has_no_input_and_needs_no_thread() {
        use std::os::fd::AsRawFd;
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(is_dev_null(null.as_raw_fd()));
        let console = StdioConsole::with_input(null.as_raw_fd(), false, None, true);
        console.start_input();
        assert_eq!(*console.lock_mode(), InputMode::Ended);
        assert!(console.clone().input_subscriber().is_none());
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(!is_dev_null(file.as_raw_fd()));
    }

    #[test]
    fn output_goes_to_the_serial_log() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("rvvmm-serial-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let null = std::fs::File::open("/dev/null").unwrap();
        let console = StdioConsole::with_input(
            null.as_raw_fd(),
            false,
            Some(std::fs::File::create(&path).unwrap()),
            false,
        );
        console.write(b"Linux version ");
        console.write(b"6.12\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"Linux version 6.12\n");
        let _ = std::fs::remove_dir_all(&dir);
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
