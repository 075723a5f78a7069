//! How long the worker has been idle, for `--idle-exit`.
//!
//! A pilot in a cluster holds an allocation: once no batch has come for a
//! while it should give it back. The executor threads say when a task
//! begins and ends; the main thread asks how long every thread has had
//! nothing to do. Two atomics, so the hot path pays one relaxed store and
//! two counter updates a task, and no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tasks running now, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    running: AtomicU32,
    /// Microseconds after `base` when a task last ended (or the worker
    /// started).
    last_us: AtomicU64,
}

impl Activity {
    /// Idle since `now`.
    pub fn new(now: Instant) -> Activity {
        Activity {
            base: now,
            running: AtomicU32::new(0),
            last_us: AtomicU64::new(0),
        }
    }

    /// A task begins.
    pub fn begin(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A task ended at `now`.
    pub fn end(&self, now: Instant) {
        let us = now.saturating_duration_since(self.base).as_micros() as u64;
        self.last_us.fetch_max(us, Ordering::Relaxed);
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long no task has run, at `now`; zero while one runs.
    pub fn idle_for(&self, now: Instant) -> Duration {
        if self.running.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.base + Duration::from_micros(self.last_us.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_counts_from_the_start_and_from_the_last_task_end() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.idle_for(t0 + 5 * S), 5 * S, "idle since the start");
        a.begin();
        assert_eq!(a.idle_for(t0 + 60 * S), Duration::ZERO, "a task runs");
        a.end(t0 + 61 * S);
        assert_eq!(a.idle_for(t0 + 64 * S), 3 * S);
    }

    #[test]
    fn one_busy_thread_of_several_keeps_the_worker_busy() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        a.begin();
        a.begin();
        a.end(t0 + 2 * S);
        assert_eq!(a.idle_for(t0 + 100 * S), Duration::ZERO);
        // Ends reported out of order: the latest counts.
        a.end(t0 + S);
        assert_eq!(a.idle_for(t0 + 4 * S), 2 * S);
    }
}
