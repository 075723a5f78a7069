//! The sink's Prometheus metrics (`--metrics ADDR`; served by
//! [`common::metrics`]).
//!
//! Counters are totals over the process's life, so a standing sink
//! (`--serve`) counts every batch it collected; gauges describe the batch
//! being collected (or the last one, until the next is announced). Results
//! are counted where they are accepted (one atomic add each) and timed into
//! two histograms batched in the loop (see [`common::metrics`]: no lock
//! per result), which are moved into the shared ones between bursts of
//! messages, where the gauges are set too.
//!
//! The batch id is a label of one series only, `zpipe_sink_batch_info`,
//! which names the current batch and is replaced by the next one: a label
//! per batch on every series would grow without bound on a standing pool.

use std::time::{Duration, Instant};

use common::metrics::{DropCounter, SecondsBatch, SecondsHistogram, register_drops};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::batch::Batch;
use crate::workers::Workers;

/// A result's status as the results counter labels it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

/// The batch being collected, as its one info series labels it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchId {
    batch: String,
}

/// The sink's metric handles (cheap to clone: each is shared).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    ok: Counter,
    failed: Counter,
    duplicate: Counter,
    /// Given to each collector's `Drops`.
    pub(crate) dropped: DropCounter,
    latency: SecondsHistogram,
    run_time: SecondsHistogram,
    batches: Counter,
    batch_tasks: Gauge,
    batch_results: Gauge,
    batch_info: Family<BatchId, Gauge>,
    workers_ready: Gauge,
}

impl Metrics {
    /// Registers the sink's metrics (`zpipe_sink_…`).
    pub(crate) fn register(r: &mut Registry) -> Metrics {
        let results = Family::<Status, Counter>::default();
        r.register(
            "results",
            "Results accepted, by status: ok, failed (a task the ventilator gave up counts as failed), or duplicate (a task's result that came again, dropped)",
            results.clone(),
        );
        let status = |status| results.get_or_create_owned(&Status { status });
        let m = Metrics {
            ok: status("ok"),
            failed: status("failed"),
            duplicate: status("duplicate"),
            dropped: register_drops(r),
            latency: SecondsHistogram::default(),
            run_time: SecondsHistogram::default(),
            batches: Counter::default(),
            batch_tasks: Gauge::default(),
            batch_results: Gauge::default(),
            batch_info: Family::default(),
            workers_ready: Gauge::default(),
        };
        r.register_with_unit(
            "task_latency",
            "From the ventilator sending a task to the sink receiving its result (the clocks of both hosts; exact on one host)",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register_with_unit(
            "task_run",
            "Time a task's body ran on its worker",
            Unit::Seconds,
            m.run_time.clone(),
        );
        r.register("batches", "Batches collected whole", m.batches.clone());
        r.register(
            "batch_tasks",
            "Tasks in the batch being collected (or the last one)",
            m.batch_tasks.clone(),
        );
        r.register(
            "batch_results",
            "Results of that batch in so far, each task once (ok or failed)",
            m.batch_results.clone(),
        );
        r.register(
            "batch_info",
            "The batch being collected (or the last one), by its id: always 1",
            m.batch_info.clone(),
        );
        r.register(
            "workers_ready",
            "Workers heard from within their cutoff (--worker-timeout)",
            m.workers_ready.clone(),
        );
        m
    }
}

/// How often the gauges that cost a look at every worker are set.
const GAUGES_EVERY: Duration = Duration::from_millis(100);

/// What one collector tells the metrics.
#[derive(Debug)]
pub(crate) struct Observer {
    m: Metrics,
    latency: SecondsBatch,
    run_time: SecondsBatch,
    next_gauges: Instant,
}

impl Observer {
    /// A collector's observer of `m`.
    pub(crate) fn new(m: &Metrics) -> Observer {
        Observer {
            m: m.clone(),
            latency: SecondsBatch::default(),
            run_time: SecondsBatch::default(),
            next_gauges: Instant::now(),
        }
    }

    /// The drop counter, for the collector's `Drops`.
    pub(crate) fn dropped(&self) -> DropCounter {
        self.m.dropped.clone()
    }

    /// A result accepted: its status, latency and run time (a verdict of
    /// the ventilator's ran nowhere: no run time).
    pub(crate) fn result(&mut self, ok: bool, latency_us: Option<u64>, run_us: Option<u64>) {
        if ok {
            self.m.ok.inc();
        } else {
            self.m.failed.inc();
        }
        if let Some(us) = latency_us {
            self.latency.observe_us(us);
        }
        if let Some(us) = run_us {
            self.run_time.observe_us(us);
        }
    }

    /// A result that came again.
    pub(crate) fn duplicate(&self) {
        self.m.duplicate.inc();
    }

    /// A batch was announced: it is the one the gauges describe.
    pub(crate) fn announced(&self, batch: &Batch) {
        self.m.batch_info.clear();
        self.m
            .batch_info
            .get_or_create(&BatchId {
                batch: batch.hex().to_owned(),
            })
            .set(1);
        self.m.batch_tasks.set(gauge(batch.info().tasks));
        self.m.batch_results.set(gauge(batch.received().count()));
    }

    /// Between bursts: the timings and the batch's results at once, the
    /// workers every [`GAUGES_EVERY`].
    pub(crate) fn tick(&mut self, batch: Option<&Batch>, workers: &Workers, now: Instant) {
        self.latency.move_into(&self.m.latency);
        self.run_time.move_into(&self.m.run_time);
        if let Some(b) = batch {
            self.m.batch_results.set(gauge(b.received().count()));
        }
        if now >= self.next_gauges {
            self.next_gauges = now + GAUGES_EVERY;
            self.m.workers_ready.set(gauge(workers.alive(now) as u64));
        }
    }

    /// The batch ended: collected whole, or not.
    pub(crate) fn ended(&mut self, batch: Option<&Batch>, workers: &Workers) {
        self.next_gauges = Instant::now();
        self.tick(batch, workers, Instant::now());
        if batch.is_some_and(Batch::is_complete) {
            self.m.batches.inc();
        }
    }
}

/// A count as a gauge's value.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
