//! Raw mode for an interactive terminal on stdin, restored on every way out: normal return,
//! error, panic (the hook runs before the abort), SIGTERM/SIGHUP/SIGQUIT, a seccomp trip
//! (SIGSYS); given back while rvvmm is stopped by a SIGTSTP from outside (raw mode has no ^Z)
//! and taken again when it continues.

use std::sync::OnceLock;

static SAVED: OnceLock<libc::termios> = OnceLock::new();
static RAW: OnceLock<libc::termios> = OnceLock::new();

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// While alive, stdin is in raw mode (no line editing, echo or signal keys: every byte goes to
/// the guest). Dropping it restores the terminal.
pub struct RawTerminal(());

impl RawTerminal {
    /// Puts a terminal stdin in raw mode; `None` if stdin is not a terminal.
    pub fn enter() -> Option<RawTerminal> {
        if !stdin_is_tty() {
            return None;
        }
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to write to.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return None;
        }
        let _ = SAVED.set(t);
        install_restorers();
        let mut raw = t;
        raw.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        let _ = RAW.set(raw);
        // SAFETY: `raw` is a valid termios derived from the current one.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Some(RawTerminal(()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the saved terminal settings (async-signal-safe: one tcsetattr).
pub(crate) fn restore() {
    if let Some(t) = SAVED.get() {
        // SAFETY: `t` is the termios tcgetattr filled in; tcsetattr only reads it.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
    }
}

/// Restores the terminal and ends the process by `sig` (its default action).
pub(crate) extern "C" fn restore_and_die(sig: libc::c_int) {
    restore();
    // SAFETY: resetting to the default action and re-raising are async-signal-safe; the
    // process then ends as the signal asks.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// SIGTSTP: the terminal as it was, then stopped as the signal asks (its default action, with
/// it unblocked); once continued (SIGCONT), raw mode again and this handler for the next stop.
/// Only async-signal-safe calls.
extern "C" fn stop_then_resume(_sig: libc::c_int) {
    restore();
    // SAFETY: resetting a disposition, unblocking one signal in this thread and raising it are
    // async-signal-safe; `set` is initialised by sigemptyset before use; `raw` is the termios
    // made from tcgetattr's in `enter`.
    unsafe {
        libc::signal(libc::SIGTSTP, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTSTP);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGTSTP);
        if let Some(raw) = RAW.get() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, raw);
        }
        libc::signal(
            libc::SIGTSTP,
            stop_then_resume as *const () as libc::sighandler_t,
        );
    }
}

fn install_restorers() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: `restore_and_die` is an extern "C" fn that only makes async-signal-safe calls.
        unsafe { libc::signal(sig, restore_and_die as *const () as libc::sighandler_t) };
    }
    // SAFETY: `stop_then_resume` only makes async-signal-safe calls.
    unsafe {
        libc::signal(
            libc::SIGTSTP,
            stop_then_resume as *const () as libc::sighandler_t,
        )
    };
}
