//! Time as the rules see it: whole seconds since the Unix epoch, always
//! passed in by the caller (the core never reads a clock).

/// Seconds since 1970-01-01T00:00:00Z, as in JWT `NumericDate` (RFC 7519 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// The number of seconds.
    pub fn seconds(self) -> i64 {
        self.0
    }

    /// Seconds elapsed from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: UnixTime) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Where the I/O crates (guard, server) read the time, so that their tests
/// can fix it. The rules in this crate never call it: they take `now`.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> UnixTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}
