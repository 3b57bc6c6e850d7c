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

impl UnixTime {
    /// The day, `YYYY-MM-DD` (UTC, proleptic Gregorian), for people.
    pub fn date(self) -> String {
        // Civil from days (H. Hinnant's algorithm).
        let z = self.0.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC`, for people (RFC 3339's date and time, in UTC).
impl std::fmt::Display for UnixTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.rem_euclid(86_400);
        write!(
            f,
            "{} {:02}:{:02}:{:02} UTC",
            self.date(),
            secs / 3_600,
            secs % 3_600 / 60,
            secs % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::UnixTime;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(UnixTime(0).to_string(), "1970-01-01 00:00:00 UTC");
        // RFC 7519's example NumericDate.
        assert_eq!(UnixTime(1_300_819_380).to_string(), "2011-03-22 18:43:00 UTC");
        assert_eq!(
            UnixTime(951_782_400).to_string(),
            "2000-02-29 00:00:00 UTC",
            "a leap day"
        );
        assert_eq!(UnixTime(1_796_083_199).to_string(), "2026-11-30 23:59:59 UTC");
        assert_eq!(UnixTime(-1).to_string(), "1969-12-31 23:59:59 UTC");
        assert_eq!(UnixTime(1_795_000_000).date(), "2026-11-18");
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
