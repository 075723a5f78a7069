//! Where credit dispatch lives: the roster of worker threads, and the
//! dealing of TASK/TASKS to whoever has credit.
//!
//! ```text
//!  worker thread DEALER ── CREDIT n (exact: idle) ──▶ ROUTER ventilator
//!                       ◀── TASK, or TASKS (up to min(credit, 1024)) ──
//!  worker's main DEALER ── HELLO, HEARTBEAT, BYE ──▶
//!                       ◀── HEARTBEAT ──
//! ```
//!
//! This is the guide's load-balancing broker with Paranoid Pirate
//! heartbeats. Each worker has one DEALER (its threads share it) and tells the
//! ROUTER how many tasks it can take; the ventilator gives the next ready
//! task to a thread with credit, in the order threads asked
//! ([`Roster`]'s eligible queue), and the ledger records which thread
//! holds which task. A worker not heard from for `--liveness` heartbeats is
//! dead, and what its threads held goes out again at once.
//!
//! [`Roster`] is the bookkeeping, without the socket: credit (exact or
//! additive, never above `--hwm` messages' worth of full packs, a cap each
//! TASKS header states; a worker keeps within `--hwm` messages of the size
//! its messages have had, so a thread's pipe can take what it asked for),
//! routes, liveness. It answers with [`Event`]s for the
//! loop to apply to the ledger, which knows who holds what. [`Dealer`] is
//! the hot path that sends, through a [`Packer`].
//!
//! **Task kinds.** Each worker says in its HELLO and HEARTBEAT which kinds
//! it serves ([`WorkerInfo::kinds`]); the roster keeps it as a bit set over
//! the batch's kinds, and a thread takes only tasks of those kinds
//! ([`Ledger::next_task_for`]). A thread whose worker serves nothing that
//! is ready keeps its credit and its place, and the round goes on to the
//! next thread: a kind no worker serves holds up no other kind. A worker
//! not yet heard from (its CREDIT came before its HELLO) is given nothing
//! until it says what it serves.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::drops::Drops;
use common::protocol::{self, Credit, Header, Kind, Message, WorkerInfo};

use crate::Error;
use crate::ledger::Ledger;
use crate::packer::Packer;
use crate::plan::Plan;

/// A worker thread, as the roster numbers it (and as the ledger records
/// who holds a task).
pub type ThreadId = u32;

pub use crate::packer::MAX_PACK;

/// What the roster learnt that concerns the tasks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A thread asked again on a new route: it reconnected, so the ROUTER
    /// dropped whatever was queued for the old one. What it held goes out
    /// again at once rather than at the end of its lease (not charged
    /// against `--retries`: the loss was not the task's doing).
    Rerouted(ThreadId),
    /// A worker was declared dead: what its threads held goes out again
    /// (charged against `--retries`: a task may be what kills its workers).
    Dead {
        /// Its threads.
        threads: Vec<ThreadId>,
        /// Why, for the log and the tasks' reasons.
        why: String,
    },
}

/// What a worker's message on the ROUTER asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Answer with a HEARTBEAT ([`Dealer::answer_heartbeat`]): the worker
    /// said HELLO, HEARTBEAT or BYE.
    pub answer: bool,
    /// What concerns the tasks out, for the ledger.
    pub event: Option<Event>,
}

/// One worker thread's DEALER, as the ROUTER knows it.
#[derive(Debug)]
struct Thread {
    /// The identity frames in front of its messages: one per ROUTER on the
    /// way (ours, and a queue device's).
    route: Vec<Vec<u8>>,
    credit: u32,
    /// In the eligible queue.
    queued: bool,
    /// Its worker's id (for the worker's message-size limit).
    worker: u64,
    /// The batch's kinds its worker serves, a bit per kind.
    kinds: u64,
}

/// A worker process.
#[derive(Debug)]
struct Worker {
    name: String,
    last: Instant,
    /// How often it says it beats.
    heartbeat: Duration,
    dead: bool,
    /// Said HELLO or HEARTBEAT (and not BYE since): counts as ready.
    hello: bool,
    threads: Vec<ThreadId>,
    /// The largest message frame it takes (`--max-msg-size`, as its HELLO
    /// says); `usize::MAX` when it does not say.
    max_msg: usize,
    /// The threads it runs tasks on, as its HELLO says (in credit dispatch
    /// the threads of a worker share one connection: one entry in
    /// `threads` for all of them).
    runs: u32,
    /// The kinds it said it serves (`None`: the built-in kinds), once it
    /// said HELLO, HEARTBEAT or BYE.
    said: Option<Option<Vec<String>>>,
    /// The same as a bit set over the batch's kinds (0 until it says).
    kinds: u64,
}

