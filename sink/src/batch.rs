//! The batch being collected: what START said, the results received, and
//! when GO and the last result came.

use std::time::{Duration, Instant};

use common::protocol::{BatchDone, BatchInfo};

use crate::output::Resumed;
use crate::received::{Insert, Received};

/// Why a result is not counted: a drop label (counted in the report) and
/// words for the log.
pub(crate) type Refusal = (&'static str, String);

/// One batch, from its START to its last result.
#[derive(Debug)]
pub(crate) struct Batch {
    info: BatchInfo,
    /// The batch id in hex, as the output and the report write it.
    hex: String,
    received: Received,
    /// When GO came: the batch's clock.
    started: Option<Instant>,
    /// The same on the wall clock (µs since the epoch), which the results'
    /// arrival is read on: each line's `end_ms` counts from it.
    started_us: Option<u64>,
    /// How long before GO reached us the earliest task we know of began
    /// (its result's arrival less its run time), µs: results can outrun
    /// GO, and the clock must not start after the work did.
    lead_us: u64,
    /// Before GO: the earliest such start seen, to set against GO.
    pre_go_start_us: Option<u64>,
    /// When the last missing result came.
    finished: Option<Instant>,
    /// Where its results are written (host and path), for DONE.
    output: Option<String>,
    /// Results read back from the output (`--resume`, or a standing
    /// pool's batch file): written by an earlier sink, not received now.
    read_back: u64,
}

impl Batch {
    /// A batch a ventilator announced, with what `--resume` read back of
    /// it (results of another batch are not taken).
    pub(crate) fn new(info: BatchInfo, resumed: Option<Resumed>) -> Batch {
        let hex = format!("{:016x}", info.batch);
        log::info!("batch {hex} announced: {} tasks", info.tasks);
        let mut received = Received::new(info.tasks);
        if let Some(r) = resumed.filter(|r| r.batch == info.batch) {
            received.apply(&r.ok, &r.failed);
            log::info!(
                "batch {hex}: {} of {} results were already in the output",
                received.count(),
                info.tasks
            );
        }
        Batch {
            info,
            hex,
            read_back: received.count(),
            received,
            started: None,
            started_us: None,
            lead_us: 0,
            pre_go_start_us: None,
            finished: None,
            output: None,
        }
    }

    /// Says where the batch's results are written (DONE tells the
    /// ventilator).
    pub(crate) fn set_output(&mut self, output: Option<String>) {
        self.output = output;
    }

    /// What START said.
    pub(crate) fn info(&self) -> &BatchInfo {
        &self.info
    }

    /// The batch id.
    pub(crate) fn id(&self) -> u64 {
        self.info.batch
    }

    /// The batch id in hex.
    pub(crate) fn hex(&self) -> &str {
        &self.hex
    }

    /// The results received.
    pub(crate) fn received(&self) -> &Received {
        &self.received
    }

    /// Of them, those read back from the output (an earlier sink's).
    pub(crate) fn read_back(&self) -> u64 {
        self.read_back
    }

    /// Every result is in.
    pub(crate) fn is_complete(&self) -> bool {
        self.received.is_complete()
    }

    /// GO came (the clock started) and results are still missing: a
    /// worker lost now may hold some.
    pub(crate) fn is_running(&self) -> bool {
        self.started.is_some() && !self.is_complete()
    }

    /// Whether GO came.
    pub(crate) fn has_started(&self) -> bool {
        self.started.is_some()
    }

    /// GO: starts the clock. True the first time (a repeated GO changes
    /// nothing).
    pub(crate) fn go(&mut self, now: Instant) -> bool {
        if self.started.is_some() {
            return false;
        }
        self.started = Some(now);
        let go_us = common::now_micros();
        self.started_us = Some(go_us);
        if let Some(start) = self.pre_go_start_us.take() {
            self.lead_us = go_us.saturating_sub(start);
        }
        log::info!("batch {} started: {} tasks", self.hex, self.info.tasks);
        true
    }

    /// The checks a result passes before it counts: of this batch, of a
    /// task it has.
    pub(crate) fn admit(&self, batch: u64, task: u64) -> Result<(), Refusal> {
        if batch != self.info.batch {
            return Err((
                "foreign batch",
                format!("result of batch {batch:016x}, collecting {}", self.hex),
            ));
        }
        if task >= self.info.tasks {
            return Err((
                "unknown task",
                format!("task {task} of a {}-task batch", self.info.tasks),
            ));
        }
        Ok(())
    }

    /// Takes an admitted result (see [`Batch::admit`]); the last one
    /// missing stops the clock.
    pub(crate) fn insert(&mut self, task: u64, ok: bool) -> Insert {
        let insert = self.received.insert(task, ok);
        if insert == Insert::New && self.received.is_complete() {
            self.finished = Some(Instant::now());
        }
        insert
    }

    /// A result that arrived at `now_us` (µs since the epoch) after its
    /// task ran `duration_us`: its task began no earlier than the
    /// difference, and the batch's clock runs from there if that is before
    /// GO. So `elapsed` is never shorter than any task's run time.
    pub(crate) fn ran(&mut self, now_us: u64, duration_us: u64) {
        let start = now_us.saturating_sub(duration_us);
        match self.started_us {
            Some(go) => self.lead_us = self.lead_us.max(go.saturating_sub(start)),
            None => {
                let earliest = self.pre_go_start_us.map_or(start, |s| s.min(start));
                self.pre_go_start_us = Some(earliest);
            }
        }
    }

    /// From GO to `now_us` (µs since the epoch, as [`common::now_micros`]
    /// reads it): where a result received then ends on the batch's
    /// timeline. `None` before GO.
    pub(crate) fn since_go_us(&self, now_us: u64) -> Option<u64> {
        self.started_us.map(|go| now_us.saturating_sub(go))
    }

    /// From the first task sent to the last result, or to `now` while
    /// results are missing: from GO (the first task is about to leave), or
    /// from earlier when a result shows that its task began before GO
    /// reached us ([`Batch::ran`]).
    pub(crate) fn elapsed(&self, now: Instant) -> Duration {
        let end = if self.is_complete() {
            self.finished
        } else {
            Some(now)
        };
        self.started
            .zip(end)
            .map(|(s, e)| e.saturating_duration_since(s) + Duration::from_micros(self.lead_us))
            .unwrap_or_default()
    }

    /// What DONE says.
    pub(crate) fn done(&self) -> BatchDone {
        BatchDone {
            batch: self.info.batch,
            ok: self.received.ok(),
            failed: self.received.failed(),
            elapsed_ms: self.elapsed(Instant::now()).as_secs_f64() * 1000.0,
            output: self.output.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Dispatch;

    fn info(batch: u64, tasks: u64) -> BatchInfo {
        BatchInfo {
            batch,
            tasks,
            expected_ms: 0,
            dispatch: Dispatch::Credit,
            resync: false,
        }
    }

    #[test]
    fn the_clock_never_starts_after_the_work_did() {
        let info = BatchInfo {
            batch: 7,
            tasks: 2,
            expected_ms: 0,
            dispatch: common::protocol::Dispatch::Credit,
            resync: false,
        };
        let ms = |n: u64| n * 1000;
        // A result that outran GO: its task ran 50 ms, it came 1 ms in.
        let mut b = Batch::new(info.clone(), None);
        let t0 = Instant::now();
        b.go(t0);
        let go_us = b.started_us.unwrap();
        b.ran(go_us + ms(1), ms(50));
        b.insert(0, true);
        b.ran(go_us + ms(2), ms(1));
        b.insert(1, true);
        assert!(
            b.elapsed(t0) >= Duration::from_millis(49),
            "{:?}",
            b.elapsed(t0)
        );
        // Results before GO (a sink that came back): the clock starts at
        // the earliest of their tasks.
        let mut b = Batch::new(info, None);
        let now_us = common::now_micros();
        b.ran(now_us, ms(30));
        b.ran(now_us, ms(10));
        b.go(t0);
        assert!(b.lead_us >= ms(30), "{}", b.lead_us);
    }

    #[test]
    fn results_of_another_batch_or_beyond_it_are_refused() {
        let b = Batch::new(info(0xab, 3), None);
        assert_eq!(b.admit(0xab, 2), Ok(()));
        assert_eq!(b.admit(0xac, 0).unwrap_err().0, "foreign batch");
        assert_eq!(b.admit(0xab, 3).unwrap_err().0, "unknown task");
    }

    #[test]
    fn the_clock_runs_from_the_first_go_to_the_last_result() {
        let mut b = Batch::new(info(1, 2), None);
        let t0 = Instant::now();
        assert_eq!(b.elapsed(t0), Duration::ZERO, "no GO yet");
        assert_eq!(b.since_go_us(common::now_micros()), None, "no GO yet");
        assert!(b.go(t0));
        let go_us = common::now_micros();
        let since = b.since_go_us(go_us + 5_000).unwrap();
        assert!((5_000..6_000).contains(&since), "{since}");
        assert_eq!(b.since_go_us(0), Some(0), "never below GO");
        assert!(!b.go(t0 + Duration::from_secs(5)), "a repeated GO");
        assert!(b.is_running());
        assert_eq!(
            b.elapsed(t0 + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        b.insert(0, true);
        b.insert(1, false);
        assert!(b.is_complete() && !b.is_running());
        let e = b.elapsed(t0 + Duration::from_secs(100));
        assert!(e < Duration::from_secs(100), "stopped at the last result");
        assert_eq!((b.done().ok, b.done().failed), (1, 1));
    }

    #[test]
    fn only_the_announced_batchs_results_are_taken_from_a_resume() {
        let resumed = |batch| Resumed {
            batch,
            ok: vec![0, 1],
            failed: vec![2],
        };
        let b = Batch::new(info(7, 4), Some(resumed(7)));
        assert_eq!(b.received().count(), 3);
        let b = Batch::new(info(7, 4), Some(resumed(8)));
        assert_eq!(b.received().count(), 0);
    }
}
