//! How the sink keeps in step with the ventilator: the feedback
//! conversation, sink ROUTER (binds) ◀─▶ ventilator DEALER (connects).
//!
//! ```text
//!  ventilator                                   sink
//!   START (batch, resync?)  ──▶  refused in words (STATUS refused), or
//!                           ◀──  STATUS (+ the snapshot, to a ventilator new to us)
//!                           ◀──  STATUS every 200 ms (at once when a worker joins)
//!   GO                      ──▶  the batch's clock starts
//!                           ◀──  ACK updates: results written, within 10 ms
//!   GIVEN_UP                ──▶  a verdict: a failed result from "ventilator"
//!                           ◀──  WORKER_LOST while the batch runs
//!                           ◀──  DONE, repeated until BYE
//!   BYE                     ──▶
//! ```
//!
//! The ventilator is known by its ROUTER routing id; one that reconnects
//! keeps it (the socket hands the id over), one with another id is a new
//! ventilator. A ventilator new to us, reconnected, or asking (`resync`)
//! learns everything the sink holds: the **snapshot**, the received set as
//! ranges, in as many ACK parts as it takes. STATUS carries this process's
//! random instance, so a ventilator sees a restarted sink and announces its
//! batch again.
//!
//! [`VentilatorLink`] sends what the conversation says and answers the loop
//! with an [`Event`] for what the loop must do: make the batch announced,
//! start its clock, take a verdict as a result, count a drop. It sends
//! through [`Feedback`], so it is tested without sockets.

use std::path::Path;
use std::time::{Duration, Instant};

use common::protocol::{
    self, AckPart, Acks, BatchInfo, Header, Item, Kind, Message, ResultBody, SinkStatus, WorkerInfo,
};
use common::work::{Outcome, Status};

use crate::batch::Batch;
use crate::output::Output;
use crate::workers::Workers;

/// STATUS goes out this often while collecting (and at once when a worker
/// joins).
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Results written are acknowledged within this, even when nothing else
/// comes: the ventilator may be waiting for them to send more.
const ACK_WITHIN: Duration = Duration::from_millis(10);
/// Or as soon as this many are waiting.
const ACK_AT_MOST: usize = 2048;
/// The poll's longest wait when no ACK is waiting.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Where the link's messages go: the feedback ROUTER (or, in tests, a
/// list).
pub(crate) trait Feedback {
    /// Sends `frames` to the ventilator whose routing id is `to`. A ROUTER
    /// drops a message for a peer that is gone, and so does this: STATUS is
    /// repeated, ACKs are asked for again.
    fn send(&self, to: &[u8], frames: &[Vec<u8>]);
}

impl Feedback for zmq::Socket {
    fn send(&self, to: &[u8], frames: &[Vec<u8>]) {
        let parts = std::iter::once(to).chain(frames.iter().map(|f| &f[..]));
        let _ = self.send_multipart(parts, zmq::DONTWAIT);
    }
}

/// What the link reads to answer: the batch being collected, who is
/// ready, and the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    /// The batch being collected, once one is announced.
    pub batch: Option<&'a Batch>,
    /// The workers heard from.
    pub workers: &'a Workers,
    /// Now.
    pub now: Instant,
}

/// What the link makes of a START.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// Refused, in words. `dropped`: an empty or too large batch also
    /// counts as a dropped message ("refused batch"); a batch other than the
    /// one `--resume` holds does not.
    Refused {
        /// Why, as the ventilator is told.
        why: String,
        /// Counted as a dropped message.
        dropped: bool,
    },
    /// The first batch announced: the loop makes it, then the ventilator is
    /// welcomed ([`VentilatorLink::welcome`]).
    New,
    /// The batch being collected. `snapshot`: the ventilator is new to us
    /// (another routing id) or asks for a resync, and learns everything we
    /// hold; the one we know repeats START only to keep in touch.
    Current {
        /// Owed the snapshot.
        snapshot: bool,
    },
    /// Another batch than the one being collected: the ventilator is told
    /// which one we collect (STATUS, and our snapshot).
    Other,
}

