//! When to poll next: the server's `sleep` (`HH:MM:SS`) within bounds, a random delay on
//! top so that a fleet does not poll in step, and a capped exponential back-off while
//! the server cannot be reached or answers with errors. Randomness is an input (a
//! `u64` the caller draws), so every delay here is a pure function.

use std::time::Duration;

/// A server's sleep is never taken below this (a misconfigured server must not make
/// its fleet poll in a loop).
pub const MIN_SLEEP: Duration = Duration::from_secs(5);
/// Nor above this (a typo on the server must not silence a device for months).
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// The sleep before the server has answered once, and when an answer lacks one.
pub const DEFAULT_SLEEP: Duration = Duration::from_secs(5 * 60);
/// The first retry after a failed poll; each further failure doubles it...
pub const BACKOFF_FIRST: Duration = Duration::from_secs(60);
/// The first retry while the device itself has no route to the server (its network
/// coming up in a boot): short, so that a result waiting to be told (an update just
/// marked good) is told within seconds of the network coming up; nothing reached the
/// server, so the server's back-off does not grow.
pub const OFFLINE_RETRY: Duration = Duration::from_secs(5);

/// The retry after `rounds` rounds in a row without a route (1 for the first): 5 s
/// doubling to [`BACKOFF_FIRST`], so a device whose WAN never comes up logs about once a
/// minute, not every 5 s.
pub fn offline_retry(rounds: u32) -> Duration {
    let exp = rounds.saturating_sub(1).min(8);
    OFFLINE_RETRY.saturating_mul(1u32 << exp).min(BACKOFF_FIRST)
}
/// ...up to this: a server down for a day gets 30 to 55 polls per device, not thousands.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// The random delay added to a sleep is at most a tenth of it (the update timer's rule).
pub const JITTER_DIVISOR: u32 = 10;

/// Parses DDI's `HH:MM:SS` (hours may exceed 23; minutes and seconds below 60).
pub fn parse_sleep(s: &str) -> Result<Duration, String> {
    let bad = || format!("polling sleep {s:?} is not HH:MM:SS");
    let mut parts = s.split(':');
    let (Some(h), Some(m), Some(sec), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let field = |p: &str, max: u64| -> Result<u64, String> {
        if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u64 = p.parse().map_err(|_| bad())?;
        if v > max {
            return Err(bad());
        }
        Ok(v)
    };
    let secs = field(h, 999_999)? * 3600 + field(m, 59)? * 60 + field(sec, 59)?;
    Ok(Duration::from_secs(secs))
}

/// The server's sleep, within [`MIN_SLEEP`] and [`MAX_SLEEP`].
pub fn bounded(sleep: Duration) -> Duration {
    sleep.clamp(MIN_SLEEP, MAX_SLEEP)
}

/// `base` plus a random part of up to a tenth of it, whole seconds.
pub fn with_jitter(base: Duration, random: u64) -> Duration {
    let spread = base.as_secs() / u64::from(JITTER_DIVISOR);
    base + Duration::from_secs(random % (spread + 1))
}

/// The delay after `failures` failed polls in a row (1 for the first): doubling from
/// [`BACKOFF_FIRST`], capped at [`BACKOFF_MAX`], and drawn from its upper half so that
/// devices that lost the server together do not come back together.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_FIRST
        .saturating_mul(1u32 << exp)
        .min(BACKOFF_MAX)
        .as_secs();
    let half = full / 2;
    Duration::from_secs(full - half + random % (half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_parse_as_ddi_writes_them() {
        let cases: &[(&str, Option<u64>)] = &[
            ("00:05:00", Some(300)),
            ("00:00:10", Some(10)),
            ("00:01:00", Some(60)),
            ("12:00:00", Some(43200)),
            ("48:00:01", Some(172801)),
            ("0:0:5", Some(5)),
            ("00:60:00", None),
            ("00:00:60", None),
            ("00:05", None),
            ("300", None),
            ("00:05:00:00", None),
            ("-1:00:00", None),
            ("aa:bb:cc", None),
            ("", None),
            (" 00:05:00", None),
            ("9999999:00:00", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_sleep(s).ok().map(|d| d.as_secs()), *want, "{s:?}");
        }
        assert_eq!(
            parse_sleep("5m").unwrap_err(),
            "polling sleep \"5m\" is not HH:MM:SS"
        );
    }

    #[test]
    fn a_servers_sleep_is_bounded() {
        assert_eq!(bounded(Duration::ZERO), MIN_SLEEP);
        assert_eq!(bounded(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(bounded(Duration::from_secs(172801)), MAX_SLEEP);
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let base = Duration::from_secs(300);
        for random in [0, 1, 29, 30, 31, u64::MAX] {
            let d = with_jitter(base, random);
            assert!(
                d >= base && d <= base + Duration::from_secs(30),
                "{random}: {d:?}"
            );
        }
        assert_eq!(with_jitter(base, 30), Duration::from_secs(330));
        assert_eq!(with_jitter(base, 31), base);
        assert_eq!(
            with_jitter(Duration::from_secs(5), u64::MAX),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn without_a_route_it_retries_soon_then_once_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|r| offline_retry(r).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60, 60, 60]);
        assert_eq!(offline_retry(u32::MAX), BACKOFF_FIRST);
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        // (failures, lowest, highest) in seconds.
        let cases = [
            (0, 30, 60),
            (1, 30, 60),
            (2, 60, 120),
            (3, 120, 240),
            (6, 960, 1920),
            (7, 1800, 3600),
            (8, 1800, 3600),
            (1000, 1800, 3600),
            (u32::MAX, 1800, 3600),
        ];
        for (failures, lo, hi) in cases {
            for random in [0, 1, 7, 1799, 1800, u64::MAX] {
                let d = backoff(failures, random).as_secs();
                assert!(
                    lo <= d && d <= hi,
                    "{failures} failures, random {random}: {d}"
                );
            }
            assert_eq!(backoff(failures, 0).as_secs(), lo, "{failures}");
        }
        // A day without the server: the number of polls stays small.
        let (mut t, mut polls) = (0u64, 0u32);
        while t < 24 * 3600 {
            polls += 1;
            t += backoff(polls, 0).as_secs();
        }
        assert!(polls <= 60, "{polls} polls in a day");
    }
}
