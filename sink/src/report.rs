//! The sink's end-of-batch report: built from what the sink saw, printed as
//! a table on stderr (or JSON for scripts), and written whole to
//! `--report`.

use std::collections::BTreeMap;
use std::time::Instant;

use common::drops::Drops;
use common::report::{Latency, Percentiles, table};
use serde::Serialize;

use crate::batch::Batch;
use crate::workers::Workers;
use crate::{Config, Error};

/// One worker's share of the batch.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// `host:pid`.
    pub worker: String,
    /// Tasks it runs at once.
    pub threads: u32,
    /// Results of it that were written.
    pub tasks: u64,
    /// Time its tasks ran, added up.
    pub busy_ms: f64,
    /// Percent of the batch's results that came from this worker.
    pub share_pct: f64,
}

/// What the sink saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The batch id in hex, once a ventilator announced one.
    pub batch: Option<String>,
    /// Whether every task's result arrived.
    pub complete: bool,
    /// Tasks in the batch.
    pub tasks: u64,
    /// Results that were ok.
    pub ok: u64,
    /// Results that were not (failed, timed out, panicked, rejected, given
    /// up).
    pub failed: u64,
    /// Of the results, those read back from the output (`--resume`, or a
    /// standing pool's batch file): an earlier sink received them. The
    /// times and rates below speak of the rest, received by this sink.
    pub read_back: u64,
    /// Results that arrived more than once and were dropped.
    pub duplicates: u64,
    /// Messages dropped by reason (garbage, wrong version, foreign batch, ...).
    pub dropped: BTreeMap<String, u64>,
    /// From the first task sent (GO, or earlier if a result shows its task
    /// began before GO came) to the last result (or to the stop): never
    /// shorter than a task's run time. After a restart, from this sink's
    /// GO: the part of the batch it saw.
    pub elapsed_ms: f64,
    /// Sum of the known task costs (`sleep` workloads).
    pub expected_ms: f64,
    /// Threads of the workers that took part.
    pub threads: u64,
    /// expected / threads: the time a perfect dispatcher would take.
    pub ideal_ms: Option<f64>,
    /// How much longer than ideal the batch took, in percent (only for a
    /// whole batch seen by this sink: not after a restart).
    pub overhead_pct: Option<f64>,
    /// Results received per second of elapsed time.
    pub tasks_per_s: f64,
    /// From the ventilator sending a task to the sink receiving its result
    /// (clocks of both hosts; exact on one host).
    pub latency: Percentiles,
    /// Time the task body ran on its worker.
    pub run_time: Percentiles,
    /// Each worker that took part (ready at GO, or did work), by name;
    /// then, so that the rows add up to the results, `(read back)` for the
    /// results an earlier sink wrote and `(others)` for those no worker
    /// known to this sink sent (tasks given up, workers it never heard).
    pub workers: Vec<WorkerRow>,
    /// Workers that fell silent (no heartbeat for `--worker-timeout`) and did
    /// not come back.
    pub lost: Vec<String>,
}

impl Report {
    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let state = if self.complete {
            "complete"
        } else {
            "INCOMPLETE (stopped early)"
        };
        let batch = self.batch.as_deref().unwrap_or("-");
        s.push_str(&format!("zpipe sink: batch {batch} {state}\n"));
        let results = self.ok + self.failed;
        let received = if self.read_back > 0 {
            format!(
                "{results} of {} ({} read back from the output, {} received now)",
                self.tasks,
                self.read_back,
                results - self.read_back.min(results)
            )
        } else {
            format!("{results} received of {}", self.tasks)
        };
        let elapsed = if self.read_back > 0 {
            format!(
                "{:.1} ms, since this sink took the batch up again (the times below are of the results received now)",
                self.elapsed_ms
            )
        } else {
            format!("{:.1} ms", self.elapsed_ms)
        };
        let mut rows: Vec<Vec<String>> = vec![
            vec![
                "tasks".into(),
                format!("{} ok, {} failed, {received}", self.ok, self.failed),
            ],
            vec!["elapsed".into(), elapsed],
        ];
        if let (Some(ideal), Some(over)) = (self.ideal_ms, self.overhead_pct) {
            rows.push(vec![
                "expected cost".into(),
                format!("{:.0} ms (sum of sleep workloads)", self.expected_ms),
            ]);
            rows.push(vec![
                "ideal".into(),
                format!("{ideal:.1} ms (expected / {} threads)", self.threads),
            ]);
            rows.push(vec![
                "overhead".into(),
                format!("{over:+.1} % against ideal"),
            ]);
        }
        rows.push(vec![
            "throughput".into(),
            format!("{:.0} tasks/s", self.tasks_per_s),
        ]);
        rows.push(vec!["latency".into(), self.latency.to_string()]);
        rows.push(vec!["run time".into(), self.run_time.to_string()]);
        if self.duplicates > 0 {
            rows.push(vec![
                "duplicates".into(),
                format!("{} dropped", self.duplicates),
            ]);
        }
        if !self.lost.is_empty() {
            rows.push(vec!["lost workers".into(), self.lost.join(", ")]);
        }
        if !self.dropped.is_empty() {
            let list: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            rows.push(vec!["dropped".into(), list.join(", ")]);
        }
        for row in &rows {
            s.push_str(&format!("  {:<14} {}\n", row[0], row[1]));
        }
        if !self.workers.is_empty() {
            let mut t = vec![vec![
                "worker".into(),
                "threads".into(),
                "tasks".into(),
                "busy ms".into(),
                "share".into(),
            ]];
            for w in &self.workers {
                t.push(vec![
                    w.worker.clone(),
                    w.threads.to_string(),
                    w.tasks.to_string(),
                    format!("{:.1}", w.busy_ms),
                    format!("{:.1} %", w.share_pct),
                ]);
            }
            s.push_str(&table(&t));
        }
        s
    }
}

