//! How the sink link is kept in step: the feedback conversation between the
//! ventilator's DEALER and the sink's ROUTER.
//!
//! ```text
//!  ventilator DEALER                                         ROUTER sink
//!     START (every 500 ms; every second once known) ──▶
//!                  ◀── STATUS (its instance, our batch?, ready workers, count)
//!                  ◀── ACK snapshot, in parts (everything it holds)
//!     GO (the workers are ready; first task leaves) ──▶
//!                  ◀── ACK updates (every 10 ms), WORKER_LOST
//!     GIVEN_UP (a task we gave up, and why)         ──▶
//!                  ◀── DONE (repeated until BYE)
//!     BYE                                           ──▶
//! ```
//!
//! [`SinkLink`] is the state of this conversation, without the socket: the
//! poll loop hands it each decoded message and the time, and it answers
//! with [`Event`]s for the loop to apply to the ledger and the roster, and
//! says when START and GO are due. Its [`Phase`] is one enum, so a sink
//! that restarts (a new instance) or forgets the batch puts the whole link
//! back to [`Phase::Announcing`] in one place. `Feedback` writes what the
//! ventilator sends on the socket.
//!
//! **Keeping in step.** START is repeated for the whole batch, so a sink
//! that restarted learns the batch again; a sink new to us answers with
//! everything it holds (an ACK snapshot) and the ledger is made to agree
//! with it ([`Event::Snapshot`]), so what a restarted sink lost goes out
//! again. ACK updates lost on a broken link show as the sink's count
//! running ahead of ours: after [`RESYNC_AFTER`] of that, START asks for a
//! snapshot again (`resync`). A DONE that never comes, once every result is
//! acknowledged, ends the batch after [`DONE_GRACE`]. A sink silent for
//! `--sink-timeout` once every task has gone out at least once ends it
//! too, unfinished ([`SinkLink::given_up`]): the last ACKs and every DONE
//! may have been lost on a link that came back only after the sink had
//! finished and gone, and nothing else would end the wait.
//!
//! **Resuming.** A snapshot that holds results before we sent anything is a
//! batch an earlier ventilator began: it goes on only with `--resume`
//! ([`SinkLink::check_resume`]).

use std::time::{Duration, Instant};

use common::protocol::{
    AckPart, Acks, BatchDone, BatchInfo, Dispatch, Header, Kind, Message, WorkerInfo,
};

use crate::Error;

/// START's period while the sink does not know the batch.
pub const START_EVERY_UNKNOWN: Duration = Duration::from_millis(500);
/// START's period once it does: it keeps us in touch, and tells a sink
/// that restarted of the batch again.
pub const START_EVERY: Duration = Duration::from_secs(1);
/// How long the sink's count may run ahead of ours before we ask it for
/// everything it holds.
pub const RESYNC_AFTER: Duration = Duration::from_secs(2);
/// How long the ventilator waits for DONE once every result is
/// acknowledged.
pub const DONE_GRACE: Duration = Duration::from_secs(5);

/// Where the conversation with the sink stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// This sink (this instance of it) has not said it knows the batch:
    /// START every [`START_EVERY_UNKNOWN`].
    Announcing,
    /// The sink knows the batch; its account of what it holds (an ACK
    /// snapshot, perhaps in several parts) is on the way.
    Syncing,
    /// The sink has told us everything it holds and the ledger agrees with
    /// it: tasks may go out, GO is due once the workers are ready.
    InStep,
    /// GO has gone: the sink's clock runs, ACK updates flow.
    Running,
    /// DONE came (or every result was acknowledged and DONE was lost).
    Done,
}

