//! Saying what the sink waits for, at a steady rate: while no batch is
//! announced (a standing pool between batches), and while a batch gets no
//! new result. Without it a sink that waits looks the same as one that
//! hangs.

use std::time::{Duration, Instant};

/// How often an idle sink says it waits for a batch.
pub(crate) const IDLE_EVERY: Duration = Duration::from_secs(60);
/// How long a batch may get no new result before the sink says so, and
/// how often it says it again.
pub(crate) const STALL_EVERY: Duration = Duration::from_secs(10);

/// The quiet since the last change of a count (results received), as a
/// pure type given the time.
#[derive(Debug)]
pub(crate) struct Quiet {
    count: u64,
    since: Instant,
    said: Option<Instant>,
}

impl Quiet {
    /// Nothing yet, from `now`.
    pub(crate) fn new(now: Instant) -> Quiet {
        Quiet {
            count: 0,
            since: now,
            said: None,
        }
    }

    /// The count as of `now`: when it has not moved for `every`, and was
    /// not said for `every`, returns how long it has been quiet (say it).
    pub(crate) fn due(&mut self, count: u64, now: Instant, every: Duration) -> Option<Duration> {
        if count != self.count {
            self.count = count;
            self.since = now;
            self.said = None;
            return None;
        }
        let quiet = now.saturating_duration_since(self.since);
        let again = self
            .said
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        (quiet >= every && again).then(|| {
            self.said = Some(now);
            quiet
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn quiet_is_said_after_a_while_and_again_at_the_same_rate_until_it_moves() {
        let t0 = Instant::now();
        let mut q = Quiet::new(t0);
        assert_eq!(q.due(0, t0 + 9 * S, 10 * S), None);
        assert_eq!(q.due(0, t0 + 10 * S, 10 * S), Some(10 * S));
        assert_eq!(q.due(0, t0 + 15 * S, 10 * S), None, "not at once again");
        assert_eq!(q.due(0, t0 + 20 * S, 10 * S), Some(20 * S));
        // A result: quiet starts over.
        assert_eq!(q.due(5, t0 + 21 * S, 10 * S), None);
        assert_eq!(q.due(5, t0 + 30 * S, 10 * S), None);
        assert_eq!(q.due(5, t0 + 31 * S, 10 * S), Some(10 * S));
    }
}