/// What the loop must do after a message on the feedback socket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Count a dropped message: its reason (a report label) and words for
    /// the log.
    Dropped(&'static str, String),
    /// The first batch announced: make it (with what `--resume` read back),
    /// then [`VentilatorLink::welcome`] its ventilator.
    Announced(BatchInfo),
    /// GO for the batch being collected: start its clock.
    Go,
    /// GIVEN_UP: the ventilator's verdict on a task, as a failed result
    /// whose worker is "ventilator".
    Verdict {
        /// Its batch.
        batch: u64,
        /// The task, its last attempt, and the reason as the error.
        result: Item<ResultBody>,
    },
}

/// The feedback conversation with the ventilator of the batch.
#[derive(Debug)]
pub(crate) struct VentilatorLink {
    /// Random per process, in every STATUS: the ventilator sees a restart.
    instance: u64,
    /// `--max-tasks`: a larger batch is refused.
    max_tasks: u64,
    /// The batch `--resume` read back, and from where: another is refused.
    resuming: Option<(u64, String)>,
    /// The routing id of the ventilator of the batch being collected.
    ventilator: Vec<u8>,
    /// Results written since the last ACK.
    ack_ok: Vec<u64>,
    ack_failed: Vec<u64>,
    /// A worker joined: STATUS goes out now rather than at the next tick.
    status_due: bool,
    next_status: Instant,
    next_ack: Instant,
    /// The ventilator said BYE: DONE reached it.
    bye: bool,
}

impl VentilatorLink {
    /// A link before any START. `resuming`: the batch `--resume` read back
    /// from `--output`.
    pub(crate) fn new(
        instance: u64,
        max_tasks: u64,
        resuming: Option<(u64, &Path)>,
        now: Instant,
    ) -> VentilatorLink {
        VentilatorLink {
            instance,
            max_tasks,
            resuming: resuming.map(|(b, p)| (b, p.display().to_string())),
            ventilator: Vec::new(),
            ack_ok: Vec::new(),
            ack_failed: Vec::new(),
            status_due: false,
            next_status: now,
            next_ack: now,
            bye: false,
        }
    }

    /// The kinds the feedback socket takes while collecting (a message of
    /// another kind is "unexpected kind", even when it cannot be read).
    pub(crate) fn takes(kind: Kind) -> bool {
        matches!(kind, Kind::Start | Kind::Go | Kind::GivenUp)
    }

    /// Judges a START from `identity` (pure: nothing is sent).
    pub(crate) fn judge(&self, identity: &[u8], info: &BatchInfo, batch: Option<&Batch>) -> Start {
        if info.tasks == 0 {
            return Start::Refused {
                why: "the batch has no task".into(),
                dropped: true,
            };
        }
        if info.tasks > self.max_tasks {
            return Start::Refused {
                why: format!(
                    "{} tasks is more than this sink's --max-tasks {}",
                    info.tasks, self.max_tasks
                ),
                dropped: true,
            };
        }
        match batch {
            Some(b) if b.id() == info.batch => Start::Current {
                snapshot: info.resync || self.ventilator != identity,
            },
            Some(_) => Start::Other,
            None => match &self.resuming {
                Some((resumed, from)) if *resumed != info.batch => Start::Refused {
                    why: format!(
                        "this sink resumes batch {resumed:016x} from {from}, not batch {:016x} (other tasks?)",
                        info.batch
                    ),
                    dropped: false,
                },
                _ => Start::New,
            },
        }
    }

    /// A message from the ventilator `identity` while collecting: answers
    /// what is the link's to answer, and tells the loop the rest.
    pub(crate) fn on_message(
        &mut self,
        fb: &impl Feedback,
        out: &mut Output,
        identity: &[u8],
        message: Message,
        view: View<'_>,
    ) -> Option<Event> {
        match message {
            Message::Start(info) => self.on_start(fb, out, identity, info, view),
            Message::Go { batch } => match view.batch {
                Some(b) if b.id() == batch => Some(Event::Go),
                _ => Some(Event::Dropped(
                    "foreign batch",
                    format!("GO for batch {batch:016x}, which is not the current one"),
                )),
            },
            Message::GivenUp {
                batch,
                task,
                attempt,
                reason,
            } => Some(Event::Verdict {
                batch,
                result: Item {
                    task,
                    attempt,
                    body: Ok(ResultBody {
                        worker: 0,
                        thread: 0,
                        sent_us: 0,
                        duration_us: 0,
                        outcome: Outcome::failed(Status::Failed, reason),
                    }),
                },
            }),
            other => Some(Event::Dropped(
                "unexpected kind",
                format!("{:?} on the feedback socket", other.kind()),
            )),
        }
    }