/// What the sink said, for the poll loop to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An ACK update: the sink wrote these results.
    Acked(Acks),
    /// The sink's whole account of the batch, the first since it learnt
    /// the batch: make the ledger agree with it (what it lost goes out
    /// again); a ventilator not yet started refuses to run a batch the sink
    /// already holds results of without `--resume`.
    Snapshot(Acks),
    /// The whole account again from the sink we are in step with (we asked:
    /// ACKs were lost on the way): take it as acknowledgements.
    Recounted(Acks),
    /// DONE: the batch is complete. The loop answers BYE.
    Done(BatchDone),
    /// Every result has been acknowledged for [`DONE_GRACE`] and no DONE
    /// came: it was lost (or the sink has gone, its work done). Finish.
    DoneLost,
    /// The sink reports a worker lost (it stopped hearing from it).
    WorkerLost(WorkerInfo),
    /// A new sink instance answered: the link starts over (the snapshot
    /// that follows says what the old one lost).
    Restarted,
    /// The sink will not collect the batch, and says why.
    Refused(String),
    /// The sink is collecting another batch.
    Busy(u64),
    /// A worker the sink counts as ready takes tasks the other way (credit
    /// dispatch, and the worker pushes): it will never get a task.
    WrongDispatch(WorkerInfo),
    /// A message to drop and count: `reason` is the report's label.
    Dropped {
        /// The drop's label in the report.
        reason: &'static str,
        /// What it was, for the log.
        detail: String,
    },
}

/// The ventilator's side of the conversation with the sink (no socket).
#[derive(Debug)]
pub struct SinkLink {
    /// The batch as START announces it.
    info: BatchInfo,
    phase: Phase,
    /// The sink's instance as last heard (`None`: no sink answered yet).
    instance: Option<u64>,
    /// Workers the sink counts as ready (push dispatch waits for these).
    ready: usize,
    /// The smallest `--max-msg-size` among them (`usize::MAX`: none said).
    smallest_limit: usize,
    /// Their threads, for `--metrics` and push dispatch's packs.
    ready_threads: u64,
    /// Whether every ready worker takes several tasks in one message in
    /// push dispatch ([`WorkerInfo::packs`]).
    ready_take_packs: bool,
    /// Their names and the task kinds each said it serves (push dispatch
    /// starts a batch of one kind only when all of them serve it).
    ready_kinds: Vec<(String, Option<Vec<String>>)>,
    /// Parts of a snapshot received so far.
    snapshot: Acks,
    next_start: Instant,
    /// Since when the sink has said it holds more than we know of.
    behind_since: Option<Instant>,
    /// Since when every result has been acknowledged.
    all_acked_since: Option<Instant>,
    /// When the sink last said anything.
    heard_at: Option<Instant>,
}

impl SinkLink {
    /// A link about to announce `info`; the first START is due at `now`.
    pub fn new(info: BatchInfo, now: Instant) -> SinkLink {
        SinkLink {
            info,
            phase: Phase::Announcing,
            instance: None,
            ready: 0,
            smallest_limit: usize::MAX,
            ready_threads: 0,
            ready_take_packs: false,
            ready_kinds: Vec::new(),
            snapshot: Acks::default(),
            next_start: now,
            behind_since: None,
            all_acked_since: None,
            heard_at: None,
        }
    }

