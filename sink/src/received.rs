//! Where results are deduplicated: the set of task ids whose result is in.
//!
//! Two bits per task (in, and ok when in), so a batch of 100 million tasks
//! costs 25 MB. The first result of a task wins; a second is a duplicate,
//! answered with the first one's status (it is acknowledged again: the
//! ventilator sent the task again because an ACK was lost). The same set
//! gives the snapshot a new ventilator learns (ranges of ok and of failed
//! ids) and takes what `--resume` read back from the output.

use std::ops::Range;

use common::protocol::Acks;

/// What [`Received::insert`] made of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The first result of its task: write it.
    New,
    /// The task's result was in already; `ok` says whether that first one
    /// was ok (what to acknowledge again).
    Duplicate {
        /// The first result's status was ok.
        ok: bool,
    },
}

/// The results received of one batch, by task id.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    tasks: u64,
    /// One bit per task: its result is in.
    here: Vec<u64>,
    /// One bit per task: its result is in and ok.
    good: Vec<u64>,
    count: u64,
    ok: u64,
    duplicates: u64,
}

/// The word and bit of a task id: the bit arithmetic, written once.
fn slot(task: u64) -> (usize, u64) {
    ((task / 64) as usize, 1 << (task % 64))
}

impl Received {
    /// An empty set for a batch of `tasks` tasks (ids `0..tasks`).
    pub(crate) fn new(tasks: u64) -> Received {
        let words = tasks.div_ceil(64) as usize;
        Received {
            tasks,
            here: vec![0; words],
            good: vec![0; words],
            count: 0,
            ok: 0,
            duplicates: 0,
        }
    }

    /// Results in (each task once).
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Results in that are ok.
    pub(crate) fn ok(&self) -> u64 {
        self.ok
    }

    /// Results in that are not ok.
    pub(crate) fn failed(&self) -> u64 {
        self.count - self.ok
    }

    /// Results that arrived again after the first and were dropped.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Every task's result is in.
    pub(crate) fn is_complete(&self) -> bool {
        self.count == self.tasks
    }

    /// `Some(ok)` when the task's result is in.
    pub(crate) fn get(&self, task: u64) -> Option<bool> {
        if task >= self.tasks {
            return None;
        }
        let (w, bit) = slot(task);
        (self.here[w] & bit != 0).then(|| self.good[w] & bit != 0)
    }

    /// Takes a result of `task` (which must be below [`Received::tasks`]:
    /// the caller drops others as unknown). A second result of a task is
    /// counted as a duplicate and changes nothing.
    pub(crate) fn insert(&mut self, task: u64, ok: bool) -> Insert {
        match self.set(task, ok) {
            Insert::New => Insert::New,
            dup => {
                self.duplicates += 1;
                dup
            }
        }
    }

    fn set(&mut self, task: u64, ok: bool) -> Insert {
        let (w, bit) = slot(task);
        if self.here[w] & bit != 0 {
            return Insert::Duplicate {
                ok: self.good[w] & bit != 0,
            };
        }
        self.here[w] |= bit;
        self.count += 1;
        if ok {
            self.good[w] |= bit;
            self.ok += 1;
        }
        Insert::New
    }

    /// Takes what `--resume` read back from the output: ids beyond the
    /// batch are ignored, a task read twice counts once (the first wins),
    /// and none counts as a duplicate. Returns how many results it added.
    pub(crate) fn apply(&mut self, ok: &[u64], failed: &[u64]) -> u64 {
        let (before, tasks) = (self.count, self.tasks);
        for (ids, good) in [(ok, true), (failed, false)] {
            for &t in ids.iter().filter(|&&t| t < tasks) {
                self.set(t, good);
            }
        }
        self.count - before
    }