/// What the report measures of each result: its latency and run time.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    latency: Latency,
    run_time: Latency,
}

impl Timings {
    /// Records a result's run time and, when the ventilator's clock said
    /// when its task left (`sent_us`, µs since the epoch, like `now_us`),
    /// its latency, which it returns.
    pub(crate) fn record(&mut self, sent_us: u64, duration_us: u64, now_us: u64) -> Option<u64> {
        let latency_us = (sent_us != 0 && now_us >= sent_us).then(|| now_us - sent_us);
        if let Some(us) = latency_us {
            self.latency.record_us(us);
        }
        self.run_time.record_us(duration_us);
        latency_us
    }
}

/// The report of `batch` (none announced: an empty one), as of `now`.
pub(crate) fn build(
    batch: Option<&Batch>,
    workers: &Workers,
    drops: &Drops,
    timings: &Timings,
    now: Instant,
) -> Report {
    let complete = batch.is_some_and(Batch::is_complete);
    let (tasks, ok, failed, duplicates, elapsed, expected, read_back) = match batch {
        Some(b) => {
            let r = b.received();
            (
                b.info().tasks,
                r.ok(),
                r.failed(),
                r.duplicates(),
                b.elapsed(now),
                b.info().expected_ms,
                b.read_back(),
            )
        }
        None => (0, 0, 0, 0, std::time::Duration::ZERO, 0, 0),
    };
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    let results = ok + failed;
    let now_received = results - read_back.min(results);
    let (threads, mut shares) = workers.shares(results);
    // The rows add up to the results: what an earlier sink wrote, and what
    // came from no worker this sink knows, have rows of their own.
    let by_workers: u64 = shares.iter().map(|w| w.tasks).sum();
    let others = now_received.saturating_sub(by_workers);
    for (name, n) in [("(read back)", read_back), ("(others)", others)] {
        if n > 0 {
            shares.push(WorkerRow {
                worker: name.into(),
                threads: 0,
                tasks: n,
                busy_ms: 0.0,
                share_pct: n as f64 / results.max(1) as f64 * 100.0,
            });
        }
    }
    // Ideal and overhead speak of a whole batch, seen whole by this sink.
    let ideal_ms = (complete && read_back == 0 && expected > 0 && threads > 0)
        .then(|| expected as f64 / threads as f64);
    let overhead_pct = ideal_ms
        .filter(|_| elapsed_ms > 0.0)
        .map(|i| (elapsed_ms - i) / i * 100.0);
    let dropped: BTreeMap<String, u64> = drops
        .by_reason()
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Report {
        batch: batch.map(|b| b.hex().to_owned()),
        complete,
        tasks,
        ok,
        failed,
        read_back,
        duplicates,
        dropped,
        elapsed_ms,
        expected_ms: expected as f64,
        threads,
        ideal_ms,
        overhead_pct,
        tasks_per_s: if elapsed_ms > 0.0 {
            now_received as f64 / (elapsed_ms / 1000.0)
        } else {
            0.0
        },
        latency: timings.latency.percentiles(),
        run_time: timings.run_time.percentiles(),
        workers: shares,
        lost: workers.lost(),
    }
}