    /// How long the sink has said nothing (`None`: it never answered).
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.heard_at.map(|t| now.saturating_duration_since(t))
    }

    /// Whether to stop waiting for a sink silent for `limit`: only once
    /// every task has gone out at least once (`all_sent`, asked only then:
    /// it may be a scan of the batch), since until then there is work to
    /// hand out and a sink restarted with `--resume` would take it on.
    pub fn given_up(
        &self,
        now: Instant,
        limit: Duration,
        all_sent: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let silent = self.silent_for(now)?;
        (silent >= limit && self.phase != Phase::Done && all_sent()).then_some(silent)
    }

    /// The batch id.
    pub fn batch(&self) -> u64 {
        self.info.batch
    }

    /// Where the conversation stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Some sink has answered (to tell "no sink" from "no workers").
    pub fn heard(&self) -> bool {
        self.instance.is_some()
    }

    /// The sink knows the batch (it may be told of given-up tasks).
    pub fn knows_batch(&self) -> bool {
        self.phase != Phase::Announcing
    }

    /// The sink has told us everything it holds, and the ledger agrees:
    /// tasks may go out.
    pub fn in_step(&self) -> bool {
        matches!(self.phase, Phase::InStep | Phase::Running | Phase::Done)
    }

    /// Workers the sink counts as ready.
    pub fn sink_ready(&self) -> usize {
        self.ready
    }

    /// The smallest message-size limit among the workers the sink counts
    /// as ready (`usize::MAX` when none says).
    pub fn smallest_limit(&self) -> usize {
        self.smallest_limit
    }

    /// The workers the sink counts as ready, by name, with the task kinds
    /// each said it serves (`None`: the built-in kinds).
    pub fn sink_ready_kinds(&self) -> &[(String, Option<Vec<String>>)] {
        &self.ready_kinds
    }

    /// The threads of the workers the sink counts as ready.
    pub fn sink_ready_threads(&self) -> u64 {
        self.ready_threads
    }

    /// Push dispatch: the ready workers' threads, when every ready worker
    /// takes several tasks in one message (else `None`: one task a
    /// message, which any worker takes).
    pub fn push_packs(&self) -> Option<u64> {
        self.ready_take_packs.then_some(self.ready_threads)
    }

    /// Whether the batch may take `snapshot` (an [`Event::Snapshot`]'s): a
    /// sink that holds results of it before we `started` had them from an
    /// earlier ventilator, which is [`Error::Resume`] unless we `resume`.
    pub fn check_resume(&self, snapshot: &Acks, started: bool, resume: bool) -> Result<(), Error> {
        let tasks = self.info.tasks;
        let held: u64 = snapshot
            .ok
            .iter()
            .chain(&snapshot.failed)
            .map(|r| r.end.min(tasks).saturating_sub(r.start))
            .sum();
        if started || held == 0 {
            return Ok(());
        }
        let missing = tasks.saturating_sub(held);
        if !resume {
            return Err(Error::Resume {
                batch: self.batch(),
                held,
                missing,
            });
        }
        log::info!(
            "resuming batch {:016x}: the sink holds {held} results, {missing} tasks to go",
            self.batch()
        );
        Ok(())
    }

    /// START, when one is due at `now`: asking the sink for everything it
    /// holds (`resync`) when its count has run ahead of ours for
    /// [`RESYNC_AFTER`].
    pub fn start_due(&mut self, now: Instant) -> Option<BatchInfo> {
        if now < self.next_start {
            return None;
        }
        let mut info = self.info.clone();
        if self
            .behind_since
            .is_some_and(|t| now.saturating_duration_since(t) >= RESYNC_AFTER)
        {
            log::info!(
                "batch {:016x}: asking the sink for everything it holds",
                self.info.batch
            );
            info.resync = true;
            self.behind_since = None;
        }
        self.next_start = now
            + if self.knows_batch() {
                START_EVERY
            } else {
                START_EVERY_UNKNOWN
            };
        Some(info)
    }

    /// Whether GO is due: once dealing may start (`started`: the workers
    /// were ready) with this sink in step, and GO has not gone to it.
    pub fn go_due(&self, started: bool) -> bool {
        started && self.phase == Phase::InStep
    }

    /// GO has gone.
    pub fn go_sent(&mut self) {
        if self.phase == Phase::InStep {
            self.phase = Phase::Running;
        }
    }

    /// Every ~100 ms: `all_acked` says whether every result is
    /// acknowledged (and dealing had started); after [`DONE_GRACE`] of that
    /// without DONE, the batch is over.
    pub fn tick(&mut self, now: Instant, all_acked: bool) -> Option<Event> {
        if !all_acked {
            self.all_acked_since = None;
            return None;
        }
        let since = *self.all_acked_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= DONE_GRACE {
            self.phase = Phase::Done;
            return Some(Event::DoneLost);
        }
        None
    }

    /// Takes one message from the sink. `acked` is how many results the
    /// ledger has acknowledged (to notice the sink's count running ahead).
    pub fn on_message(&mut self, msg: Message, acked: u64, now: Instant, out: &mut Vec<Event>) {
        self.heard_at = Some(now);
        match msg {
            Message::Status(s) => {
                if self.instance.is_some_and(|i| i != s.instance) {
                    out.push(Event::Restarted);
                    self.start_over();
                }
                self.instance = Some(s.instance);
                match s.batch {
                    Some(b) if b == self.info.batch => {
                        if let Some(why) = s.refused {
                            out.push(Event::Refused(why));
                            return;
                        }
                        if self.phase == Phase::Announcing {
                            self.phase = Phase::Syncing;
                        }
                        self.ready = s.ready.len();
                        self.smallest_limit = s
                            .ready
                            .iter()
                            .filter_map(|w| w.max_msg_size)
                            .map(|m| usize::try_from(m).unwrap_or(usize::MAX))
                            .min()
                            .unwrap_or(usize::MAX);
                        self.ready_threads = s.ready.iter().map(|w| u64::from(w.threads)).sum();
                        self.ready_take_packs =
                            !s.ready.is_empty() && s.ready.iter().all(|w| w.packs);
                        self.ready_kinds = s
                            .ready
                            .iter()
                            .map(|w| (w.name(), w.kinds.clone()))
                            .collect();
                        if self.in_step() && s.received > acked {
                            self.behind_since.get_or_insert(now);
                        } else {
                            self.behind_since = None;
                        }
                        if self.info.dispatch == Dispatch::Credit {
                            out.extend(
                                s.ready
                                    .into_iter()
                                    .filter(|w| w.dispatch != Dispatch::Credit)
                                    .map(Event::WrongDispatch),
                            );
                        }
                    }
                    // A sink that knows no batch: it has just started.
                    None => self.start_over(),
                    // It refuses our batch while it collects another: its
                    // STATUS of that batch says so; a refusal is not ours.
                    Some(_) if s.refused.is_some() => {}
                    Some(other) => out.push(Event::Busy(other)),
                }
            }
            Message::Ack { batch, .. } if batch != self.info.batch => out.push(Event::Dropped {
                reason: "foreign batch",
                detail: "ACK of another batch".into(),
            }),
            Message::Ack {
                acks,
                part: AckPart::Update,
                ..
            } => out.push(Event::Acked(acks)),
            Message::Ack {
                acks,
                part: AckPart::Snapshot { more },
                ..
            } => {
                self.snapshot.ok.extend(acks.ok);
                self.snapshot.failed.extend(acks.failed);
                if more == 0 {
                    let whole = std::mem::take(&mut self.snapshot);
                    if self.in_step() {
                        out.push(Event::Recounted(whole));
                    } else {
                        // (A snapshot of our batch shows the sink knows
                        // it, even if its STATUS has not come.)
                        self.phase = Phase::InStep;
                        out.push(Event::Snapshot(whole));
                    }
                }
            }
            Message::Done(done) if done.batch == self.info.batch => {
                self.phase = Phase::Done;
                out.push(Event::Done(done));
            }
            Message::WorkerLost(w) => out.push(Event::WorkerLost(w)),
            other => out.push(Event::Dropped {
                reason: "unexpected kind",
                detail: format!("{:?} on the feedback socket", other.kind()),
            }),
        }
    }

    /// A new sink, or one that forgot the batch: announce it again and
    /// wait for its account.
    fn start_over(&mut self) {
        self.phase = Phase::Announcing;
        self.snapshot = Acks::default();
    }
}

