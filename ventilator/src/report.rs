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
    /// The sink's DONE, when it came.
    pub done: Option<BatchDone>,
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
            done: None,
        }
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
