//! The worker's Prometheus metrics (`--metrics ADDR`; served by
//! [`common::metrics`]).
//!
//! Counters are totals over the process's life (a `--serve` worker counts
//! every batch it worked on): one atomic add a task, on a counter resolved
//! once. (Adding a thread's counts up and flushing them when its queue runs
//! dry would save that add, but a short task queued before a long one would
//! then go uncounted for as long as the long one runs.) A thread is *busy*
//! from the first task it takes until its queue is empty again: the gauge
//! moves when a thread starts or stops working, not per task.

use common::metrics::{DropCounter, register_drops};
use common::work::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every status a task can end with, in the order of their wire bytes.
const STATUSES: [Status; 5] = [
    Status::Ok,
    Status::Failed,
    Status::TimedOut,
    Status::Panicked,
    Status::Rejected,
];

/// A task's status as the tasks counter labels it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// The worker's metric handles (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// By [`Status`] (its wire byte is the index).
    tasks: [Counter; 5],
    busy: Gauge,
    /// Given to each thread's `Drops` and the main thread's.
    pub(crate) dropped: DropCounter,
}

impl Metrics {
    /// Registers the worker's metrics (`zpipe_worker_…`); `threads` is
    /// `--threads`.
    pub(crate) fn register(r: &mut Registry, threads: u32) -> Metrics {
        let by_status = Family::<StatusLabel, Counter>::default();
        r.register(
            "tasks",
            "Tasks run, by how they ended: ok, failed, timed_out, panicked, rejected (unreadable)",
            by_status.clone(),
        );
        let count = |s: Status| by_status.get_or_create_owned(&StatusLabel { status: s.as_str() });
        let all: Gauge = Gauge::default();
        all.set(i64::from(threads));
        r.register(
            "threads",
            "Executor threads (--threads): tasks it can run at once",
            all,
        );
        let busy: Gauge = Gauge::default();
        r.register(
            "threads_busy",
            "Executor threads running a task or holding tasks to run",
            busy.clone(),
        );
        Metrics {
            tasks: STATUSES.map(count),
            busy,
            dropped: register_drops(r),
        }
    }
}

/// What one executor thread tells the metrics; dropped, it is no longer
/// busy.
#[derive(Debug)]
pub(crate) struct Observer {
    m: Metrics,
    busy: bool,
}

impl Observer {
    /// A thread's observer of `m`.
    pub(crate) fn new(m: &Metrics) -> Observer {
        Observer {
            m: m.clone(),
            busy: false,
        }
    }

    /// The thread takes a task from its queue.
    pub(crate) fn busy(&mut self) {
        if !self.busy {
            self.busy = true;
            self.m.busy.inc();
        }
    }

    /// A task ended with `status`.
    pub(crate) fn ran(&self, status: Status) {
        self.m.tasks[status as usize].inc();
    }

    /// The thread's queue is empty: it is no longer busy.
    pub(crate) fn idle(&mut self) {
        if self.busy {
            self.busy = false;
            self.m.busy.dec();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_counted_by_status_and_busy_follows_the_queue() {
        let m = Metrics::register(&mut Registry::default(), 2);
        let mut a = Observer::new(&m);
        let mut b = Observer::new(&m);
        a.busy();
        a.busy();
        b.busy();
        assert_eq!(m.busy.get(), 2, "each thread once");
        a.ran(Status::Ok);
        a.ran(Status::Ok);
        a.ran(Status::TimedOut);
        assert_eq!(m.tasks[0].get(), 2);
        assert_eq!(m.tasks[Status::TimedOut as usize].get(), 1);
        a.idle();
        a.idle();
        assert_eq!(m.busy.get(), 1, "each thread once");
        b.ran(Status::Failed);
        assert_eq!(m.tasks[Status::Failed as usize].get(), 1);
        drop(b);
        assert_eq!(m.busy.get(), 0, "a thread that ends is not busy");
        for (s, i) in STATUSES.iter().zip(0..) {
            assert_eq!(*s as usize, i, "the index is the wire byte");
        }
    }
}
