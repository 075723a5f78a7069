//! The sink's end-of-batch report: a table on stderr, or JSON for scripts.

use std::collections::BTreeMap;

use common::report::{Percentiles, table};
use serde::Serialize;

/// One worker's share of the batch.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub worker: String,
    pub threads: u32,
    pub tasks: u64,
    pub busy_ms: f64,
    /// Percent of the batch's results that came from this worker.
    pub share_pct: f64,
}

/// What the sink saw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The batch id in hex, once a ventilator announced one.
    pub batch: Option<String>,
    /// Whether every task's result arrived.
    pub complete: bool,
    pub tasks: u64,
    pub ok: u64,
    pub failed: u64,
    /// Results that arrived more than once and were dropped.
    pub duplicates: u64,
    /// Messages dropped by reason (garbage, wrong version, foreign batch, ...).
    pub dropped: BTreeMap<String, u64>,
    pub elapsed_ms: f64,
    /// Sum of the known task costs (`sleep` workloads).
    pub expected_ms: f64,
    /// Threads of the workers that took part.
    pub threads: u64,
    /// expected / threads: the time a perfect dispatcher would take.
    pub ideal_ms: Option<f64>,
    /// How much longer than ideal the batch took, in percent.
    pub overhead_pct: Option<f64>,
    pub tasks_per_s: f64,
    /// From the ventilator sending a task to the sink receiving its result
    /// (clocks of both hosts; exact on one host).
    pub latency: Percentiles,
    /// Time the task body ran on its worker.
    pub run_time: Percentiles,
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
        let mut rows: Vec<Vec<String>> = vec![
            vec![
                "tasks".into(),
                format!(
                    "{} ok, {} failed, {} received of {}",
                    self.ok,
                    self.failed,
                    self.ok + self.failed,
                    self.tasks
                ),
            ],
            vec!["elapsed".into(), format!("{:.1} ms", self.elapsed_ms)],
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
