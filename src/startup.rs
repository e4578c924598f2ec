//! Where startup time goes: `RUST_LOG=rvvmm=debug` logs each step with its microseconds since
//! rvvmm started.

/// Logs (at debug level) a step of starting up and when it ended, in microseconds since rvvmm
/// started.
pub fn startup_step(what: &str) {
    // `log::debug!` evaluates its arguments (the clock read) only when debug is on.
    log::debug!(
        "startup: {what} (+{} us)",
        process_start().elapsed().as_micros()
    );
}

/// When rvvmm started (the first call; `main` makes it early).
pub fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}
