//! The results from the workers, on the result PULL: RESULT and RESULTS
//! (checked against the batch, deduplicated by its received set,
//! acknowledged to the link, timed, credited to their worker, written, the
//! progress bar ticked), and the HELLO, HEARTBEAT and BYE that arrive with
//! them; a push worker that leaves is noted for the ventilator to hear of.
//!
//! This is the hot path (millions of results a second, packed in RESULTS):
//! each result is handled in place, with no allocation of its own.

use std::borrow::Cow;
use std::time::Instant;

use common::protocol::{self, Item, Kind, Message, ResultBody, WorkerInfo};
use common::work::Status;

use crate::output::Line;
use crate::received::Insert;
use crate::workers::{Said, Workers};
use crate::{Collecting, Error, batch::Batch};

/// Where a result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A worker (named by its id in the result).
    Worker,
    /// The ventilator's verdict on a task it gave up (GIVEN_UP).
    Ventilator,
}

/// What a message on the result PULL is, once read.
#[derive(Debug)]
enum Arrived {
    /// RESULT or RESULTS of `batch`.
    Results {
        batch: u64,
        results: Vec<Item<ResultBody>>,
    },
    /// A worker's HELLO, HEARTBEAT or BYE.
    Worker(Said, WorkerInfo),
    /// Dropped: the reason counted and a detail for the log.
    Dropped(&'static str, Cow<'static, str>),
}

/// The kinds the result PULL takes.
fn takes(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Result | Kind::Results | Kind::Hello | Kind::Heartbeat | Kind::Bye
    )
}

/// Sorts a message read on the result PULL.
fn sort(message: Message) -> Arrived {
    match message {
        Message::Results { batch, results } => Arrived::Results { batch, results },
        Message::Hello(info) => Arrived::Worker(Said::Hello, info),
        Message::Heartbeat(Some(info)) => Arrived::Worker(Said::Heartbeat, info),
        Message::Bye(Some(info)) => Arrived::Worker(Said::Bye, info),
        Message::Heartbeat(None) | Message::Bye(None) => Arrived::Dropped(
            "malformed",
            "a worker's HEARTBEAT or BYE without its worker info".into(),
        ),
        other => Arrived::Dropped(
            "unexpected kind",
            format!("{:?} on the result socket", other.kind()).into(),
        ),
    }
}

/// Whether a worker's word must reach the ventilator from us: a push worker
/// leaving mid-batch may hold tasks it will never run (it was stopped), and
/// only we can tell the ventilator, which sends again what is
/// unacknowledged. (In credit dispatch the worker's BYE reaches the
/// ventilator itself.)
fn leaves_holding_tasks(said: Said, info: &WorkerInfo) -> bool {
    said == Said::Bye && info.dispatch == protocol::Dispatch::Push
}

/// The name a result's line gives its source, as a JSON string; a worker's
/// result counts in its share. Borrowed unless the worker is unknown to us.
fn name_json<'w>(
    from: Source,
    workers: &'w mut Workers,
    worker: u64,
    duration_us: u64,
) -> Cow<'w, str> {
    match from {
        Source::Ventilator => Cow::Borrowed("\"ventilator\""),
        Source::Worker => match workers.did(worker, duration_us) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("\"worker-{worker:016x}\"")),
        },
    }
}

impl Collecting {
    /// A message on the result PULL: results, or a worker's word.
    pub(crate) fn on_results_socket(&mut self, frames: &[zmq::Message]) -> Result<(), Error> {
        let Some(message) = self.drops.decode(frames, "results", takes) else {
            return Ok(());
        };
        let now_us = self.clock.now_us();
        let (said, info) = match sort(message) {
            Arrived::Results { batch, results } => {
                for item in results {
                    self.on_result(batch, item, Source::Worker, now_us)?;
                }
                return Ok(());
            }
            Arrived::Worker(said, info) => (said, info),
            Arrived::Dropped(reason, detail) => {
                self.drops.note("results", reason, detail);
                return Ok(());
            }
        };
        let started = self.batch.as_ref().is_some_and(Batch::has_started);
        if leaves_holding_tasks(said, &info) {
            self.leaving.push(info.clone());
        }
        match self.workers.heard(said, info, Instant::now(), started) {
            Ok(true) => self.link.status_soon(),
            Ok(false) => {}
            Err(why) => self.drops.note("results", "malformed", why),
        }
        Ok(())
    }

