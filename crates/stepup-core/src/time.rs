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