/// The worker threads that ask for tasks, their credit, and whether their
/// workers are alive. (No socket: see [`Dealer`] for the sending.)
///
/// A dead worker's threads have no credit until one of them asks again,
/// which shows the worker alive: so the eligible queue needs no liveness
/// check of its own.
#[derive(Debug)]
pub struct Roster {
    threads: Vec<Thread>,
    /// Threads by (worker, thread index): a thread keeps its number across
    /// reconnections.
    by_name: HashMap<(u64, u16), ThreadId>,
    /// Threads with credit, in the order they are to be served.
    eligible: VecDeque<ThreadId>,
    workers: HashMap<u64, Worker>,
    /// Most credit a thread may hold: what the high-water mark's number of
    /// messages carries when each is a full pack.
    cap: u32,
    /// `--heartbeat`: the least period a worker is allowed.
    heartbeat: Duration,
    /// `--liveness`: heartbeats missed before a worker is dead.
    liveness: u32,
    /// The batch's task kinds (bit `i` of a worker's set is `kinds[i]`);
    /// empty until [`Roster::set_kinds`]: then every thread takes any task.
    kinds: Vec<String>,
}

/// The bit set of `batch`'s kinds that a worker which `said` its kinds
/// serves.
fn kind_bits(batch: &[String], said: Option<&[String]>) -> u64 {
    batch
        .iter()
        .enumerate()
        .filter(|(_, k)| common::kinds::serves(said, k))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

impl Roster {
    /// An empty roster: credit capped at `hwm` messages of [`MAX_PACK`]
    /// tasks (a worker keeps what it asks for within `hwm` messages of the
    /// size its messages have had, so a pipe always takes what its thread
    /// asked for); a worker silent for `liveness` of its heartbeats (at
    /// least `heartbeat`) is dead.
    pub fn new(hwm: i32, heartbeat: Duration, liveness: u32) -> Roster {
        Roster {
            threads: Vec::new(),
            by_name: HashMap::new(),
            eligible: VecDeque::new(),
            workers: HashMap::new(),
            cap: u32::try_from(hwm.max(1))
                .unwrap_or(1000)
                .saturating_mul(MAX_PACK),
            heartbeat,
            liveness,
            kinds: Vec::new(),
        }
    }

    /// The batch's task kinds ([`Ledger::kind_names`]): each worker's
    /// kinds are known as a bit set over them, and its threads take only
    /// those.
    pub fn set_kinds(&mut self, kinds: &[String]) {
        self.kinds = kinds.to_vec();
    }

    /// A decoded message from a worker at `route`: CREDIT from a thread;
    /// HELLO, HEARTBEAT or BYE from its main socket, each answered with a
    /// HEARTBEAT. A HEARTBEAT or BYE without worker info (the ventilator's
    /// own forms) is malformed, and any other kind unexpected: both are
    /// counted in `drops`.
    pub fn on_message<F>(
        &mut self,
        msg: Message,
        route: &[F],
        now: Instant,
        drops: &mut Drops,
    ) -> Heard
    where
        F: std::ops::Deref<Target = [u8]>,
    {
        let (answer, event) = match msg {
            Message::Credit(c) => (false, self.credit(c, route, now)),
            Message::Hello(info) | Message::Heartbeat(Some(info)) => {
                self.heard(&info, now);
                (true, None)
            }
            Message::Bye(Some(info)) => (true, self.left(&info, now)),
            // The ventilator's own forms: a worker always says who it is.
            Message::Heartbeat(None) | Message::Bye(None) => {
                drops.note(
                    "tasks",
                    "malformed",
                    "malformed worker info: a worker's HEARTBEAT or BYE without it",
                );
                (false, None)
            }
            other => {
                drops.note(
                    "tasks",
                    "unexpected kind",
                    format!("{:?} on the task socket", other.kind()),
                );
                (false, None)
            }
        };
        Heard { answer, event }
    }

    /// A CREDIT from the thread at `route`.
    pub fn credit<F>(&mut self, c: Credit, route: &[F], now: Instant) -> Option<Event>
    where
        F: std::ops::Deref<Target = [u8]>,
    {
        let n = u32::try_from(c.tasks).unwrap_or(u32::MAX).min(self.cap);
        let mut event = None;
        let id = match self.by_name.get(&(c.worker, c.thread)) {
            Some(&id) => {
                let t = &mut self.threads[id as usize];
                let same = t.route.len() == route.len()
                    && t.route.iter().zip(route).all(|(a, b)| a[..] == b[..]);
                if !same {
                    t.route = route.iter().map(|f| f.to_vec()).collect();
                    t.credit = 0;
                    event = Some(Event::Rerouted(id));
                }
                id
            }
            None => {
                let id = self.threads.len() as ThreadId;
                self.threads.push(Thread {
                    route: route.iter().map(|f| f.to_vec()).collect(),
                    credit: 0,
                    queued: false,
                    worker: c.worker,
                    kinds: 0,
                });
                self.by_name.insert((c.worker, c.thread), id);
                id
            }
        };
        let w = self.seen(c.worker, now);
        if !w.threads.contains(&id) {
            w.threads.push(id);
        }
        let kinds = w.kinds;
        let t = &mut self.threads[id as usize];
        t.kinds = kinds;
        t.credit = if c.exact {
            n
        } else {
            t.credit.saturating_add(n).min(self.cap)
        };
        if t.credit > 0 && !t.queued {
            t.queued = true;
            self.eligible.push_back(id);
        }
        event
    }

    /// The most credit a thread may hold.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// HELLO or HEARTBEAT from a worker: it is alive, and ready.
    pub fn heard(&mut self, info: &WorkerInfo, now: Instant) {
        let w = self.greeted(info, now);
        if !w.hello {
            w.hello = true;
            log::info!("worker {} joined ({} thread(s))", w.name, info.threads);
        }
    }

    /// BYE: the worker is leaving; what it held goes out again.
    pub fn left(&mut self, info: &WorkerInfo, now: Instant) -> Option<Event> {
        let w = self.greeted(info, now);
        let why = format!("worker {} left", w.name);
        let event = self.declare_dead(info.id, why);
        if let Some(w) = self.workers.get_mut(&info.id) {
            w.hello = false;
        }
        event
    }

    /// The sink lost a worker. Results go to the sink, so its word counts;
    /// but not over our own, fresher news of the worker.
    pub fn sink_lost(&mut self, info: &WorkerInfo, now: Instant) -> Option<Event> {
        let heard = self.workers.get(&info.id).is_some_and(|w| {
            now.saturating_duration_since(w.last) < w.heartbeat.max(self.heartbeat) * 2
        });
        if heard {
            return None;
        }
        self.declare_dead(info.id, format!("the sink lost worker {}", info.name()))
    }

    /// Declares dead every worker silent for `--liveness` of its
    /// heartbeats (each once: it stays dead until heard from again).
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let silent: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                !w.dead
                    && now.saturating_duration_since(w.last)
                        > w.heartbeat.max(self.heartbeat) * self.liveness
            })
            .map(|(&id, _)| id)
            .collect();
        silent
            .into_iter()
            .filter_map(|id| {
                let w = &self.workers[&id];
                let why = format!(
                    "worker {} was silent for {:.1?} ({} heartbeats)",
                    w.name,
                    now.saturating_duration_since(w.last),
                    self.liveness
                );
                self.declare_dead(id, why)
            })
            .collect()
    }

    /// Workers ready: said HELLO or HEARTBEAT, and are not dead.
    pub fn ready(&self) -> usize {
        self.workers.values().filter(|w| w.hello && !w.dead).count()
    }

    /// The threads of the ready workers that have asked for tasks (as
    /// each worker's HELLO counts them: its threads may share one
    /// connection).
    pub fn ready_threads(&self) -> u64 {
        self.workers
            .values()
            .filter(|w| w.hello && !w.dead && !w.threads.is_empty())
            .map(|w| u64::from(w.runs).max(w.threads.len() as u64))
            .sum()
    }

    /// Ready workers that serve `kind` (as they said; one that has not
    /// said serves nothing yet).
    pub fn ready_serving(&self, kind: &str) -> usize {
        self.workers
            .values()
            .filter(|w| w.hello && !w.dead)
            .filter(
                |w| matches!(&w.said, Some(said) if common::kinds::serves(said.as_deref(), kind)),
            )
            .count()
    }

    /// The batch's kinds that some ready worker serves, a bit per kind.
    pub fn served(&self) -> u64 {
        self.workers
            .values()
            .filter(|w| w.hello && !w.dead)
            .fold(0, |bits, w| bits | w.kinds)
    }

    /// The kinds the thread's worker serves, a bit per kind of the batch
    /// (all bits before [`Roster::set_kinds`]).
    pub fn kinds(&self, id: ThreadId) -> u64 {
        if self.kinds.is_empty() {
            return u64::MAX;
        }
        self.threads[id as usize].kinds
    }

    /// Whether a thread may be waiting with credit.
    pub fn has_eligible(&self) -> bool {
        !self.eligible.is_empty()
    }

    /// The next thread in the eligible queue and its credit (0: it lost
    /// it since it queued; skip it). It leaves the queue: put it back with
    /// [`Roster::dealt`], [`Roster::first_again`] or [`Roster::last_again`].
    pub fn next_eligible(&mut self) -> Option<(ThreadId, u32)> {
        let id = self.eligible.pop_front()?;
        let t = &mut self.threads[id as usize];
        t.queued = false;
        Some((id, t.credit))
    }

    /// The thread's route, for the frames in front of a message to it.
    pub fn route(&self, id: ThreadId) -> &[Vec<u8>] {
        &self.threads[id as usize].route
    }

    /// The largest message frame the thread's worker takes, and its name.
    pub fn max_msg(&self, id: ThreadId) -> (usize, &str) {
        match self.workers.get(&self.threads[id as usize].worker) {
            Some(w) => (w.max_msg, &w.name),
            None => (usize::MAX, "?"),
        }
    }

    /// `n` tasks went to the thread: it queues again at the back while it
    /// has credit left.
    pub fn dealt(&mut self, id: ThreadId, n: u32) {
        let t = &mut self.threads[id as usize];
        t.credit = t.credit.saturating_sub(n);
        if t.credit > 0 && !t.queued {
            t.queued = true;
            self.eligible.push_back(id);
        }
    }

    /// The thread keeps its place at the front (nothing to send it now).
    pub fn first_again(&mut self, id: ThreadId) {
        self.threads[id as usize].queued = true;
        self.eligible.push_front(id);
    }

    /// The thread waits at the back (its pipe is full).
    pub fn last_again(&mut self, id: ThreadId) {
        let t = &mut self.threads[id as usize];
        if !t.queued {
            t.queued = true;
            self.eligible.push_back(id);
        }
    }

    /// The ROUTER cannot reach the thread (it is gone): forget its credit;
    /// it asks again if it comes back.
    pub fn unreachable(&mut self, id: ThreadId) {
        self.threads[id as usize].credit = 0;
    }

    /// A HELLO, HEARTBEAT or BYE's news: name, heartbeat, size limit and
    /// the task kinds it serves.
    fn greeted(&mut self, info: &WorkerInfo, now: Instant) -> &mut Worker {
        let bits = kind_bits(&self.kinds, info.kinds.as_deref());
        let w = self.seen(info.id, now);
        w.name = info.name();
        w.heartbeat = Duration::from_millis(info.heartbeat_ms.clamp(10, 60_000));
        w.max_msg = info
            .max_msg_size
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        w.runs = info.threads;
        // Said for the first time (a HEARTBEAT repeats it: nothing to do
        // then); its threads take those kinds from now on.
        if w.said.as_ref() != Some(&info.kinds) {
            w.said = Some(info.kinds.clone());
            w.kinds = bits;
            let (workers, threads) = (&self.workers, &mut self.threads);
            for &t in workers.get(&info.id).map_or(&[][..], |w| &w.threads) {
                if let Some(thread) = threads.get_mut(t as usize) {
                    thread.kinds = bits;
                }
            }
        }
        self.seen(info.id, now)
    }

    /// The worker's entry, marked alive now.
    fn seen(&mut self, id: u64, now: Instant) -> &mut Worker {
        let w = self.workers.entry(id).or_insert_with(|| Worker {
            name: format!("worker-{id:016x}"),
            last: now,
            heartbeat: Duration::from_secs(1),
            dead: false,
            hello: false,
            threads: Vec::new(),
            max_msg: usize::MAX,
            runs: 0,
            said: None,
            kinds: 0,
        });
        w.last = now;
        if w.dead {
            w.dead = false;
            log::info!("worker {} is heard from again", w.name);
        }
        w
    }

    /// Marks a known, live worker dead and takes its threads' credit.
    fn declare_dead(&mut self, id: u64, why: String) -> Option<Event> {
        let w = self.workers.get_mut(&id).filter(|w| !w.dead)?;
        w.dead = true;
        for &t in &w.threads {
            self.threads[t as usize].credit = 0;
        }
        Some(Event::Dead {
            threads: w.threads.clone(),
            why,
        })
    }
}