    fn on_start(
        &mut self,
        fb: &impl Feedback,
        out: &mut Output,
        identity: &[u8],
        info: BatchInfo,
        view: View<'_>,
    ) -> Option<Event> {
        match self.judge(identity, &info, view.batch) {
            Start::Refused { why, dropped } => {
                let detail = format!("batch {:016x} refused: {why}", info.batch);
                let status = SinkStatus {
                    batch: Some(info.batch),
                    ready: Vec::new(),
                    received: 0,
                    refused: Some(why),
                    instance: self.instance,
                };
                fb.send(identity, &Message::Status(status).frames());
                dropped.then_some(Event::Dropped("refused batch", detail))
            }
            Start::New => Some(Event::Announced(info)),
            Start::Current { snapshot } => {
                if self.ventilator != identity {
                    if let Some(b) = view.batch {
                        log::info!("batch {}: a ventilator (re)joined", b.hex());
                    }
                    self.ventilator = identity.to_vec();
                }
                self.send_status(fb, identity, view);
                if snapshot {
                    self.send_snapshot(fb, out, identity, view.batch);
                }
                None
            }
            Start::Other => {
                if let Some(b) = view.batch {
                    log::warn!(
                        "a ventilator announced batch {:016x} while batch {} is being collected; it is told so",
                        info.batch,
                        b.hex()
                    );
                }
                self.send_status(fb, identity, view);
                self.send_snapshot(fb, out, identity, view.batch);
                None
            }
        }
    }

    /// The ventilator `identity` announced the batch now being collected
    /// (made after [`Event::Announced`]): it is ours to answer, and learns
    /// what we hold of it (`--resume` may hold much).
    pub(crate) fn welcome(
        &mut self,
        fb: &impl Feedback,
        out: &mut Output,
        identity: &[u8],
        view: View<'_>,
    ) {
        self.ventilator = identity.to_vec();
        self.send_status(fb, identity, view);
        self.send_snapshot(fb, out, identity, view.batch);
    }

    /// A result of `task` was written (or arrived again: its first ACK may
    /// have been lost, and the ventilator sent the task again for want of
    /// it). It is acknowledged within [`ACK_WITHIN`].
    pub(crate) fn ack(&mut self, task: u64, ok: bool) {
        if ok {
            self.ack_ok.push(task);
        } else {
            self.ack_failed.push(task);
        }
    }

    /// A worker joined: the ventilator hears of it at the next tick.
    pub(crate) fn status_soon(&mut self) {
        self.status_due = true;
    }

