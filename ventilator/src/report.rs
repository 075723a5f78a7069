//! What the ventilator did, as `--report` writes it (JSON, through
//! `common::report::write_json_file`).

use std::collections::BTreeMap;

use common::drops::Drops;
use common::protocol::{BatchDone, Dispatch};
use serde::Serialize;

/// What the ventilator did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The batch id in hex (`classic` in classic mode).
    pub batch: String,
    /// How tasks were handed out.
    pub dispatch: Dispatch,
    /// Tasks in the batch.
    pub tasks: u64,
    /// Task messages sent, re-sends included.
    pub sent: u64,
    /// Tasks sent again (worker dead, lease out, sink restarted).
    pub resent: u64,
    /// Tasks given up after their last attempt, or failed by a failed
    /// dependency; the sink was told each (GIVEN_UP) with the reason.
    pub given_up: u64,
    /// Workers declared dead during the batch.
    pub workers_lost: u64,
    /// Messages dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Workers ready when the batch started.
    pub workers: usize,
    /// Time spent waiting for the sink and workers.
    pub wait_ms: f64,
    /// Time from the first task sent to the last.
    pub send_ms: f64,
    /// Set when the ventilator stopped waiting for a sink silent this long
    /// (ms) after every task had gone out: the batch may be incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink_silent_ms: Option<f64>,
    /// The sink's DONE, when it came (written with its batch id in hex,
    /// like `batch` above, not as DONE's number).
    #[serde(serialize_with = "done_in_hex")]
    pub done: Option<BatchDone>,
}

/// Writes DONE as the report shows it: the same fields, the batch id in hex.
fn done_in_hex<S: serde::Serializer>(done: &Option<BatchDone>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Done<'a> {
        batch: String,
        ok: u64,
        failed: u64,
        elapsed_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: &'a Option<String>,
    }
    let done = done.as_ref().map(|d| Done {
        batch: format!("{:016x}", d.batch),
        ok: d.ok,
        failed: d.failed,
        elapsed_ms: d.elapsed_ms,
        output: &d.output,
    });
    done.serialize(s)
}

impl Report {
    /// A report of nothing done yet.
    pub(crate) fn new(batch: String, dispatch: Dispatch, tasks: u64) -> Report {
        Report {
            batch,
            dispatch,
            tasks,
            sent: 0,
            resent: 0,
            given_up: 0,
            workers_lost: 0,
            dropped: BTreeMap::new(),
            workers: 0,
            wait_ms: 0.0,
            send_ms: 0.0,
            sink_silent_ms: None,
            done: None,
        }
    }

    /// One line for whoever submitted the batch: its id, whether it is
    /// complete, how many tasks failed, and where the results are.
    pub fn summary(&self) -> String {
        let Some(done) = &self.done else {
            if let Some(ms) = self.sink_silent_ms {
                return format!(
                    "batch {}: may not be complete: every task went out, then the sink said nothing for {:.0} s",
                    self.batch,
                    ms / 1000.0
                );
            }
            return format!(
                "batch {}: not complete ({} of {} tasks sent)",
                self.batch, self.sent, self.tasks
            );
        };
        let mut line = format!(
            "batch {}: complete, {} ok, {} failed, in {:.1} ms",
            self.batch, done.ok, done.failed, done.elapsed_ms
        );
        if let Some(output) = &done.output {
            line.push_str("; results in ");
            line.push_str(output);
        }
        line
    }

    /// Takes the drop counts, leaving out reasons never seen.
    pub(crate) fn count_drops(&mut self, drops: &Drops) {
        self.dropped = drops
            .by_reason()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
    }
}

/// The ventilator binary's exit codes, for scripts that submit batches.
///
/// | code | meaning |
/// |---|---|
/// | 0 | the batch is complete and every task succeeded |
/// | 1 | not complete: an error (no sink, no workers, the sink refused or is busy) |
/// | 2 | not started: a usage error (bad flag, bad input, a port in use) |
/// | 3 | the batch is complete, and some tasks failed (failed, timed out, rejected, panicked or given up) |
/// | 4 | may not be complete: every task went out, then the sink fell silent for `--sink-timeout` |
/// | 130 | not complete: stopped by a signal before the sink said DONE |
pub mod exit {
    /// Complete, every task ok.
    pub const ALL_OK: u8 = 0;
    /// Complete, some tasks failed.
    pub const SOME_FAILED: u8 = 3;
    /// Every task went out, then the sink fell silent for `--sink-timeout`.
    pub const SINK_SILENT: u8 = 4;
    /// Stopped before the sink said DONE.
    pub const STOPPED: u8 = 130;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_the_batch_id_in_hex_at_the_top_and_under_done() {
        let mut r = Report::new(format!("{:016x}", 0xabu64), Dispatch::Credit, 10);
        r.done = Some(BatchDone {
            batch: 0xab,
            ok: 10,
            failed: 0,
            elapsed_ms: 1.5,
            output: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["batch"], "00000000000000ab");
        assert_eq!(v["done"]["batch"], v["batch"]);
        assert_eq!(v["done"]["ok"], 10);
        assert!(v["done"].get("output").is_none());
        r.done = None;
        assert!(serde_json::to_value(&r).unwrap()["done"].is_null());
    }

    #[test]
    fn the_summary_names_the_batch_its_outcome_and_its_results() {
        let mut r = Report::new("00ab".into(), Dispatch::Credit, 10);
        r.sent = 4;
        assert_eq!(r.summary(), "batch 00ab: not complete (4 of 10 tasks sent)");
        r.done = Some(BatchDone {
            batch: 0xab,
            ok: 9,
            failed: 1,
            elapsed_ms: 12.34,
            output: Some("/srv/out/00ab.jsonl".into()),
        });
        assert_eq!(
            r.summary(),
            "batch 00ab: complete, 9 ok, 1 failed, in 12.3 ms; results in /srv/out/00ab.jsonl"
        );
    }
}