/// The kinds worker threads may send the ROUTER, for counting anything
/// else as unexpected (see [`crate::decode`]).
pub(crate) const KINDS: &[Kind] = &[Kind::Credit, Kind::Hello, Kind::Heartbeat, Kind::Bye];

/// Deals tasks on the ROUTER to threads with credit (the hot path).
pub struct Dealer {
    /// HEARTBEAT's header, the answer to a worker's.
    beat: [u8; protocol::HEADER_LEN],
    /// The message being built.
    packer: Packer,
    /// The last round stopped at a full pipe: it is tried again shortly.
    blocked: bool,
    /// The last round ended with tasks ready that no thread with credit
    /// serves: wait for news (credit, a HELLO, an ACK) rather than spin.
    stuck: bool,
    /// Threads passed over in a round (nothing ready of their kinds),
    /// reused.
    passed: Vec<ThreadId>,
}

impl Dealer {
    /// A dealer of `batch`, whose TASKS tell each worker the roster's cap
    /// on a thread's credit (see [`Roster::cap`]).
    pub fn new(batch: u64, credit_cap: u32) -> Dealer {
        let mut packer = Packer::new(batch);
        packer.credit_cap = credit_cap;
        Dealer {
            beat: Header::bare(Kind::Heartbeat, batch).encode(),
            packer,
            blocked: false,
            stuck: false,
            passed: Vec::new(),
        }
    }