    /// One result: checked against the batch, deduplicated, acknowledged,
    /// measured, credited to its worker, written.
    pub(crate) fn on_result(
        &mut self,
        batch_id: u64,
        item: Item<ResultBody>,
        from: Source,
        now_us: u64,
    ) -> Result<(), Error> {
        let Some(batch) = self.batch.as_mut() else {
            // Kept until a batch is announced (see `early.rs`).
            if !self.early.keep((batch_id, item, from, now_us)) {
                self.drops.note(
                    "results",
                    "no batch",
                    format_args!(
                        "a result arrived before any ventilator announced a batch, and {} wait already",
                        self.early.len()
                    ),
                );
            }
            return Ok(());
        };
        if let Err((reason, detail)) = batch.admit(batch_id, item.task) {
            self.drops.note("results", reason, detail);
            return Ok(());
        }
        let body = match item.body {
            Ok(b) => b,
            Err(e) => {
                self.drops.note("results", e.label(), e);
                return Ok(());
            }
        };
        let ok = body.outcome.status == Status::Ok;
        if let Insert::Duplicate { ok } = batch.insert(item.task, ok) {
            // Acknowledged again, as the first one was.
            self.link.ack(item.task, ok);
            if let Some(m) = &self.metrics {
                m.duplicate();
            }
            return Ok(());
        }
        self.link.ack(item.task, ok);
        if from == Source::Worker {
            batch.ran(now_us, body.duration_us);
        }
        let latency_us = self.timings.record(body.sent_us, body.duration_us, now_us);
        // On the batch's timeline, in the sink's own clock (see `Line`).
        let end_us = batch.since_go_us(now_us);
        if let Some(m) = &mut self.metrics {
            let ran = (from == Source::Worker).then_some(body.duration_us);
            m.result(ok, latency_us, ran);
        }
        let worker_json = name_json(from, &mut self.workers, body.worker, body.duration_us);
        let line = Line {
            task: item.task,
            batch: batch.hex(),
            attempt: item.attempt,
            worker_json: &worker_json,
            thread: body.thread,
            status: body.outcome.status.as_str(),
            exit_code: body.outcome.exit_code,
            duration_us: body.duration_us,
            start_us: end_us.map(|end| end.saturating_sub(body.duration_us)),
            end_us,
            latency_us,
            output: &body.outcome.output,
            error: &body.outcome.error,
        };
        self.out.write(&line, batch.id())?;
        if let Some(p) = &self.progress {
            p.inc(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Dispatch;
    use std::time::Duration;

    fn info(id: u64, dispatch: Dispatch) -> WorkerInfo {
        WorkerInfo {
            id,
            host: "h".into(),
            pid: 1,
            threads: 2,
            dispatch,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        }
    }

    #[test]
    fn a_workers_word_is_sorted_and_one_without_its_info_or_of_another_kind_dropped() {
        let w = info(7, Dispatch::Credit);
        assert!(matches!(
            sort(Message::Hello(w.clone())),
            Arrived::Worker(Said::Hello, i) if i.id == 7
        ));
        assert!(matches!(
            sort(Message::Heartbeat(Some(w.clone()))),
            Arrived::Worker(Said::Heartbeat, _)
        ));
        assert!(matches!(
            sort(Message::Bye(Some(w))),
            Arrived::Worker(Said::Bye, _)
        ));
        assert!(matches!(
            sort(Message::Bye(None)),
            Arrived::Dropped("malformed", _)
        ));
        assert!(matches!(
            sort(Message::Heartbeat(None)),
            Arrived::Dropped("malformed", _)
        ));
        assert!(matches!(
            sort(Message::Kill { batch: 0 }),
            Arrived::Dropped("unexpected kind", _)
        ));
        assert!(matches!(
            sort(Message::Results {
                batch: 3,
                results: Vec::new()
            }),
            Arrived::Results { batch: 3, .. }
        ));
        assert!(takes(Kind::Results) && takes(Kind::Bye) && !takes(Kind::Start));
    }

    #[test]
    fn only_a_push_worker_saying_bye_is_told_to_the_ventilator() {
        let push = info(1, Dispatch::Push);
        let credit = info(2, Dispatch::Credit);
        assert!(leaves_holding_tasks(Said::Bye, &push));
        assert!(!leaves_holding_tasks(Said::Bye, &credit));
        assert!(!leaves_holding_tasks(Said::Hello, &push));
        assert!(!leaves_holding_tasks(Said::Heartbeat, &push));
    }

    #[test]
    fn a_line_names_its_worker_or_the_ventilator_and_only_a_workers_result_counts() {
        let mut workers = Workers::new(Duration::from_secs(1));
        workers
            .heard(Said::Hello, info(7, Dispatch::Credit), Instant::now(), true)
            .unwrap();
        let known = name_json(Source::Worker, &mut workers, 7, 10);
        assert!(matches!(known, Cow::Borrowed(_)), "no allocation");
        assert_eq!(known, "\"h:1\"");
        assert_eq!(
            name_json(Source::Worker, &mut workers, 0xab, 10),
            "\"worker-00000000000000ab\""
        );
        assert_eq!(
            name_json(Source::Ventilator, &mut workers, 7, 10),
            "\"ventilator\""
        );
        let (_, rows) = workers.shares(1);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tasks, 1, "the verdict is not the worker's");
    }
}
