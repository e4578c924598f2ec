//! Rate-limited warnings for what a guest can trigger: a guest that writes a bad register
//! 20,000 times must not write 20,000 lines into the operator's log. Each call site of
//! [`guest_warn!`] logs at most once a second; the next line it logs says how many it held
//! back. (The `log` crate has no rate limiting, and rust-vmm has none to offer.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// One call site's budget: one line a second.
pub struct RateLimit {
    /// Milliseconds since [`epoch`] of the last line logged, plus one (0: never).
    last: AtomicU64,
    /// Lines held back since the last one logged.
    held: AtomicU64,
}

/// The clock's zero: the first use of any limit.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RateLimit {
    /// A limit that has logged nothing yet.
    pub const fn new() -> Self {
        RateLimit {
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now; if so, how many were held back before it.
    pub fn check(&self) -> Option<u64> {
        self.check_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    /// [`RateLimit::check`] at `now` (milliseconds, from 1).
    fn check_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 1000)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `log::warn!` for what a guest can trigger: at most one line a second from each call site,
/// and the count of the lines held back in the next one.
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if log::log_enabled!(log::Level::Warn) {
            match LIMIT.check() {
                Some(0) => log::warn!($($arg)+),
                Some(held) => log::warn!("{} ({held} more like it held back)", format_args!($($arg)+)),
                None => {}
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_count_of_the_rest() {
        let limit = RateLimit::new();
        assert_eq!(limit.check_at(1), Some(0));
        for t in 2..1000 {
            assert_eq!(limit.check_at(t), None);
        }
        // 998 held back in the first second, told with the next line.
        assert_eq!(limit.check_at(1001), Some(998));
        assert_eq!(limit.check_at(1500), None);
        assert_eq!(limit.check_at(2001), Some(1));
    }

    #[test]
    fn twenty_thousand_warnings_make_one_line() {
        // The macro on a hot loop: only the first passes within the same second.
        let limit = RateLimit::new();
        let logged = (0..20_000).filter(|_| limit.check().is_some()).count();
        assert!(logged <= 2, "{logged} lines");
    }
}