    /// Whether the last round ended with ready tasks that no thread with
    /// credit serves.
    pub fn stuck(&self) -> bool {
        self.stuck
    }

    /// Whether the last round stopped at a full pipe.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Answers a worker's HELLO, HEARTBEAT or BYE with a HEARTBEAT, as in
    /// Paranoid Pirate, so it knows we are alive. (Dropped when its pipe
    /// is full: the next one will do.)
    pub fn answer_heartbeat<F>(&self, router: &zmq::Socket, route: &[F])
    where
        F: std::ops::Deref<Target = [u8]>,
    {
        let frames = route
            .iter()
            .map(|f| &f[..])
            .chain([&b""[..], &self.beat[..], &b""[..]]);
        let _ = router.send_multipart(frames, zmq::DONTWAIT);
    }

    /// One dealing round: to each thread with credit, in turn, as many
    /// ready tasks as it may take (at most [`MAX_PACK`] a message), until
    /// no task is ready, no thread has credit, or a pipe is full. Returns
    /// how many tasks were sent.
    pub fn deal(
        &mut self,
        roster: &mut Roster,
        ledger: &mut Ledger<'_>,
        router: &zmq::Socket,
        plan: &Plan,
    ) -> Result<u64, Error> {
        let now = Instant::now();
        self.packer.refresh();
        self.blocked = false;
        self.stuck = false;
        self.passed.clear();
        let mut sent = 0;
        let mut rounds = 0;
        let mut exhausted = false;
        loop {
            let Some((id, credit)) = roster.next_eligible() else {
                exhausted = true;
                break;
            };
            rounds += 1;
            if rounds > 10_000 {
                // Enough for one round: let acks and heartbeats in.
                roster.first_again(id);
                break;
            }
            if credit == 0 {
                continue;
            }
            let kinds = roster.kinds(id);
            self.packer.tasks.clear();
            while self.packer.tasks.len() < credit.min(MAX_PACK) as usize {
                match ledger.next_task_for(kinds) {
                    Some(t) => self.packer.tasks.push(t),
                    None => break,
                }
            }
            if self.packer.tasks.is_empty() {
                if kinds != u64::MAX && ledger.has_ready() {
                    // Nothing ready of the kinds its worker serves: it keeps
                    // its credit and its place, and the next thread may
                    // serve what is ready.
                    self.passed.push(id);
                    continue;
                }
                roster.first_again(id);
                break;
            }
            let (limit, worker) = roster.max_msg(id);
            let too_large = |len| {
                format!(
                    "not sent: the task's message is {len} bytes, more than worker {worker} takes (its --max-msg-size is {limit}): raise it there, or make the task smaller"
                )
            };
            let Some(head) = self.packer.encode(ledger, plan, limit, too_large) else {
                // Its only task cannot go to this worker at all (and is
                // failed, saying why): the thread's credit stands.
                roster.first_again(id);
                continue;
            };
            let frames = roster.route(id).iter().map(Vec::as_slice).chain([
                &b""[..],
                &head[..],
                &self.packer.body[..],
            ]);
            match router.send_multipart(frames, zmq::DONTWAIT) {
                Ok(()) => {
                    for &t in &self.packer.tasks {
                        ledger.sent(t, id, now);
                    }
                    sent += self.packer.tasks.len() as u64;
                    roster.dealt(id, self.packer.tasks.len() as u32);
                }
                Err(e) => {
                    for &t in self.packer.tasks.iter().rev() {
                        ledger.unsend(t);
                    }
                    match e {
                        zmq::Error::EHOSTUNREACH => roster.unreachable(id),
                        zmq::Error::EAGAIN | zmq::Error::EINTR => {
                            // A full pipe (several threads behind one queue
                            // device share one, or packs came smaller than the
                            // worker reckoned): tried again in a millisecond.
                            roster.last_again(id);
                            self.blocked = true;
                            break;
                        }
                        zmq::Error::ETERM => break,
                        e => return Err(common::Error::zmq("sending a task", e).into()),
                    }
                }
            }
        }
        // Those passed over go first again, in the order they were.
        for &id in self.passed.iter().rev() {
            roster.first_again(id);
        }
        self.stuck = exhausted && !self.passed.is_empty();
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Dispatch;

    const HB: Duration = Duration::from_secs(1);

    fn roster() -> Roster {
        Roster::new(10, HB, 3)
    }

    fn credit(worker: u64, thread: u16, tasks: u64, exact: bool) -> Credit {
        Credit {
            worker,
            thread,
            tasks,
            exact,
        }
    }

    fn info(id: u64) -> WorkerInfo {
        WorkerInfo {
            id,
            host: "h".into(),
            pid: id as u32,
            threads: 2,
            dispatch: Dispatch::Credit,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        }
    }

    fn route(r: &str) -> [&[u8]; 1] {
        [r.as_bytes()]
    }

    /// Empties the eligible queue: (thread, credit) in order.
    fn queue(r: &mut Roster) -> Vec<(ThreadId, u32)> {
        std::iter::from_fn(|| r.next_eligible()).collect()
    }

    #[test]
    fn a_thread_takes_the_kinds_its_worker_said_and_nothing_before_it_says() {
        let t0 = Instant::now();
        let mut r = roster();
        r.set_kinds(&["exec".into(), "A".into()]);
        r.credit(credit(1, 0, 5, true), &route("a"), t0);
        r.credit(credit(2, 0, 5, true), &route("b"), t0);
        // Credit before HELLO: nothing is dealt to it yet.
        assert_eq!((r.kinds(0), r.kinds(1)), (0, 0));
        r.heard(&info(1), t0);
        let mut a = info(2);
        a.kinds = Some(vec!["A".into(), "other".into()]);
        r.heard(&a, t0);
        // Worker 1 said nothing: the built-in kinds (exec); worker 2: A.
        assert_eq!((r.kinds(0), r.kinds(1)), (0b01, 0b10));
        assert_eq!(r.served(), 0b11);
        assert_eq!((r.ready_serving("exec"), r.ready_serving("A")), (1, 1));
        assert_eq!(r.ready_serving("other"), 1);
        // A thread that asks later takes its worker's kinds at once.
        r.credit(credit(2, 1, 5, true), &route("c"), t0);
        assert_eq!(r.kinds(2), 0b10);
        // Before the batch's kinds are set, every thread takes any task.
        let mut r = roster();
        r.credit(credit(1, 0, 5, true), &route("a"), t0);
        assert_eq!(r.kinds(0), u64::MAX);
    }

    #[test]
    fn credit_is_exact_or_added_and_capped_at_the_high_water_mark() {
        let mut r = roster();
        let t = Instant::now();
        assert_eq!(r.credit(credit(1, 0, 4, true), &route("a"), t), None);
        r.credit(credit(1, 0, 3, false), &route("a"), t);
        assert_eq!(queue(&mut r), vec![(0, 7)], "added, queued once");
        r.credit(credit(1, 0, 2, true), &route("a"), t);
        assert_eq!(queue(&mut r), vec![(0, 2)], "exact: an idle thread");
        // Capped at the high-water mark's 10 messages of full packs.
        r.credit(credit(1, 0, 8000, false), &route("a"), t);
        r.credit(credit(1, 0, 8000, false), &route("a"), t);
        assert_eq!(queue(&mut r), vec![(0, 10 * MAX_PACK)], "capped");
        r.credit(credit(1, 0, u64::MAX, true), &route("a"), t);
        assert_eq!(queue(&mut r), vec![(0, 10 * MAX_PACK)]);
        r.credit(credit(1, 0, 0, true), &route("a"), t);
        assert_eq!(queue(&mut r), vec![], "no credit, not queued");
    }

    #[test]
    fn threads_are_served_in_the_order_they_asked_and_queue_again_at_the_back() {
        let mut r = roster();
        let t = Instant::now();
        r.credit(credit(1, 0, 5, true), &route("a"), t);
        r.credit(credit(2, 0, 1, true), &route("b"), t);
        r.credit(credit(1, 1, 2, true), &route("c"), t);
        assert_eq!(r.route(1), &[b"b".to_vec()][..]);
        let (a, n) = r.next_eligible().unwrap();
        assert_eq!((a, n), (0, 5));
        r.dealt(a, 3);
        let (b, _) = r.next_eligible().unwrap();
        r.dealt(b, 1);
        // b used its credit: gone; a has 2 left: behind c.
        assert_eq!(queue(&mut r), vec![(2, 2), (0, 2)]);
        // Nothing to send: the thread keeps its place at the front.
        r.credit(credit(2, 0, 1, true), &route("b"), t);
        r.credit(credit(1, 0, 1, true), &route("a"), t);
        let (first, _) = r.next_eligible().unwrap();
        r.first_again(first);
        assert_eq!(queue(&mut r), vec![(1, 1), (0, 1)]);
        // A full pipe: to the back; a thread gone: no credit.
        r.credit(credit(2, 0, 1, true), &route("b"), t);
        r.credit(credit(1, 0, 1, true), &route("a"), t);
        let (full, _) = r.next_eligible().unwrap();
        r.last_again(full);
        let (gone, _) = r.next_eligible().unwrap();
        r.unreachable(gone);
        r.last_again(gone);
        assert_eq!(queue(&mut r), vec![(1, 1), (0, 0)]);
        assert!(!r.has_eligible());
    }

    #[test]
    fn a_thread_on_a_new_route_gives_back_what_it_held() {
        let mut r = roster();
        let t = Instant::now();
        r.credit(credit(1, 0, 5, true), &route("a"), t);
        r.credit(credit(1, 1, 5, true), &route("b"), t);
        queue(&mut r);
        // The same route: nothing lost.
        assert_eq!(r.credit(credit(1, 0, 1, false), &route("a"), t), None);
        // Through a queue device now: two identity frames.
        let via: [&[u8]; 2] = [b"q", b"a2"];
        assert_eq!(
            r.credit(credit(1, 0, 1, false), &via, t),
            Some(Event::Rerouted(0))
        );
        assert_eq!(r.route(0), &[b"q".to_vec(), b"a2".to_vec()][..]);
        assert_eq!(
            queue(&mut r),
            vec![(0, 1)],
            "the old credit went with the old route"
        );
    }

    #[test]
    fn a_silent_worker_is_declared_dead_once_and_revives_when_heard() {
        let mut r = roster();
        let t = Instant::now();
        r.heard(&info(1), t);
        r.heard(&info(2), t);
        r.credit(credit(1, 0, 5, true), &route("a"), t);
        r.credit(credit(1, 1, 5, true), &route("b"), t);
        r.credit(credit(2, 0, 5, true), &route("c"), t);
        assert_eq!(r.ready(), 2);
        // As their HELLOs count them: two each (a worker's threads share
        // one connection, so one that asks speaks for all).
        assert_eq!(r.ready_threads(), 4);
        // Worker 2 keeps beating; worker 1 falls silent.
        r.heard(&info(2), t + 2 * HB);
        assert!(r.expire(t + 3 * HB).is_empty(), "three beats is the limit");
        let t4 = t + 3 * HB + Duration::from_millis(1);
        let dead = r.expire(t4);
        match &dead[..] {
            [Event::Dead { threads, why }] => {
                assert_eq!(threads, &vec![0, 1]);
                assert!(why.contains("silent") && why.contains("h:1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.expire(t4 + HB).is_empty(), "dead once");
        assert_eq!(r.ready(), 1);
        assert_eq!(
            r.ready_threads(),
            2,
            "a dead worker's threads are not ready"
        );
        // Its threads lost their credit: only worker 2's is dealt to.
        assert_eq!(queue(&mut r), vec![(0, 0), (1, 0), (2, 5)]);
        // A thread asks again: the worker is alive (not ready until it
        // says HEARTBEAT).
        r.credit(credit(1, 1, 2, true), &route("b"), t4 + HB);
        assert_eq!(queue(&mut r), vec![(1, 2)]);
        assert_eq!(r.ready(), 2, "hello stays once said");
    }

    #[test]
    fn a_worker_saying_bye_is_dead_and_not_ready() {
        let mut r = roster();
        let t = Instant::now();
        r.heard(&info(1), t);
        r.credit(credit(1, 0, 5, true), &route("a"), t);
        assert_eq!(r.ready(), 1);
        match r.left(&info(1), t) {
            Some(Event::Dead { threads, why }) => {
                assert_eq!(threads, vec![0]);
                assert_eq!(why, "worker h:1 left");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.ready(), 0);
        assert_eq!(queue(&mut r), vec![(0, 0)]);
        // It comes back: ready again.
        r.heard(&info(1), t + HB);
        assert_eq!(r.ready(), 1);
    }

    #[test]
    fn worker_messages_are_answered_counted_or_dropped_by_kind() {
        let mut r = roster();
        let mut drops = Drops::default();
        let t = Instant::now();
        let a = route("a");
        let heard = |answer, event| Heard { answer, event };
        // CREDIT: no answer; the thread queues.
        let msg = Message::Credit(credit(1, 0, 2, true));
        assert_eq!(r.on_message(msg, &a, t, &mut drops), heard(false, None));
        assert_eq!(r.ready(), 0, "credit alone is not ready");
        // HELLO and HEARTBEAT: answered; the worker is ready.
        let msg = Message::Hello(info(1));
        assert_eq!(r.on_message(msg, &a, t, &mut drops), heard(true, None));
        let msg = Message::Heartbeat(Some(info(1)));
        assert_eq!(r.on_message(msg, &a, t, &mut drops), heard(true, None));
        assert_eq!(r.ready(), 1);
        assert_eq!(queue(&mut r), vec![(0, 2)]);
        // BYE: answered, and what its threads held goes out again.
        let dead = Event::Dead {
            threads: vec![0],
            why: "worker h:1 left".into(),
        };
        let msg = Message::Bye(Some(info(1)));
        assert_eq!(
            r.on_message(msg, &a, t, &mut drops),
            heard(true, Some(dead))
        );
        assert_eq!(r.ready(), 0);
        assert_eq!(drops.total(), 0);
        // Without worker info: malformed, not answered, nothing changes.
        for msg in [Message::Heartbeat(None), Message::Bye(None)] {
            assert_eq!(r.on_message(msg, &a, t, &mut drops), heard(false, None));
        }
        assert_eq!(r.ready(), 0);
        assert_eq!(drops.by_reason().get("malformed"), Some(&2));
        // A kind for the sink: unexpected.
        let msg = Message::WorkerLost(info(1));
        assert_eq!(r.on_message(msg, &a, t, &mut drops), heard(false, None));
        assert_eq!(drops.by_reason().get("unexpected kind"), Some(&1));
        assert_eq!(drops.total(), 3);
    }

    #[test]
    fn the_sinks_word_on_a_lost_worker_yields_to_fresher_news() {
        let mut r = roster();
        let t = Instant::now();
        r.heard(&info(1), t);
        r.credit(credit(1, 0, 5, true), &route("a"), t);
        assert_eq!(r.sink_lost(&info(1), t + HB), None, "heard a beat ago");
        assert!(matches!(
            r.sink_lost(&info(1), t + 2 * HB),
            Some(Event::Dead { .. })
        ));
        assert_eq!(r.sink_lost(&info(1), t + 3 * HB), None, "dead already");
        assert_eq!(r.sink_lost(&info(9), t), None, "never seen");
    }
}
