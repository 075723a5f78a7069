//! The ventilator's Prometheus metrics (`--metrics ADDR`; served by
//! [`common::metrics`]).
//!
//! The ventilator runs one batch per process, so its counters are that
//! batch's totals and its gauges that batch's state. Nothing is counted per
//! task: the loop already counts what it sends, re-sends, gives up and
//! hears acknowledged (the report, the ledger), and those counts are copied
//! into the metrics every 100 ms, with the loop's other periodic chores,
//! and once more when the batch ends.

use common::metrics::{DropCounter, Mirror, register_drops};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The batch, as its one info series labels it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchId {
    batch: String,
}

/// The ventilator's metric handles (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    sent: Counter,
    resent: Counter,
    given_up: Counter,
    acknowledged: Counter,
    workers_lost: Counter,
    /// Given to the batch's `Drops`.
    pub(crate) dropped: DropCounter,
    workers_ready: Gauge,
    threads_ready: Gauge,
    in_flight: Gauge,
    batch_tasks: Gauge,
    batch_info: Family<BatchId, Gauge>,
}

impl Metrics {
    /// Registers the ventilator's metrics (`zpipe_ventilator_…`).
    pub(crate) fn register(r: &mut Registry) -> Metrics {
        let m = Metrics {
            sent: Counter::default(),
            resent: Counter::default(),
            given_up: Counter::default(),
            acknowledged: Counter::default(),
            workers_lost: Counter::default(),
            dropped: register_drops(r),
            workers_ready: Gauge::default(),
            threads_ready: Gauge::default(),
            in_flight: Gauge::default(),
            batch_tasks: Gauge::default(),
            batch_info: Family::default(),
        };
        r.register(
            "tasks_sent",
            "Tasks sent to workers, re-sends included",
            m.sent.clone(),
        );
        r.register(
            "tasks_resent",
            "Tasks sent again (their worker died or left, their lease ran out, the sink restarted)",
            m.resent.clone(),
        );
        r.register(
            "tasks_given_up",
            "Tasks given up after their last attempt, or failed by a failed dependency (the sink records them failed)",
            m.given_up.clone(),
        );
        r.register(
            "tasks_acknowledged",
            "Tasks whose result the sink has acknowledged",
            m.acknowledged.clone(),
        );
        r.register(
            "workers_lost",
            "Workers declared dead (silent, gone, or lost by the sink)",
            m.workers_lost.clone(),
        );
        r.register(
            "workers_ready",
            "Workers ready to take tasks (heard by the ventilator in credit dispatch, by the sink in push dispatch)",
            m.workers_ready.clone(),
        );
        r.register(
            "threads_ready",
            "Worker threads of the ready workers (in credit dispatch, those that asked for tasks)",
            m.threads_ready.clone(),
        );
        r.register(
            "tasks_in_flight",
            "Tasks sent and not yet acknowledged",
            m.in_flight.clone(),
        );
        r.register("batch_tasks", "Tasks in the batch", m.batch_tasks.clone());
        r.register(
            "batch_info",
            "The batch, by its id: always 1",
            m.batch_info.clone(),
        );
        m
    }
}

/// The loop's counts, as the metrics take them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub sent: u64,
    pub resent: u64,
    pub given_up: u64,
    pub acknowledged: u64,
    pub workers_lost: u64,
    pub workers_ready: u64,
    pub threads_ready: u64,
    pub in_flight: u64,
}

/// What one batch tells the metrics.
#[derive(Debug)]
pub(crate) struct Observer {
    m: Metrics,
    sent: Mirror,
    resent: Mirror,
    given_up: Mirror,
    acknowledged: Mirror,
    acked_most: u64,
    workers_lost: Mirror,
}

impl Observer {
    /// The observer of batch `hex` of `tasks` tasks.
    pub(crate) fn new(m: &Metrics, hex: &str, tasks: u64) -> Observer {
        m.batch_tasks.set(gauge(tasks));
        m.batch_info.clear();
        m.batch_info
            .get_or_create(&BatchId {
                batch: hex.to_owned(),
            })
            .set(1);
        Observer {
            m: m.clone(),
            sent: Mirror::new(m.sent.clone()),
            resent: Mirror::new(m.resent.clone()),
            given_up: Mirror::new(m.given_up.clone()),
            acknowledged: Mirror::new(m.acknowledged.clone()),
            acked_most: 0,
            workers_lost: Mirror::new(m.workers_lost.clone()),
        }
    }

    /// The drop counter, for the batch's `Drops`.
    pub(crate) fn dropped(&self) -> DropCounter {
        self.m.dropped.clone()
    }

    /// The loop's counts now.
    pub(crate) fn update(&mut self, c: Counts) {
        self.sent.set(c.sent);
        self.resent.set(c.resent);
        self.given_up.set(c.given_up);
        // A sink that restarted may take back acknowledgements it lost; the
        // counter keeps the most there were, so each task counts once.
        self.acked_most = self.acked_most.max(c.acknowledged);
        self.acknowledged.set(self.acked_most);
        self.workers_lost.set(c.workers_lost);
        self.m.workers_ready.set(gauge(c.workers_ready));
        self.m.threads_ready.set(gauge(c.threads_ready));
        self.m.in_flight.set(gauge(c.in_flight));
    }
}

/// A count as a gauge's value.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