/// Prints the report on stderr (a table, or JSON with `--json`) and writes
/// `--report`, whole or not at all.
pub fn print_report(config: &Config, report: &Report) -> Result<(), Error> {
    if config.json {
        let json = serde_json::to_string(report).map_err(std::io::Error::other)?;
        eprintln!("{json}");
    } else if !config.classic {
        eprint!("{}", report.table());
    }
    if let Some(path) = &config.report {
        common::report::write_json_file(path, report).map_err(|source| Error::OpenOutput {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{BatchInfo, Dispatch, WorkerInfo};
    use std::time::Duration;

    #[test]
    fn latency_is_known_only_from_a_clock_that_said_when_the_task_left() {
        let mut t = Timings::default();
        assert_eq!(t.record(1_000, 5, 1_250), Some(250));
        assert_eq!(t.record(0, 5, 1_250), None, "no send time");
        assert_eq!(t.record(2_000, 5, 1_250), None, "clocks disagree");
        assert_eq!(t.latency.count(), 1);
        assert_eq!(t.run_time.count(), 3);
    }

    #[test]
    fn a_complete_batch_reports_its_ideal_and_overhead() {
        let t0 = Instant::now();
        let mut b = Batch::new(
            BatchInfo {
                batch: 0xab,
                tasks: 4,
                expected_ms: 400,
                dispatch: Dispatch::Push,
                resync: false,
            },
            None,
        );
        let mut workers = Workers::new(Duration::from_secs(3));
        let info = WorkerInfo {
            id: 1,
            host: "h".into(),
            pid: 1,
            threads: 2,
            dispatch: Dispatch::Push,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        };
        workers
            .heard(crate::workers::Said::Hello, info, t0, false)
            .unwrap();
        b.go(t0);
        workers.batch_started(t0);
        let mut drops = Drops::default();
        drops.note("results", "garbage", "x");
        let timings = Timings::default();
        let r = build(Some(&b), &workers, &drops, &timings, t0);
        assert!(!r.complete && r.ideal_ms.is_none(), "{r:?}");
        for t in 0..4 {
            b.insert(t, t != 3);
            workers.did(1, 1000);
        }
        let r = build(Some(&b), &workers, &drops, &timings, t0);
        assert!(r.complete);
        assert_eq!((r.ok, r.failed, r.threads), (3, 1, 2));
        assert_eq!(r.ideal_ms, Some(200.0));
        assert_eq!(r.batch.as_deref(), Some("00000000000000ab"));
        assert_eq!(r.dropped["garbage"], 1);
        assert_eq!(r.workers[0].share_pct, 100.0);
        let empty = build(None, &workers, &Drops::default(), &timings, t0);
        assert!(!empty.complete && empty.batch.is_none() && empty.dropped.is_empty());
    }

    #[test]
    fn after_a_restart_the_report_splits_read_back_from_received_and_its_rows_add_up() {
        let t0 = Instant::now();
        let resumed = crate::output::Resumed {
            batch: 0xab,
            ok: vec![0, 1, 2],
            failed: vec![3],
        };
        let info = BatchInfo {
            batch: 0xab,
            tasks: 10,
            expected_ms: 1000,
            dispatch: Dispatch::Credit,
            resync: false,
        };
        let mut b = Batch::new(info, Some(resumed));
        let mut workers = Workers::new(Duration::from_secs(3));
        let info = WorkerInfo {
            id: 1,
            host: "h".into(),
            pid: 1,
            threads: 2,
            dispatch: Dispatch::Credit,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        };
        workers
            .heard(crate::workers::Said::Hello, info, t0, false)
            .unwrap();
        b.go(t0);
        workers.batch_started(t0);
        // Five from the worker we know, one given up (from no worker).
        for t in 4..9 {
            b.insert(t, true);
            workers.did(1, 1000);
        }
        b.insert(9, false);
        let r = build(
            Some(&b),
            &workers,
            &Drops::default(),
            &Timings::default(),
            t0,
        );
        assert!(r.complete);
        assert_eq!((r.ok, r.failed, r.read_back), (8, 2, 4));
        let rows: Vec<(&str, u64)> = r.workers.iter().map(|w| (&w.worker[..], w.tasks)).collect();
        assert_eq!(rows, vec![("h:1", 5), ("(read back)", 4), ("(others)", 1)]);
        assert_eq!(
            r.workers.iter().map(|w| w.tasks).sum::<u64>(),
            r.ok + r.failed
        );
        // Only part of the batch was seen: no ideal, no overhead; and the
        // table says so.
        assert_eq!((r.ideal_ms, r.overhead_pct), (None, None));
        let table = r.table();
        assert!(
            table.contains("10 of 10 (4 read back from the output, 6 received now)"),
            "{table}"
        );
        assert!(
            table.contains("since this sink took the batch up again"),
            "{table}"
        );
        assert!(!table.contains("overhead"), "{table}");
    }
}