    /// Everything held, as ranges of ok and of failed task ids in order:
    /// the sink's whole account of the batch (the snapshot).
    pub(crate) fn ranges(&self) -> Acks {
        let mut acks = Acks::default();
        // The run being built: where it began, and whether it is of ok ids.
        let mut open: Option<(u64, bool)> = None;
        let close = |acks: &mut Acks, run: Range<u64>, good: bool| {
            if good {
                acks.ok.push(run)
            } else {
                acks.failed.push(run)
            }
        };
        let mut t = 0;
        while t < self.tasks {
            let (w, _) = slot(t);
            let (here, good) = (self.here[w], self.good[w]);
            // A whole word that continues the open run (or holds nothing
            // while none is open) is passed over at once: batches are
            // mostly long runs.
            let whole = match open {
                None => here == 0,
                Some((_, true)) => here == !0 && good == !0,
                Some((_, false)) => here == !0 && good == 0,
            };
            if t % 64 == 0 && whole {
                t += 64;
                continue;
            }
            let state = self.get(t);
            match (open, state) {
                (Some((_, g)), Some(now)) if g == now => {}
                (Some((from, g)), _) => {
                    close(&mut acks, from..t, g);
                    open = state.map(|now| (t, now));
                }
                (None, Some(now)) => open = Some((t, now)),
                (None, None) => {}
            }
            t += 1;
        }
        if let Some((from, g)) = open {
            close(&mut acks, from..self.tasks, g);
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    // Lists of one range are what is meant here.
    #![allow(clippy::single_range_in_vec_init)]

    use super::*;

    #[test]
    fn the_first_result_wins_and_a_second_is_a_duplicate() {
        let mut r = Received::new(3);
        assert_eq!(r.insert(1, false), Insert::New);
        assert_eq!(r.insert(1, true), Insert::Duplicate { ok: false });
        assert_eq!(r.insert(0, true), Insert::New);
        assert_eq!(r.insert(0, false), Insert::Duplicate { ok: true });
        assert_eq!(r.insert(0, true), Insert::Duplicate { ok: true });
        assert_eq!((r.count(), r.ok(), r.failed()), (2, 1, 1));
        assert_eq!(r.duplicates(), 3);
        assert_eq!(r.get(1), Some(false));
        assert_eq!(r.get(2), None);
        assert_eq!(r.get(3), None, "beyond the batch");
        assert!(!r.is_complete());
        r.insert(2, true);
        assert!(r.is_complete());
    }

    #[test]
    fn the_snapshot_is_runs_of_ok_and_of_failed_ids_with_gaps_left_out() {
        let mut r = Received::new(10);
        for t in [0, 1, 2, 5, 6, 9] {
            r.insert(t, true);
        }
        for t in [3, 7] {
            r.insert(t, false);
        }
        let a = r.ranges();
        assert_eq!(
            a.ok,
            vec![0..3, 5..7, 9..10],
            "the last task closes its run"
        );
        assert_eq!(a.failed, vec![3..4, 7..8]);
    }

    #[test]
    fn an_empty_set_has_no_ranges_and_a_full_one_has_one() {
        let r = Received::new(1000);
        assert!(r.ranges().is_empty());
        let mut r = Received::new(1000);
        for t in 0..1000 {
            r.insert(t, true);
        }
        let a = r.ranges();
        assert_eq!((a.ok, a.failed), (vec![0..1000], vec![]));
    }

    #[test]
    fn ranges_agree_with_the_bits_across_word_boundaries() {
        // Runs that start, end and change kind at and around multiples of
        // 64, whole words of each kind, and a partial last word.
        let tasks = 64 * 5 + 7;
        let state = |t: u64| match t {
            0..64 => None,
            64..128 => Some(true),
            128..192 => Some(false),
            192..200 => Some(true),
            200..263 => None,
            263..300 => Some(false),
            _ => Some(t % 3 == 0),
        };
        let mut r = Received::new(tasks);
        for t in 0..tasks {
            if let Some(ok) = state(t) {
                r.insert(t, ok);
            }
        }
        let a = r.ranges();
        let mut back = vec![None; tasks as usize];
        for (ranges, ok) in [(&a.ok, true), (&a.failed, false)] {
            for range in ranges {
                for t in range.clone() {
                    back[t as usize] = Some(ok);
                }
            }
        }
        for t in 0..tasks {
            assert_eq!(back[t as usize], state(t), "task {t}");
        }
        // Runs are maximal: no two of a kind touch.
        for ranges in [&a.ok, &a.failed] {
            assert!(
                ranges.windows(2).all(|w| w[0].end < w[1].start),
                "{ranges:?}"
            );
        }
        assert_eq!(a.ok[0], 64..128);
        assert_eq!(a.failed[0], 128..192);
    }

    #[test]
    fn resume_ignores_ids_beyond_the_batch_and_counts_repeats_once() {
        let mut r = Received::new(5);
        let added = r.apply(&[0, 1, 1, 7, 99], &[2, 1, 4, 5]);
        assert_eq!(added, 4, "0, 1, 2, 4");
        assert_eq!((r.ok(), r.failed()), (2, 2));
        assert_eq!(r.get(1), Some(true), "the first of a repeat wins");
        assert_eq!(r.duplicates(), 0, "read back is not received twice");
        assert_eq!(r.insert(3, true), Insert::New);
        assert_eq!(r.insert(4, true), Insert::Duplicate { ok: false });
        assert!(r.is_complete());
    }
}
