//! Counting what a role drops, with rate-limited logging.
//!
//! Every bound socket faces the network, so garbage is expected: a port
//! scanner, a peer of another version, a classic-mode role on a default-mode
//! port. Each dropped message is counted by reason; the first of each reason is
//! logged, and after that at most one line every five seconds, saying how many
//! went unlogged since the last, so a flood cannot flood the log. With
//! `--metrics` each drop is also counted in the role's
//! `zpipe_ROLE_dropped_total{reason}` ([`Drops::count_into`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::protocol::{self, Kind, Message};

/// How often a repeated reason may be logged again.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Dropped messages by reason.
#[derive(Debug, Default)]
pub struct Drops {
    counts: BTreeMap<&'static str, u64>,
    last_log: Option<Instant>,
    unlogged: u64,
    /// `--metrics`: the same counts, over the process's life.
    metric: Option<crate::metrics::DropCounter>,
}

impl Drops {
    /// Also counts every drop from now on in `counter` (a role's
    /// `dropped_total`, which outlives this count: a standing sink's is
    /// made anew for each batch).
    pub fn count_into(&mut self, counter: crate::metrics::DropCounter) {
        self.metric = Some(counter);
    }

    /// Decodes a message that arrived on `socket`, or counts it dropped and
    /// returns `None`. A message of a kind the socket does not take
    /// (`takes` says which it does) is counted as "unexpected kind" even
    /// when its payload cannot be read either, so a report counts a
    /// misdirected message as such.
    pub fn decode<F: std::ops::Deref<Target = [u8]>>(
        &mut self,
        frames: &[F],
        socket: &str,
        takes: impl Fn(Kind) -> bool,
    ) -> Option<Message> {
        let e = match Message::decode(frames) {
            Ok(m) => return Some(m),
            Err(e) => e,
        };
        match protocol::split(frames) {
            // The header and the frames were right; the payload was not.
            Ok((h, _)) if !takes(h.kind) => self.note(
                socket,
                "unexpected kind",
                format_args!("{:?} on the {socket} socket", h.kind),
            ),
            _ => self.note(socket, e.label(), e),
        }
        None
    }

    /// Counts one dropped message; `socket` names where it arrived.
    pub fn note(&mut self, socket: &str, reason: &'static str, detail: impl std::fmt::Display) {
        if let Some(m) = &self.metric {
            m.get_or_create(&crate::metrics::Reason { reason }).inc();
        }
        let count = self.counts.entry(reason).or_insert(0);
        *count += 1;
        let first = *count == 1;
        let due = self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if first || due {
            let more = if self.unlogged > 0 {
                format!(" ({} more dropped since the last report)", self.unlogged)
            } else {
                String::new()
            };
            log::warn!("dropped a message on the {socket} socket: {detail}{more}");
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }

    /// Total dropped.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Counts by reason, for reports.
    pub fn by_reason(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_reason_is_logged_then_one_line_every_five_seconds() {
        let mut d = Drops::default();
        d.note("results", "garbage", "x");
        let first = d.last_log.expect("the first drop is logged");
        assert_eq!(d.unlogged, 0);
        for _ in 0..3 {
            d.note("results", "garbage", "x");
        }
        assert_eq!(
            d.unlogged, 3,
            "repeats within five seconds are only counted"
        );
        assert_eq!(d.last_log, Some(first));
        // Five seconds later the next one is logged, with the count.
        d.last_log = Instant::now().checked_sub(LOG_EVERY);
        d.note("results", "garbage", "x");
        assert_eq!(d.unlogged, 0);
        assert!(d.last_log.is_some_and(|t| t.elapsed() < LOG_EVERY));
        d.note("results", "garbage", "x");
        assert_eq!(d.unlogged, 1);
        assert_eq!(d.by_reason()["garbage"], 6, "every drop is counted");
    }

    #[test]
    fn with_a_metric_every_drop_is_counted_there_too_by_reason() {
        let counter = crate::metrics::DropCounter::default();
        let mut d = Drops::default();
        d.note("results", "garbage", "before");
        d.count_into(counter.clone());
        d.note("results", "garbage", "x");
        d.note("results", "garbage", "x");
        d.note("results", "version", "v2");
        let get = |reason| {
            counter
                .get(&crate::metrics::Reason { reason })
                .map(|c| c.get())
        };
        assert_eq!(get("garbage"), Some(2), "from count_into on");
        assert_eq!(get("version"), Some(1));
        assert_eq!(d.by_reason()["garbage"], 3, "the report's count is whole");
    }

    #[test]
    fn counts_by_reason() {
        let mut d = Drops::default();
        for _ in 0..1000 {
            d.note("results", "garbage", "x");
        }
        d.note("results", "version", "v2");
        assert_eq!(d.total(), 1001);
        assert_eq!(d.by_reason()["garbage"], 1000);
        assert_eq!(d.unlogged, 0, "a new reason is logged at once");
    }

    #[test]
    fn decode_counts_what_it_cannot_read_and_a_misdirected_kind_as_such() {
        use crate::protocol::Header;
        let mut d = Drops::default();
        let go = Message::Go { batch: 1 }.frames();
        assert_eq!(
            d.decode(&go, "feedback", |_| true),
            Some(Message::Go { batch: 1 })
        );
        assert!(
            d.decode(&[b"junk".to_vec()], "feedback", |_| true)
                .is_none()
        );
        // A STATUS with a bad payload, where STATUS is not taken.
        let status = [
            Header::bare(Kind::Status, 1).encode().to_vec(),
            b"{".to_vec(),
        ];
        assert!(
            d.decode(&status, "results", |k| k != Kind::Status)
                .is_none()
        );
        // The same where it is taken: malformed.
        assert!(d.decode(&status, "feedback", |_| true).is_none());
        let counts = d.by_reason();
        assert_eq!(counts.get("not zpipe"), Some(&1));
        assert_eq!(counts.get("unexpected kind"), Some(&1));
        assert_eq!(counts.get("malformed"), Some(&1));
        assert_eq!(d.total(), 3);
    }
}
