//! What a push worker holds: the tasks its threads have taken off the task
//! socket and not yet sent the result of (queued, running, or packed).
//!
//! A PUSH ventilator cannot tell who holds what, so when the sink loses a
//! worker every unacknowledged task goes out again. The worker says in each
//! HEARTBEAT (and its BYE) what it holds, the sink passes the last of it on
//! with WORKER_LOST, and the ventilator charges only those tasks against
//! `--retries`: a task that waited on a live worker is sent again but not
//! counted as lost. (Tasks still in a socket's pipe are known to nobody:
//! they go out again uncharged.)
//!
//! One small lock per thread, taken once a task on the way in and once a
//! result message on the way out, only in push dispatch; the main thread
//! takes each lock once a heartbeat.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The tasks (`[batch, task]`) each thread holds, in the order it took
/// them.
#[derive(Debug, Default)]
pub(crate) struct Held {
    threads: Vec<Mutex<VecDeque<[u64; 2]>>>,
}

impl Held {
    /// Nothing held yet by `threads` threads.
    pub fn new(threads: usize) -> Held {
        Held {
            threads: (0..threads).map(|_| Mutex::default()).collect(),
        }
    }

    /// Thread `thread` took task `task` of `batch`.
    pub fn took(&self, thread: usize, batch: u64, task: u64) {
        if let Some(m) = self.threads.get(thread) {
            lock(m).push_back([batch, task]);
        }
    }

    /// Thread `thread` sent the results of `tasks` of `batch`.
    pub fn sent(&self, thread: usize, batch: u64, tasks: &[u64]) {
        let Some(m) = self.threads.get(thread) else {
            return;
        };
        let mut held = lock(m);
        // A thread runs its tasks in the order it took them, so its results
        // leave in that order: they are the first it holds (a pack of a
        // thousand is let go at once, not searched for one by one).
        let n = tasks.len();
        let first = held.iter().take(n).map(|&[b, t]| (b, t));
        if held.len() >= n && first.eq(tasks.iter().map(|&t| (batch, t))) {
            held.drain(..n);
        } else {
            let gone: HashSet<u64> = tasks.iter().copied().collect();
            held.retain(|[b, t]| *b != batch || !gone.contains(t));
        }
    }

    /// Everything held now, for a HEARTBEAT or a BYE.
    pub fn all(&self) -> Vec<[u64; 2]> {
        let mut all = Vec::new();
        for m in &self.threads {
            all.extend(lock(m).iter().copied());
        }
        all
    }
}

/// A poisoned lock (a thread panicked holding it) still holds the truth.
fn lock(m: &Mutex<VecDeque<[u64; 2]>>) -> std::sync::MutexGuard<'_, VecDeque<[u64; 2]>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_held_from_taken_to_sent_by_its_own_thread() {
        let h = Held::new(2);
        h.took(0, 7, 1);
        h.took(0, 7, 2);
        h.took(1, 7, 3);
        h.took(1, 8, 1);
        let mut all = h.all();
        all.sort();
        assert_eq!(all, vec![[7, 1], [7, 2], [7, 3], [8, 1]]);
        // Sent by thread 0: its own of batch 7 go; task 1 of batch 8 stays.
        h.sent(0, 7, &[1, 2]);
        h.sent(1, 7, &[1]);
        let mut all = h.all();
        all.sort();
        assert_eq!(all, vec![[7, 3], [8, 1]]);
        h.sent(1, 8, &[1]);
        h.sent(1, 7, &[3]);
        assert!(h.all().is_empty());
        // A thread that does not exist changes nothing.
        h.took(5, 7, 9);
        assert!(h.all().is_empty());
    }

    #[test]
    fn results_leaving_in_order_or_not_let_go_of_exactly_their_tasks() {
        let h = Held::new(1);
        for t in 0..1000 {
            h.took(0, 1, t);
        }
        // In the order taken: the first ones.
        h.sent(0, 1, &(0..600).collect::<Vec<_>>());
        assert_eq!(h.all(), (600..1000).map(|t| [1, t]).collect::<Vec<_>>());
        // Out of order, or of tasks held under another batch.
        h.sent(0, 1, &[999, 700, 650]);
        h.sent(0, 2, &[601]);
        let left = h.all();
        assert_eq!(left.len(), 397);
        assert!(!left.contains(&[1, 999]) && !left.contains(&[1, 700]));
        assert!(left.contains(&[1, 601]) && left.contains(&[1, 998]));
        h.sent(0, 1, &left.iter().map(|[_, t]| *t).collect::<Vec<_>>());
        assert!(h.all().is_empty());
    }
}