    /// How long the loop may wait for messages: pending ACKs go out within
    /// [`ACK_WITHIN`] even when nothing else comes.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Duration {
        if self.ack_ok.is_empty() && self.ack_failed.is_empty() {
            IDLE_POLL
        } else {
            self.next_ack.saturating_duration_since(now).min(IDLE_POLL)
        }
    }

    /// What is due: STATUS every [`STATUS_EVERY`] (or at once when a worker
    /// joined), ACKs every [`ACK_WITHIN`] (or once [`ACK_AT_MOST`] wait).
    pub(crate) fn tick(
        &mut self,
        fb: &impl Feedback,
        out: &mut Output,
        view: View<'_>,
    ) -> std::io::Result<()> {
        let now = view.now;
        if now >= self.next_status || self.status_due {
            self.status_due = false;
            // Acks first: STATUS counts only what the ventilator has been
            // told of, so a count ahead of its own means ACKs were lost.
            self.send_acks(fb, out, view.batch)?;
            if view.batch.is_some() {
                self.send_status(fb, &self.ventilator, view);
            }
            self.next_status = now + STATUS_EVERY;
        }
        if now >= self.next_ack || self.ack_ok.len() + self.ack_failed.len() >= ACK_AT_MOST {
            self.send_acks(fb, out, view.batch)?;
            self.next_ack = now + ACK_WITHIN;
        }
        Ok(())
    }

    /// Acknowledges the results written since the last ACK, once they are
    /// out of our buffers (handed to the operating system).
    pub(crate) fn send_acks(
        &mut self,
        fb: &impl Feedback,
        out: &mut Output,
        batch: Option<&Batch>,
    ) -> std::io::Result<()> {
        if self.ack_ok.is_empty() && self.ack_failed.is_empty() {
            return Ok(());
        }
        let Some(b) = batch else { return Ok(()) };
        out.flush()?;
        let acks = Acks {
            ok: Acks::ranges(&mut self.ack_ok),
            failed: Acks::ranges(&mut self.ack_failed),
        };
        self.ack_ok.clear();
        self.ack_failed.clear();
        let ack = Message::Ack {
            batch: b.id(),
            acks,
            part: AckPart::Update,
        };
        fb.send(&self.ventilator, &ack.frames());
        Ok(())
    }

    /// WORKER_LOST, while the batch runs: the ventilator re-sends what the
    /// worker held (in push dispatch it cannot know who holds what).
    pub(crate) fn worker_lost(&self, fb: &impl Feedback, info: &WorkerInfo, batch: Option<&Batch>) {
        if let Some(b) = batch.filter(|b| b.is_running()) {
            // The header names the batch, which `Message::WorkerLost` does
            // not carry: encoded by hand to keep the wire as it was.
            let frames = protocol::json_frames(Header::bare(Kind::WorkerLost, b.id()), info);
            fb.send(&self.ventilator, &frames);
        }
    }

    /// DONE to the ventilator: sent again every 100 ms while finishing,
    /// until it says BYE (a reconnecting ventilator would miss a single
    /// one, and then wait).
    pub(crate) fn send_done(&self, fb: &impl Feedback, batch: &Batch) {
        fb.send(&self.ventilator, &Message::Done(batch.done()).frames());
    }

    /// A message while finishing, from the peer `identity`: BYE (DONE
    /// reached the ventilator), or the START of this batch from a
    /// ventilator started again (`--resume`) after its last task went out:
    /// DONE goes to that one from now on (true: give it time to hear it).
    pub(crate) fn on_finishing(&mut self, identity: &[u8], message: &Message, batch: u64) -> bool {
        match message {
            Message::Bye(_) => self.bye = true,
            Message::Start(info) if info.batch == batch && identity != self.ventilator => {
                log::info!(
                    "batch {batch:016x}: a ventilator started again asks for it; it is complete, and DONE goes to the new one"
                );
                self.ventilator = identity.to_vec();
                self.bye = false;
                return true;
            }
            _ => {}
        }
        false
    }

    /// The ventilator said BYE.
    pub(crate) fn heard_bye(&self) -> bool {
        self.bye
    }

    fn status(&self, view: View<'_>) -> SinkStatus {
        SinkStatus {
            batch: view.batch.map(Batch::id),
            ready: view.workers.ready(view.now),
            received: view.batch.map_or(0, |b| b.received().count()),
            refused: None,
            instance: self.instance,
        }
    }

    fn send_status(&self, fb: &impl Feedback, to: &[u8], view: View<'_>) {
        fb.send(to, &Message::Status(self.status(view)).frames());
    }

    /// Tells a ventilator everything this sink holds of the batch, in
    /// parts of at most [`Acks::MAX_RANGES`] ranges (see [`snapshot`]).
    fn send_snapshot(
        &self,
        fb: &impl Feedback,
        out: &mut Output,
        to: &[u8],
        batch: Option<&Batch>,
    ) {
        let Some(b) = batch else { return };
        // What we acknowledge must be written: a failed flush shows at the
        // next ACK.
        let _ = out.flush();
        for part in snapshot(b.id(), b.received().ranges()) {
            fb.send(to, &part.frames());
        }
    }
}