/// The kinds the sink may send us, for counting anything else as
/// unexpected (see [`crate::decode`]).
pub(crate) const KINDS: &[Kind] = &[Kind::Status, Kind::Ack, Kind::Done, Kind::WorkerLost];

/// What the ventilator sends on its feedback DEALER: every send is
/// non-blocking except GO's, so a sink that is away never stalls dealing.
pub(crate) struct Feedback<'s> {
    /// DEALER, connected to the sink's ROUTER.
    socket: &'s zmq::Socket,
    batch: u64,
}

impl<'s> Feedback<'s> {
    pub(crate) fn new(socket: &'s zmq::Socket, batch: u64) -> Self {
        Feedback { socket, batch }
    }

    /// The socket, for polling and reading what the sink says.
    pub(crate) fn socket(&self) -> &'s zmq::Socket {
        self.socket
    }

    /// START: the DEALER queues it until the connection is up; whatever
    /// cannot be queued goes with the next one.
    pub(crate) fn start(&self, info: BatchInfo) {
        let _ = self
            .socket
            .send_multipart(Message::Start(info).frames(), zmq::DONTWAIT);
    }

    /// GO, retried while `keep_trying`: the sink starts its clock as the
    /// first task leaves, so GO goes first.
    pub(crate) fn go(&self, keep_trying: impl FnMut() -> bool) -> Result<(), Error> {
        common::sockets::send_frames(
            self.socket,
            &Message::Go { batch: self.batch }.frames(),
            keep_trying,
        )?;
        Ok(())
    }

    /// BYE: DONE reached us, the sink may stop repeating it. (Written with
    /// our batch in the header and `{}`, as the sink has always read it;
    /// `Message::Bye(None)` would carry neither.)
    pub(crate) fn bye(&self) {
        let bye = common::protocol::json_frames(
            Header::bare(Kind::Bye, self.batch),
            &serde_json::json!({}),
        );
        let _ = self.socket.send_multipart(bye.iter(), zmq::DONTWAIT);
    }

    /// GIVEN_UP for each task in `owed` (task, last attempt, reason), until
    /// the socket can take no more: the rest stay in `owed` for next time.
    pub(crate) fn verdicts(&self, owed: &mut Vec<(u64, u32, String)>) {
        if owed.is_empty() {
            return;
        }
        let mut left = std::mem::take(owed).into_iter();
        while let Some((task, attempt, reason)) = left.next() {
            let verdict = Message::GivenUp {
                batch: self.batch,
                task,
                attempt,
                reason,
            };
            if let Err(zmq::Error::EAGAIN | zmq::Error::EINTR) =
                self.socket.send_multipart(verdict.frames(), zmq::DONTWAIT)
            {
                // The sink is slow or away: the rest go next time round.
                if let Message::GivenUp { reason, .. } = verdict {
                    owed.push((task, attempt, reason));
                }
                owed.extend(left);
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use common::protocol::SinkStatus;

    const BATCH: u64 = 0xb47c;

    fn link(dispatch: Dispatch) -> (SinkLink, Instant) {
        let now = Instant::now();
        let info = BatchInfo {
            batch: BATCH,
            tasks: 10,
            expected_ms: 0,
            dispatch,
            resync: false,
        };
        (SinkLink::new(info, now), now)
    }

    #[test]
    fn a_silent_sink_is_given_up_only_after_the_limit_and_once_everything_went_out() {
        let (mut l, t0) = link(Dispatch::Credit);
        let limit = Duration::from_secs(60);
        let later = t0 + Duration::from_secs(600);
        // Never heard: `--wait` bounds that, not this.
        assert_eq!(l.given_up(later, limit, || true), None);
        assert_eq!(l.silent_for(later), None);
        l.on_message(status(1, Some(BATCH), 0), 0, t0, &mut Vec::new());
        let soon = t0 + Duration::from_secs(59);
        assert_eq!(l.given_up(soon, limit, || true), None);
        assert_eq!(l.silent_for(soon), Some(Duration::from_secs(59)));
        let then = t0 + limit;
        let left = l.given_up(then, limit, || false);
        assert_eq!(left, None, "work left to hand out");
        assert_eq!(l.given_up(then, limit, || true), Some(limit));
        // Hearing from it again starts the silence over.
        l.on_message(status(1, Some(BATCH), 0), 0, then, &mut Vec::new());
        let again = l.given_up(then + Duration::from_secs(1), limit, || true);
        assert_eq!(again, None);
    }

    fn worker(id: u64, dispatch: Dispatch) -> WorkerInfo {
        WorkerInfo {
            id,
            host: "h".into(),
            pid: id as u32,
            threads: 1,
            dispatch,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        }
    }

    fn status(instance: u64, batch: Option<u64>, received: u64) -> Message {
        Message::Status(SinkStatus {
            batch,
            ready: vec![worker(1, Dispatch::Credit)],
            received,
            refused: None,
            instance,
        })
    }

    fn snapshot(ok: Vec<std::ops::Range<u64>>, more: u64) -> Message {
        Message::Ack {
            batch: BATCH,
            acks: Acks { ok, failed: vec![] },
            part: AckPart::Snapshot { more },
        }
    }

    /// Feeds one message; returns its events.
    fn feed(l: &mut SinkLink, msg: Message, acked: u64, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        l.on_message(msg, acked, now, &mut out);
        out
    }

    fn done() -> Message {
        Message::Done(BatchDone {
            batch: BATCH,
            ok: 10,
            failed: 0,
            elapsed_ms: 1.0,
            output: None,
        })
    }

    #[test]
    fn results_held_before_we_started_need_resume() {
        let (l, _) = link(Dispatch::Credit);
        let acks = |ok: Vec<std::ops::Range<u64>>, failed| Acks { ok, failed };
        let held = acks(vec![0..3, 8..12], vec![5..6]);
        match l.check_resume(&held, false, false) {
            Err(Error::Resume {
                batch,
                held,
                missing,
            }) => assert_eq!(
                (batch, held, missing),
                (BATCH, 6, 4),
                "clipped to the batch"
            ),
            other => panic!("{other:?}"),
        }
        assert!(l.check_resume(&held, false, true).is_ok(), "--resume");
        assert!(l.check_resume(&held, true, false).is_ok(), "a sink restart");
        let beyond = acks(vec![10..20], vec![]);
        assert!(l.check_resume(&acks(vec![], vec![]), false, false).is_ok());
        assert!(
            l.check_resume(&beyond, false, false).is_ok(),
            "nothing of ours"
        );
    }

    #[test]
    fn the_phases_follow_each_other_start_status_snapshot_go_done() {
        let (mut l, t0) = link(Dispatch::Credit);
        assert_eq!(l.phase(), Phase::Announcing);
        assert!(!l.heard() && !l.knows_batch() && !l.in_step());
        // START at once, then every 500 ms while unknown.
        assert!(l.start_due(t0).is_some());
        assert!(l.start_due(t0 + Duration::from_millis(499)).is_none());
        assert!(l.start_due(t0 + START_EVERY_UNKNOWN).is_some());
        let t1 = t0 + START_EVERY_UNKNOWN;

        assert!(feed(&mut l, status(7, Some(BATCH), 0), 0, t1).is_empty());
        assert_eq!(l.phase(), Phase::Syncing);
        assert!(l.heard() && l.knows_batch() && !l.in_step());
        assert_eq!(l.sink_ready(), 1);
        assert_eq!(l.sink_ready_threads(), 1);
        assert!(!l.go_due(true), "no GO before the sink's account");
        // Known now: START every second.
        assert!(l.start_due(t1 + START_EVERY_UNKNOWN).is_some());
        let t2 = t1 + START_EVERY_UNKNOWN;
        assert!(l.start_due(t2 + START_EVERY_UNKNOWN).is_none());
        assert!(l.start_due(t2 + START_EVERY).is_some());

        let ev = feed(&mut l, snapshot(vec![], 0), 0, t2);
        assert_eq!(ev, vec![Event::Snapshot(Acks::default())]);
        assert_eq!(l.phase(), Phase::InStep);
        assert!(l.in_step());
        assert!(!l.go_due(false), "GO waits for the workers");
        assert!(l.go_due(true));
        l.go_sent();
        assert_eq!(l.phase(), Phase::Running);
        assert!(!l.go_due(true), "GO goes once to a sink");

        let ev = feed(
            &mut l,
            Message::Ack {
                batch: BATCH,
                acks: Acks {
                    ok: vec![0..3],
                    failed: vec![3..4],
                },
                part: AckPart::Update,
            },
            0,
            t2,
        );
        assert_eq!(
            ev,
            vec![Event::Acked(Acks {
                ok: vec![0..3],
                failed: vec![3..4]
            })]
        );
        let ev = feed(&mut l, done(), 10, t2);
        assert!(matches!(&ev[..], [Event::Done(d)] if d.ok == 10), "{ev:?}");
        assert_eq!(l.phase(), Phase::Done);
    }

    #[test]
    fn a_restarted_sink_is_announced_to_again_and_its_account_taken_afresh() {
        let (mut l, t) = link(Dispatch::Credit);
        feed(&mut l, status(1, Some(BATCH), 0), 0, t);
        feed(&mut l, snapshot(vec![0..4], 0), 0, t);
        l.go_sent();
        assert_eq!(l.phase(), Phase::Running);
        // Half a snapshot of the old sink is forgotten with it.
        feed(&mut l, snapshot(vec![0..1], 1), 4, t);

        // A new instance that does not know the batch.
        let ev = feed(&mut l, status(2, None, 0), 4, t);
        assert_eq!(ev, vec![Event::Restarted]);
        assert_eq!(l.phase(), Phase::Announcing);
        assert!(!l.knows_batch() && !l.in_step() && !l.go_due(true));
        let next = l.start_due(t).unwrap();
        assert!(!next.resync);
        assert!(l.start_due(t + START_EVERY_UNKNOWN).is_some(), "fast again");

        // It learns the batch and tells us what it holds: the ledger must
        // agree with that account alone, then GO goes to it again.
        assert!(feed(&mut l, status(2, Some(BATCH), 0), 4, t).is_empty());
        assert_eq!(l.phase(), Phase::Syncing);
        let ev = feed(&mut l, snapshot(vec![2..3], 0), 4, t);
        assert_eq!(
            ev,
            vec![Event::Snapshot(Acks {
                ok: vec![2..3],
                failed: vec![]
            })]
        );
        assert!(l.go_due(true));

        // A new instance that already knows the batch (it resumed).
        let ev = feed(&mut l, status(3, Some(BATCH), 1), 4, t);
        assert_eq!(ev, vec![Event::Restarted]);
        assert_eq!(l.phase(), Phase::Syncing);
    }

    #[test]
    fn a_sink_that_forgets_the_batch_is_announced_to_again() {
        let (mut l, t) = link(Dispatch::Push);
        feed(&mut l, status(1, Some(BATCH), 0), 0, t);
        feed(&mut l, snapshot(vec![], 0), 0, t);
        l.go_sent();
        let ev = feed(&mut l, status(1, None, 0), 0, t);
        assert!(ev.is_empty(), "the same instance: not a restart");
        assert_eq!(l.phase(), Phase::Announcing);
        assert!(!l.in_step());
    }

    #[test]
    fn a_snapshot_in_several_parts_is_one_account() {
        let (mut l, t) = link(Dispatch::Credit);
        feed(&mut l, status(1, Some(BATCH), 0), 0, t);
        assert!(feed(&mut l, snapshot(vec![0..2], 2), 0, t).is_empty());
        assert!(feed(&mut l, snapshot(vec![5..6], 1), 0, t).is_empty());
        assert_eq!(l.phase(), Phase::Syncing, "not in step on a part");
        let ev = feed(&mut l, snapshot(vec![8..10], 0), 0, t);
        assert_eq!(
            ev,
            vec![Event::Snapshot(Acks {
                ok: vec![0..2, 5..6, 8..10],
                failed: vec![]
            })]
        );
        assert!(l.in_step());
        // Asked again later: the whole account, taken as acks, and not
        // mixed with the first.
        assert!(feed(&mut l, snapshot(vec![0..3], 1), 5, t).is_empty());
        let ev = feed(&mut l, snapshot(vec![4..5], 0), 5, t);
        assert_eq!(
            ev,
            vec![Event::Recounted(Acks {
                ok: vec![0..3, 4..5],
                failed: vec![]
            })]
        );
    }

    #[test]
    fn a_lost_done_ends_the_batch_after_the_grace_once_everything_is_acked() {
        let (mut l, t) = link(Dispatch::Credit);
        assert_eq!(l.tick(t, true), None);
        assert_eq!(l.tick(t + DONE_GRACE / 2, true), None);
        // A result the sink lost (it restarted): the wait starts over.
        assert_eq!(l.tick(t + DONE_GRACE / 2, false), None);
        let t1 = t + DONE_GRACE;
        assert_eq!(l.tick(t1, true), None);
        assert_eq!(
            l.tick(t1 + DONE_GRACE - Duration::from_millis(1), true),
            None
        );
        assert_eq!(l.tick(t1 + DONE_GRACE, true), Some(Event::DoneLost));
        assert_eq!(l.phase(), Phase::Done);
    }

    #[test]
    fn behind_the_sinks_count_for_a_while_start_asks_for_everything() {
        let (mut l, t) = link(Dispatch::Credit);
        l.start_due(t);
        feed(&mut l, status(1, Some(BATCH), 0), 0, t);
        // Not in step yet: a count ahead is the snapshot on its way.
        feed(&mut l, status(1, Some(BATCH), 5), 0, t);
        feed(&mut l, snapshot(vec![0..5], 0), 0, t);
        l.go_sent();
        // Level with the sink: nothing to ask.
        feed(&mut l, status(1, Some(BATCH), 5), 5, t);
        assert!(!l.start_due(t + START_EVERY).unwrap().resync);
        // It holds 8, we know of 5 (ACKs lost on a broken link).
        let t1 = t + START_EVERY;
        feed(&mut l, status(1, Some(BATCH), 8), 5, t1);
        let t2 = t1 + START_EVERY;
        feed(&mut l, status(1, Some(BATCH), 9), 6, t2);
        assert!(!l.start_due(t2).unwrap().resync, "not behind long enough");
        let t3 = t1 + RESYNC_AFTER;
        feed(&mut l, status(1, Some(BATCH), 9), 6, t3);
        assert!(l.start_due(t3).unwrap().resync);
        // Asked once; the answer is a recount.
        assert!(!l.start_due(t3 + START_EVERY).unwrap().resync);
        let ev = feed(&mut l, snapshot(vec![0..9], 0), 6, t3);
        assert!(matches!(&ev[..], [Event::Recounted(_)]), "{ev:?}");
        // Catching up clears it.
        feed(&mut l, status(1, Some(BATCH), 10), 10, t3);
        feed(&mut l, status(1, Some(BATCH), 12), 10, t3 + START_EVERY);
        feed(&mut l, status(1, Some(BATCH), 12), 12, t3 + START_EVERY);
        assert!(
            !l.start_due(t3 + START_EVERY * 4).unwrap().resync,
            "caught up: nothing to ask"
        );
    }

    #[test]
    fn refusals_other_batches_and_strays_are_said() {
        let (mut l, t) = link(Dispatch::Credit);
        let mut refused = status(1, Some(BATCH), 0);
        if let Message::Status(s) = &mut refused {
            s.refused = Some("too large".into());
        }
        assert_eq!(
            feed(&mut l, refused, 0, t),
            vec![Event::Refused("too large".into())]
        );
        assert_eq!(l.phase(), Phase::Announcing);
        assert_eq!(
            feed(&mut l, status(1, Some(9), 0), 0, t),
            vec![Event::Busy(9)]
        );
        let mut theirs = status(1, Some(9), 0);
        if let Message::Status(s) = &mut theirs {
            s.refused = Some("not yours".into());
        }
        assert!(feed(&mut l, theirs, 0, t).is_empty());
        // A pushing worker, seen by the sink while we deal by credit.
        let mut mixed = status(1, Some(BATCH), 0);
        if let Message::Status(s) = &mut mixed {
            s.ready.push(worker(2, Dispatch::Push));
        }
        assert_eq!(
            feed(&mut l, mixed, 0, t),
            vec![Event::WrongDispatch(worker(2, Dispatch::Push))]
        );
        let foreign = Message::Ack {
            batch: 9,
            acks: Acks::default(),
            part: AckPart::Update,
        };
        assert!(matches!(
            &feed(&mut l, foreign, 0, t)[..],
            [Event::Dropped {
                reason: "foreign batch",
                ..
            }]
        ));
        let other_done = Message::Done(BatchDone {
            batch: 9,
            ok: 0,
            failed: 0,
            elapsed_ms: 0.0,
            output: None,
        });
        assert!(matches!(
            &feed(&mut l, other_done, 0, t)[..],
            [Event::Dropped {
                reason: "unexpected kind",
                ..
            }]
        ));
        assert!(matches!(
            &feed(&mut l, Message::Go { batch: BATCH }, 0, t)[..],
            [Event::Dropped {
                reason: "unexpected kind",
                ..
            }]
        ));
        assert_ne!(l.phase(), Phase::Done);
        let lost = feed(
            &mut l,
            Message::WorkerLost(worker(3, Dispatch::Credit)),
            0,
            t,
        );
        assert_eq!(lost, vec![Event::WorkerLost(worker(3, Dispatch::Credit))]);
    }
}
