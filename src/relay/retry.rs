//! Where retry, backoff, expiry and delay warnings are decided.
//!
//! A temporary failure becomes a retry after an exponential backoff
//! (`min_backoff` doubling per attempt up to `max_backoff`), unless the
//! message has been queued longer than `max_lifetime`: then it bounces like
//! a permanent failure (Postfix's `maximal_queue_lifetime`). The next
//! attempt is never scheduled past the expiry moment, so the last try
//! happens on time rather than up to `max_backoff` late.

use std::time::Duration;

/// What to do with a recipient after a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTempFail {
    /// Keep it; try again at this unix time.
    Retry { next_attempt: i64 },
    /// Queued too long: return it to the sender.
    Expire,
}

/// The retry policy from `[queue]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_lifetime: Duration,
    pub delay_warning: Option<Duration>,
}

impl Policy {
    pub fn from_config(q: &crate::config::Queue) -> Policy {
        Policy {
            min_backoff: q.min_backoff,
            max_backoff: q.max_backoff,
            max_lifetime: q.max_lifetime,
            delay_warning: q.delay_warning,
        }
    }

    /// Wait after the `attempts`-th failed attempt (1 = the first):
    /// min, 2·min, 4·min, … capped at max.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let min = self.min_backoff.max(Duration::from_secs(1));
        let max = self.max_backoff.max(min);
        let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
        min.checked_mul(1u32 << doublings).unwrap_or(max).min(max)
    }

    /// Decides after a temporary failure at `now` (unix seconds) of a
    /// message that arrived at `arrival`, this being attempt number `attempts`.
    pub fn after_temp_fail(&self, now: i64, arrival: i64, attempts: i64) -> AfterTempFail {
        let expires = arrival.saturating_add(self.max_lifetime.as_secs() as i64);
        if now >= expires {
            return AfterTempFail::Expire;
        }
        let wait = self.backoff(attempts).as_secs() as i64;
        let next = now.saturating_add(wait.max(1)).min(expires).max(now + 1);
        AfterTempFail::Retry { next_attempt: next }
    }

    /// Whether a delay DSN is due now for a recipient still being retried.
    pub fn delay_warning_due(
        &self,
        now: i64,
        arrival: i64,
        warned: bool,
        notify: Option<&str>,
    ) -> bool {
        match self.delay_warning {
            Some(d) if !warned => {
                now.saturating_sub(arrival) >= d.as_secs() as i64
                    && notify_allows(notify, Notify::Delay)
            }
            _ => false,
        }
    }
}

/// DSN events a sender can ask to hear about (RFC 3461 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Success,
    Failure,
    Delay,
}

/// Whether `NOTIFY=` permits a DSN for `event`. No NOTIFY means
/// `FAILURE,DELAY` (the RFC 3461 §4.1 convention).
pub fn notify_allows(notify: Option<&str>, event: Notify) -> bool {
    let want = match event {
        Notify::Success => "SUCCESS",
        Notify::Failure => "FAILURE",
        Notify::Delay => "DELAY",
    };
    match notify {
        None => event != Notify::Success,
        Some(n) => n.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4 * 3600),
            max_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Some(Duration::from_secs(4 * 3600)),
        }
    }

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]);
        assert_eq!(p.backoff(0).as_secs(), 300);
        assert_eq!(p.backoff(1000).as_secs(), 14400);
    }

    #[test]
    fn retry_until_expiry_then_expire() {
        let p = policy();
        let arrival = 1_000_000;
        assert_eq!(
            p.after_temp_fail(arrival + 10, arrival, 1),
            AfterTempFail::Retry {
                next_attempt: arrival + 310
            }
        );
        // The last retry is pulled in to the expiry moment.
        let near_end = arrival + 5 * 86400 - 60;
        assert_eq!(
            p.after_temp_fail(near_end, arrival, 40),
            AfterTempFail::Retry {
                next_attempt: arrival + 5 * 86400
            }
        );
        assert_eq!(
            p.after_temp_fail(arrival + 5 * 86400, arrival, 41),
            AfterTempFail::Expire
        );
    }

    #[test]
    fn short_lifetimes_still_move_forward() {
        let p = Policy {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(3),
            delay_warning: None,
        };
        assert_eq!(
            p.after_temp_fail(100, 100, 1),
            AfterTempFail::Retry { next_attempt: 101 }
        );
        assert_eq!(
            p.after_temp_fail(102, 100, 3),
            AfterTempFail::Retry { next_attempt: 103 }
        );
        assert_eq!(p.after_temp_fail(103, 100, 4), AfterTempFail::Expire);
    }

    #[test]
    fn notify_rules() {
        assert!(notify_allows(None, Notify::Failure));
        assert!(notify_allows(None, Notify::Delay));
        assert!(!notify_allows(None, Notify::Success));
        assert!(!notify_allows(Some("NEVER"), Notify::Failure));
        assert!(notify_allows(Some("SUCCESS,FAILURE"), Notify::Failure));
        assert!(!notify_allows(Some("SUCCESS,FAILURE"), Notify::Delay));
        assert!(notify_allows(Some("SUCCESS"), Notify::Success));
    }

    #[test]
    fn delay_warning_once_and_only_if_allowed() {
        let p = policy();
        let a = 1_000_000;
        assert!(!p.delay_warning_due(a + 3600, a, false, None));
        assert!(p.delay_warning_due(a + 4 * 3600, a, false, None));
        assert!(!p.delay_warning_due(a + 4 * 3600, a, true, None));
        assert!(!p.delay_warning_due(a + 4 * 3600, a, false, Some("FAILURE")));
        let none = Policy {
            delay_warning: None,
            ..p
        };
        assert!(!none.delay_warning_due(a + 9 * 3600, a, false, None));
    }
}