/// The snapshot of `batch`: its ranges in ACK parts, each of at most half
/// [`Acks::MAX_RANGES`] ok and as many failed ranges, each saying how many
/// parts follow (at least one part, empty when nothing is held).
pub(crate) fn snapshot(batch: u64, ranges: Acks) -> Vec<Message> {
    let per = Acks::MAX_RANGES / 2;
    let parts = ranges
        .ok
        .len()
        .div_ceil(per)
        .max(ranges.failed.len().div_ceil(per))
        .max(1);
    let (mut ok, mut failed) = (ranges.ok.into_iter(), ranges.failed.into_iter());
    (0..parts)
        .map(|i| Message::Ack {
            batch,
            acks: Acks {
                ok: ok.by_ref().take(per).collect(),
                failed: failed.by_ref().take(per).collect(),
            },
            part: AckPart::Snapshot {
                more: (parts - 1 - i) as u64,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    // Lists of one range are what is meant here.
    #![allow(clippy::single_range_in_vec_init)]

    use std::cell::RefCell;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use common::protocol::Dispatch;

    use super::*;
    use crate::workers::Said;

    /// The feedback socket, as a list of what was sent.
    #[derive(Default)]
    struct Sent(RefCell<Vec<(Vec<u8>, Frames)>>);

    type Frames = Vec<Vec<u8>>;

    impl Feedback for Sent {
        fn send(&self, to: &[u8], frames: &[Vec<u8>]) {
            self.0.borrow_mut().push((to.to_vec(), frames.to_vec()));
        }
    }

    impl Sent {
        /// What was sent since the last call, decoded, with its addressee.
        fn take(&self) -> Vec<(Vec<u8>, Message)> {
            self.0
                .take()
                .into_iter()
                .map(|(to, f)| (to, Message::decode(&f[..]).expect("sent what reads back")))
                .collect()
        }
    }

    /// A writer the test can read, behind the output's own buffer.
    #[derive(Clone, Default)]
    struct Disk(Arc<Mutex<Vec<u8>>>);

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn output() -> (Output, Disk) {
        let disk = Disk::default();
        let buffered = std::io::BufWriter::new(disk.clone());
        (Output::new(Box::new(buffered), false), disk)
    }

    fn start(batch: u64, tasks: u64) -> BatchInfo {
        BatchInfo {
            batch,
            tasks,
            expected_ms: 0,
            dispatch: Dispatch::Credit,
            resync: false,
        }
    }

    fn link() -> VentilatorLink {
        VentilatorLink::new(77, 1000, None, Instant::now())
    }

    fn statuses(sent: &[(Vec<u8>, Message)]) -> Vec<&SinkStatus> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Message::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn snapshot_parts(sent: &[(Vec<u8>, Message)]) -> Vec<(&[u8], &Acks, u64)> {
        sent.iter()
            .filter_map(|(to, m)| match m {
                Message::Ack {
                    acks,
                    part: AckPart::Snapshot { more },
                    ..
                } => Some((&to[..], acks, *more)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_ventilator_started_again_while_the_batch_finishes_gets_done() {
        let mut l = link();
        l.ventilator = b"v1".to_vec();
        let again = Message::Start(BatchInfo {
            batch: 5,
            tasks: 10,
            expected_ms: 0,
            dispatch: Dispatch::Credit,
            resync: false,
        });
        assert!(
            !l.on_finishing(b"v1", &again, 5),
            "the same one: nothing new"
        );
        assert!(!l.on_finishing(b"v2", &Message::Bye(None), 5));
        assert!(l.heard_bye());
        // Another batch's START is not this link's business.
        assert!(!l.on_finishing(b"v2", &again, 6));
        assert!(
            l.on_finishing(b"v2", &again, 5),
            "a new ventilator of this batch"
        );
        assert_eq!(l.ventilator, b"v2");
        assert!(!l.heard_bye(), "its BYE is still to come");
    }

    #[test]
    fn an_empty_or_too_large_batch_is_refused_and_counted_another_than_resumed_only_refused() {
        let l = link();
        for tasks in [0, 1001] {
            let s = l.judge(b"v", &start(1, tasks), None);
            assert!(matches!(s, Start::Refused { dropped: true, .. }), "{s:?}");
        }
        assert_eq!(l.judge(b"v", &start(1, 1000), None), Start::New);
        let l = VentilatorLink::new(77, 1000, Some((5, Path::new("out.jsonl"))), Instant::now());
        let Start::Refused { why, dropped } = l.judge(b"v", &start(6, 10), None) else {
            panic!("another batch than the one resumed");
        };
        assert!(!dropped);
        assert!(
            why.contains("resumes batch 0000000000000005 from out.jsonl"),
            "{why}"
        );
        assert_eq!(l.judge(b"v", &start(5, 10), None), Start::New);
    }

    #[test]
    fn a_refused_start_is_answered_in_words_and_counted() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let sent = Sent::default();
        let view = View {
            batch: None,
            workers: &ws,
            now: Instant::now(),
        };
        let e = l.on_message(&sent, &mut out, b"v", Message::Start(start(9, 0)), view);
        assert!(
            matches!(e, Some(Event::Dropped("refused batch", _))),
            "{e:?}"
        );
        let sent = sent.take();
        assert_eq!(sent.len(), 1);
        let s = statuses(&sent)[0];
        assert_eq!(s.batch, Some(9));
        assert_eq!(s.refused.as_deref(), Some("the batch has no task"));
        assert_eq!(s.instance, 77);
    }

    #[test]
    fn a_snapshot_is_owed_to_a_ventilator_new_to_us_reconnected_or_asking() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let now = Instant::now();
        let mut batch = Batch::new(start(1, 10), None);
        batch.insert(3, true);
        let sent = Sent::default();
        let view = View {
            batch: None,
            workers: &ws,
            now,
        };
        let e = l.on_message(&sent, &mut out, b"v1", Message::Start(start(1, 10)), view);
        assert_eq!(e, Some(Event::Announced(start(1, 10))));
        assert!(sent.take().is_empty(), "answered once the batch is made");
        let view = View {
            batch: Some(&batch),
            ..view
        };
        l.welcome(&sent, &mut out, b"v1", view);
        let first = sent.take();
        assert_eq!(statuses(&first)[0].received, 1);
        assert_eq!(snapshot_parts(&first).len(), 1);
        // The same ventilator keeping in touch: STATUS only.
        assert_eq!(
            l.judge(b"v1", &start(1, 10), Some(&batch)),
            Start::Current { snapshot: false }
        );
        l.on_message(&sent, &mut out, b"v1", Message::Start(start(1, 10)), view);
        let again = sent.take();
        assert_eq!(
            (statuses(&again).len(), snapshot_parts(&again).len()),
            (1, 0)
        );
        // Asking for a resync, or under another routing id: the snapshot.
        let resync = BatchInfo {
            resync: true,
            ..start(1, 10)
        };
        l.on_message(&sent, &mut out, b"v1", Message::Start(resync), view);
        assert_eq!(snapshot_parts(&sent.take()).len(), 1);
        l.on_message(&sent, &mut out, b"v2", Message::Start(start(1, 10)), view);
        let parts = sent.take();
        assert_eq!(snapshot_parts(&parts)[0].0, b"v2");
        // Answers now go to the new one.
        l.ack(4, true);
        l.send_acks(&sent, &mut out, Some(&batch)).unwrap();
        assert_eq!(sent.take()[0].0, b"v2");
    }

    #[test]
    fn another_batch_is_told_which_one_we_collect() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let batch = Batch::new(start(1, 10), None);
        let view = View {
            batch: Some(&batch),
            workers: &ws,
            now: Instant::now(),
        };
        let sent = Sent::default();
        l.welcome(&sent, &mut out, b"v1", view);
        sent.take();
        assert_eq!(l.judge(b"v2", &start(2, 10), Some(&batch)), Start::Other);
        let e = l.on_message(&sent, &mut out, b"v2", Message::Start(start(2, 10)), view);
        assert_eq!(e, None);
        let sent_now = sent.take();
        assert_eq!(statuses(&sent_now)[0].batch, Some(1));
        assert!(sent_now.iter().all(|(to, _)| to == b"v2"));
        // Our own ventilator is still the one we answer.
        l.ack(0, true);
        l.send_acks(&sent, &mut out, Some(&batch)).unwrap();
        assert_eq!(sent.take()[0].0, b"v1");
    }

    #[test]
    fn go_of_another_batch_is_dropped_and_given_up_is_a_failed_result() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let batch = Batch::new(start(1, 10), None);
        let view = View {
            batch: Some(&batch),
            workers: &ws,
            now: Instant::now(),
        };
        let sent = Sent::default();
        let go = |l: &mut VentilatorLink, out: &mut Output, batch| {
            l.on_message(&sent, out, b"v", Message::Go { batch }, view)
        };
        assert_eq!(go(&mut l, &mut out, 1), Some(Event::Go));
        assert!(matches!(
            go(&mut l, &mut out, 2),
            Some(Event::Dropped("foreign batch", _))
        ));
        let given_up = Message::GivenUp {
            batch: 1,
            task: 4,
            attempt: 3,
            reason: "lost 3 times".into(),
        };
        let Some(Event::Verdict { batch, result }) =
            l.on_message(&sent, &mut out, b"v", given_up, view)
        else {
            panic!("a verdict");
        };
        assert_eq!((batch, result.task, result.attempt), (1, 4, 3));
        let body = result.body.unwrap();
        assert_eq!(body.outcome.status, Status::Failed);
        assert_eq!(body.outcome.error, b"lost 3 times");
        assert_eq!(body.sent_us, 0, "no latency");
        let e = l.on_message(&sent, &mut out, b"v", Message::Bye(None), view);
        assert!(matches!(e, Some(Event::Dropped("unexpected kind", _))));
        assert!(sent.take().is_empty());
    }

    #[test]
    fn acks_wait_at_most_ten_ms_go_as_ranges_and_only_after_the_output_is_flushed() {
        let mut l = link();
        let (mut out, disk) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let batch = Batch::new(start(1, 5000), None);
        let t0 = Instant::now();
        let view = |now| View {
            batch: Some(&batch),
            workers: &ws,
            now,
        };
        let sent = Sent::default();
        l.welcome(&sent, &mut out, b"v", view(t0));
        l.tick(&sent, &mut out, view(t0)).unwrap();
        sent.take();
        assert_eq!(l.poll_timeout(t0), IDLE_POLL, "nothing to acknowledge");
        out.write(
            &crate::output::Line {
                task: 2,
                status: "ok",
                ..Default::default()
            },
            1,
        )
        .unwrap();
        for (t, ok) in [(2, true), (0, true), (1, true), (7, false)] {
            l.ack(t, ok);
        }
        let t1 = t0 + Duration::from_millis(4);
        assert_eq!(l.poll_timeout(t1), Duration::from_millis(6));
        l.tick(&sent, &mut out, view(t1)).unwrap();
        assert!(sent.take().is_empty(), "not yet");
        assert!(disk.0.lock().unwrap().is_empty(), "still in our buffer");
        l.tick(&sent, &mut out, view(t0 + ACK_WITHIN)).unwrap();
        let acks = sent.take();
        let [(to, Message::Ack { acks, part, .. })] = &acks[..] else {
            panic!("one ACK: {acks:?}");
        };
        assert_eq!((&to[..], *part), (&b"v"[..], AckPart::Update));
        assert_eq!((&acks.ok[..], &acks.failed[..]), (&[0..3][..], &[7..8][..]));
        assert!(
            !disk.0.lock().unwrap().is_empty(),
            "written before acknowledged"
        );
        // A full buffer goes at once.
        for t in 0..ACK_AT_MOST as u64 {
            l.ack(t, true);
        }
        l.tick(&sent, &mut out, view(t0 + ACK_WITHIN)).unwrap();
        assert_eq!(sent.take().len(), 1);
    }

    #[test]
    fn status_goes_every_200_ms_or_at_once_when_a_worker_joined() {
        let mut l = link();
        let (mut out, _) = output();
        let mut ws = Workers::new(Duration::from_secs(3));
        let batch = Batch::new(start(1, 10), None);
        let t0 = Instant::now();
        let sent = Sent::default();
        let tick = |l: &mut VentilatorLink, out: &mut Output, ws: &Workers, now| {
            let view = View {
                batch: Some(&batch),
                workers: ws,
                now,
            };
            l.tick(&sent, out, view).unwrap();
            statuses(&sent.take()).len()
        };
        assert_eq!(tick(&mut l, &mut out, &ws, t0), 1);
        assert_eq!(
            tick(&mut l, &mut out, &ws, t0 + Duration::from_millis(100)),
            0
        );
        let info = WorkerInfo {
            id: 3,
            host: "h".into(),
            pid: 3,
            threads: 1,
            dispatch: Dispatch::Credit,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        };
        assert_eq!(ws.heard(Said::Hello, info, t0, false), Ok(true));
        l.status_soon();
        let view = View {
            batch: Some(&batch),
            workers: &ws,
            now: t0 + Duration::from_millis(101),
        };
        l.tick(&sent, &mut out, view).unwrap();
        let sent_now = sent.take();
        assert_eq!(statuses(&sent_now)[0].ready.len(), 1, "at once");
        assert_eq!(
            tick(&mut l, &mut out, &ws, t0 + Duration::from_millis(301)),
            1
        );
    }

    #[test]
    fn the_snapshot_goes_in_parts_each_saying_how_many_follow() {
        let per = Acks::MAX_RANGES / 2;
        let ranges = Acks {
            ok: (0..per as u64 * 2 + 1).map(|i| 2 * i..2 * i + 1).collect(),
            failed: vec![1..2],
        };
        let parts = snapshot(9, ranges.clone());
        assert_eq!(parts.len(), 3);
        let mut back = Acks::default();
        for (i, p) in parts.iter().enumerate() {
            let Message::Ack {
                batch: 9,
                acks,
                part: AckPart::Snapshot { more },
            } = p
            else {
                panic!("{p:?}");
            };
            assert_eq!(*more, 2 - i as u64);
            assert!(acks.ok.len() <= per);
            back.ok.extend(acks.ok.iter().cloned());
            back.failed.extend(acks.failed.iter().cloned());
        }
        assert_eq!(back, ranges);
        let empty = snapshot(9, Acks::default());
        assert!(matches!(
            &empty[..],
            [Message::Ack {
                part: AckPart::Snapshot { more: 0 },
                ..
            }]
        ));
    }

    #[test]
    fn worker_lost_is_said_only_while_the_batch_runs() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let mut batch = Batch::new(start(1, 1), None);
        let sent = Sent::default();
        let view = View {
            batch: Some(&batch),
            workers: &ws,
            now: Instant::now(),
        };
        l.welcome(&sent, &mut out, b"v", view);
        sent.take();
        let info = WorkerInfo {
            id: 3,
            host: "h".into(),
            pid: 3,
            threads: 1,
            dispatch: Dispatch::Credit,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        };
        l.worker_lost(&sent, &info, Some(&batch));
        assert!(sent.0.borrow().is_empty(), "before GO");
        batch.go(Instant::now());
        l.worker_lost(&sent, &info, Some(&batch));
        let frames = sent.0.take();
        let (header, _) = protocol::split(&frames[0].1[..]).unwrap();
        assert_eq!((header.kind, header.batch), (Kind::WorkerLost, 1));
        batch.insert(0, true);
        l.worker_lost(&sent, &info, Some(&batch));
        assert!(sent.0.borrow().is_empty(), "after the last result");
    }

    #[test]
    fn done_goes_to_our_ventilator_until_it_says_bye() {
        let mut l = link();
        let (mut out, _) = output();
        let ws = Workers::new(Duration::from_secs(3));
        let mut batch = Batch::new(start(1, 1), None);
        let sent = Sent::default();
        let view = View {
            batch: Some(&batch),
            workers: &ws,
            now: Instant::now(),
        };
        l.welcome(&sent, &mut out, b"v", view);
        sent.take();
        batch.insert(0, false);
        l.send_done(&sent, &batch);
        let done = sent.take();
        let [(to, Message::Done(d))] = &done[..] else {
            panic!("{done:?}");
        };
        assert_eq!((&to[..], d.batch, d.ok, d.failed), (&b"v"[..], 1, 0, 1));
        l.on_finishing(b"v", &Message::Go { batch: 1 }, 1);
        assert!(!l.heard_bye());
        l.on_finishing(b"v", &Message::Bye(None), 1);
        assert!(l.heard_bye());
    }
}
