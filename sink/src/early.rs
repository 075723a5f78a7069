//! Results that come before any batch is announced.
//!
//! A sink started again (`--resume`, or a standing pool's new sink) hears
//! from the workers at once: results held up while it was away pour in
//! the moment it binds, and the ventilator announces the batch again only
//! at its next START (within a second). Dropped, those results would be
//! run again; so they wait here, in arrival order, and go through the
//! collecting as if just arrived once the batch is announced (before the
//! sink tells the ventilator what it holds). Results of another batch are
//! then dropped as foreign, as they would have been.
//!
//! Bounded: at most [`MAX_RESULTS`] results and [`MAX_BYTES`] of their
//! output and error text wait; more are dropped (and, not acknowledged,
//! sent again by the ventilator).

use common::protocol::{Item, ResultBody};

use crate::results::Source;

/// The most results that wait for their batch.
pub(crate) const MAX_RESULTS: usize = 100_000;
/// The most bytes of output and error text that wait.
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// One result waiting: its batch, itself, where it came from, and when it
/// arrived (the sink's clock, µs).
pub(crate) type Waiting = (u64, Item<ResultBody>, Source, u64);

/// The results waiting for their batch.
#[derive(Debug, Default)]
pub(crate) struct Early {
    waiting: Vec<Waiting>,
    bytes: usize,
}

impl Early {
    /// Keeps a result until its batch is announced; false (and it is
    /// dropped) when there is no more room.
    pub(crate) fn keep(&mut self, waiting: Waiting) -> bool {
        let size = waiting
            .1
            .body
            .as_ref()
            .map_or(0, |b| b.outcome.output.len() + b.outcome.error.len());
        if self.waiting.len() >= MAX_RESULTS || self.bytes + size > MAX_BYTES {
            return false;
        }
        self.bytes += size;
        self.waiting.push(waiting);
        true
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Everything that waited, in arrival order; nothing waits after.
    pub(crate) fn take(&mut self) -> Vec<Waiting> {
        self.bytes = 0;
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::work::Outcome;

    fn result(task: u64, output: usize) -> Waiting {
        let body = ResultBody {
            worker: 1,
            thread: 0,
            sent_us: 0,
            duration_us: 0,
            outcome: Outcome::ok(vec![b'x'; output]),
        };
        let item = Item {
            task,
            attempt: 1,
            body: Ok(body),
        };
        (7, item, Source::Worker, task)
    }

    #[test]
    fn results_wait_in_order_up_to_a_count_and_a_size() {
        let mut e = Early::default();
        for t in 0..3 {
            assert!(e.keep(result(t, 10)));
        }
        assert_eq!(e.len(), 3);
        let big = result(9, MAX_BYTES);
        assert!(!e.keep(big), "over the byte bound");
        let order: Vec<u64> = e.take().iter().map(|w| w.1.task).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(e.len(), 0);
        // Emptied, the bytes are free again.
        assert!(e.keep(result(9, MAX_BYTES)));
        for t in 0..MAX_RESULTS as u64 {
            if !e.keep(result(t, 0)) {
                assert_eq!(e.len(), MAX_RESULTS, "the count bound");
                return;
            }
        }
        panic!("no count bound");
    }
}
