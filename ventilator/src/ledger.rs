//! The ventilator's book of tasks: which are waiting for their dependencies,
//! ready, out with a worker (and until when), or acknowledged by the sink.
//!
//! Every task stays in the book until the sink acknowledges its result, so
//! nothing is lost when a worker dies or a lease runs out: the task goes out
//! again with its attempt number raised, and the sink keeps the first result
//! (at-least-once execution, exactly-once results). A task that has used up
//! its attempts is given up: the sink is told (GIVEN_UP, with the reason),
//! records it as failed, and the batch still completes.
//!
//! In credit dispatch the ledger also knows which worker thread holds each
//! task out (a [`crate::credit::ThreadId`]), so what a dead worker held goes
//! out again at once.
//!
//! Ready tasks wait in one queue per task kind (see [`common::kinds`]), so
//! that a thread takes only what its worker serves
//! ([`Ledger::next_task_for`]) and a kind no worker serves holds up no
//! other kind. A batch of one kind has one queue, as before kinds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::plan::Plan;

/// No worker thread holds the task.
pub const NOBODY: u32 = u32::MAX;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for tasks it runs after, or an earlier stage.
    Blocked,
    /// In the ready queue.
    Ready,
    /// Taken from the queue to be sent ([`Ledger::next_task`]), not sent yet.
    Taken,
    /// Sent; its lease runs.
    Out,
    /// The sink has its result: ok.
    Ok,
    /// The sink has its result: not ok (or it was given up).
    Failed,
}

/// The order ready tasks go out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Input order.
    Input,
    /// The costliest ready task first (longest-processing-time first), by
    /// the tasks' cost hints; tasks without one come after, in input order.
    Cost,
}

enum Queue {
    Fifo(Runs),
    Cost(BinaryHeap<(u64, Reverse<u64>)>),
}

/// A first-in, first-out queue of task ids kept as runs of consecutive
/// ids: the ready tasks of a batch without dependencies are one run
/// (`0..n`), so the queue costs nothing per task however large the batch.
#[derive(Debug, Default)]
struct Runs(VecDeque<Range<u64>>);

impl Runs {
    fn push_back(&mut self, t: u64) {
        match self.0.back_mut() {
            Some(last) if last.end == t => last.end += 1,
            _ => self.0.push_back(t..t + 1),
        }
    }

    fn front(&self) -> Option<&u64> {
        self.0.front().map(|r| &r.start)
    }

    fn pop_front(&mut self) -> Option<u64> {
        let first = self.0.front_mut()?;
        let t = first.start;
        first.start += 1;
        if first.is_empty() {
            self.0.pop_front();
        }
        Some(t)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The book of a batch's tasks (see the module doc).
pub struct Ledger<'p> {
    plan: &'p Plan,
    state: Vec<State>,
    attempt: Vec<u32>,
    /// Losses counted against `--retries` (a restarted sink's are not).
    charged: Vec<u32>,
    /// Whether the task's success has already freed what waits for it;
    /// empty when nothing waits for anything.
    released: Vec<bool>,
    /// The worker thread holding an `Out` task, in credit dispatch.
    holder: Vec<u32>,
    /// How many things each blocked task still waits for; empty when
    /// nothing waits for anything.
    waiting: Vec<u32>,
    dependants: Vec<Vec<u64>>,
    /// Per stage, its tasks (but for the first stage's, which nothing
    /// needs: they are ready from the start); and how many of them are not
    /// yet ok.
    stages: BTreeMap<u32, Vec<u64>>,
    stage_left: BTreeMap<u32, u64>,
    /// Stages up to this one are released.
    open_stage: Option<u32>,
    failed_stage: Option<u32>,
    /// Per kind (see [`Plan::kind_table`]): tasks to send again, first,
    /// and ready tasks. One of each when the batch has one kind.
    retry: Vec<VecDeque<u64>>,
    ready: Vec<Queue>,
    /// Each task's kind, as an index into `kind_names`; empty when the
    /// batch has one kind.
    kind_of: Vec<u8>,
    kind_names: Vec<String>,
    /// Lease deadlines in the order tasks went out (the timeout is the same
    /// for all, so the front expires first).
    leases: VecDeque<(Instant, u64, u32)>,
    task_timeout: Duration,
    max_attempts: u32,
    done: u64,
    out: u64,
    /// Tasks sent again, so far.
    pub resent: u64,
    /// Tasks given up (or failed by a failed dependency), so far.
    pub given_up: u64,
    /// Verdicts the ventilator owes the sink (GIVEN_UP): tasks given up or
    /// failed because of a dependency, each with its last attempt and the
    /// reason.
    pub owed: Vec<(u64, u32, String)>,
    /// Everything given up so far, to say again to a restarted sink.
    gave_up: HashMap<u64, String>,
}

impl<'p> Ledger<'p> {
    /// The book of `plan`'s tasks, which must have passed
    /// [`Plan::check`]: those waiting for nothing are ready.
    pub fn new(plan: &'p Plan, order: Order, task_timeout: Duration, retries: u32) -> Self {
        let n = plan.len();
        // A batch of no dependencies and one stage keeps no word per task
        // for them: nothing waits, nothing is released.
        let constrained = plan.has_constraints();
        let per_task = |yes: bool| if yes { n } else { 0 };
        // A plan is checked before it gets here (`Ventilator::run_plan`);
        // one that was not goes in one queue.
        let (kind_names, mut kind_of) = plan
            .kind_table()
            .unwrap_or_else(|_| (vec![String::new()], Vec::new()));
        let kinds = kind_names.len().max(1);
        if kinds == 1 {
            kind_of = Vec::new();
        }
        let capacity = if kinds == 1 { n } else { 0 };
        let mut l = Ledger {
            plan,
            state: vec![State::Blocked; n],
            attempt: vec![1; n],
            charged: vec![0; n],
            released: vec![false; per_task(constrained)],
            holder: vec![NOBODY; n],
            waiting: vec![0; per_task(constrained)],
            dependants: Vec::new(),
            stages: BTreeMap::new(),
            stage_left: BTreeMap::new(),
            open_stage: None,
            failed_stage: None,
            retry: (0..kinds).map(|_| VecDeque::new()).collect(),
            ready: (0..kinds)
                .map(|_| match order {
                    Order::Input => Queue::Fifo(Runs::default()),
                    Order::Cost => Queue::Cost(BinaryHeap::with_capacity(capacity)),
                })
                .collect(),
            kind_of,
            kind_names,
            leases: VecDeque::new(),
            task_timeout,
            max_attempts: retries.saturating_add(1),
            done: 0,
            out: 0,
            resent: 0,
            given_up: 0,
            owed: Vec::new(),
            gave_up: HashMap::new(),
        };
        if !plan.after.is_empty() {
            l.dependants = vec![Vec::new(); n];
            for t in 0..n as u64 {
                for &a in plan.after_of(t) {
                    l.dependants[a as usize].push(t);
                    l.waiting[t as usize] += 1;
                }
            }
        }
        let first = plan.stage.iter().copied().min().unwrap_or(0);
        for t in 0..n as u64 {
            let s = plan.stage_of(t);
            let tasks = l.stages.entry(s).or_default();
            if s != first {
                tasks.push(t);
            }
            *l.stage_left.entry(s).or_default() += 1;
        }
        for (&s, tasks) in &l.stages {
            if s != first {
                for &t in tasks {
                    l.waiting[t as usize] += 1;
                }
            }
        }
        l.open_stage = (n > 0).then_some(first);
        for t in 0..n as u64 {
            if l.waiting.get(t as usize).is_none_or(|&w| w == 0) {
                l.make_ready(t);
            }
        }
        l
    }

    /// How many tasks the batch has.
    pub fn tasks(&self) -> u64 {
        self.state.len() as u64
    }

    /// Tasks whose result the sink has acknowledged (or given up).
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Tasks sent and not acknowledged.
    pub fn out(&self) -> u64 {
        self.out
    }

    /// Whether every task has gone out at least once (or needs not: its
    /// result is in). A scan of the batch: for rare questions only.
    pub fn all_sent_once(&self) -> bool {
        let waiting = |(s, a): (&State, &u32)| {
            *a == 1 && matches!(s, State::Blocked | State::Ready | State::Taken)
        };
        !self.state.iter().zip(&self.attempt).any(waiting)
    }

    /// Tasks done ok, and done not ok.
    pub fn outcome_counts(&self) -> (u64, u64) {
        let ok = self.state.iter().filter(|s| **s == State::Ok).count() as u64;
        (ok, self.done - ok.min(self.done))
    }

    /// How many times a task may be lost, charged, before it is given up
    /// (`--retries` + 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The task's current attempt (1 the first time it goes out).
    pub fn attempt(&self, t: u64) -> u32 {
        self.attempt[t as usize]
    }

    /// The task's kind, as an index into [`Ledger::kind_names`].
    fn class(&self, t: u64) -> usize {
        self.kind_of.get(t as usize).map_or(0, |&k| k as usize)
    }

    /// The batch's task kinds; a worker's kinds are a bit set of their
    /// indices ([`Ledger::next_task_for`]).
    pub fn kind_names(&self) -> &[String] {
        &self.kind_names
    }

    fn make_ready(&mut self, t: u64) {
        self.state[t as usize] = State::Ready;
        let c = self.class(t);
        match &mut self.ready[c] {
            Queue::Fifo(q) => q.push_back(t),
            Queue::Cost(h) => {
                h.push((self.plan.cost_of(t).unwrap_or(0), Reverse(t)));
            }
        }
    }

    /// The next task to send: re-sends first, then the ready queue. The
    /// task is `Taken` until [`Ledger::sent`] or [`Ledger::unsend`]. (A task
    /// may sit in both queues; only one entry finds it ready.)
    pub fn next_task(&mut self) -> Option<u64> {
        self.next_task_for(u64::MAX)
    }

    /// [`Ledger::next_task`] among the kinds in `kinds` (bit `i` for
    /// [`Ledger::kind_names`]`[i]`): re-sends first, then the ready task
    /// that goes first by `--order` among the heads of those kinds' queues.
    pub fn next_task_for(&mut self, kinds: u64) -> Option<u64> {
        if self.ready.len() == 1 {
            // One kind: one queue, no choice to make.
            return if kinds & 1 != 0 {
                self.take_from(0)
            } else {
                None
            };
        }
        let chosen = (0..self.ready.len()).filter(|&c| kinds & (1 << c) != 0);
        let mut best: Option<(usize, (u64, Reverse<u64>))> = None;
        for c in chosen {
            while let Some(t) = self.retry[c].pop_front() {
                if self.state[t as usize] == State::Ready {
                    self.state[t as usize] = State::Taken;
                    return Some(t);
                }
            }
            if let Some(key) = self.head(c)
                && best.is_none_or(|(_, b)| key > b)
            {
                best = Some((c, key));
            }
        }
        self.take_from(best?.0)
    }

    /// The order key of the first ready task of kind `c` (the greater goes
    /// first), dropping entries that are ready no more.
    fn head(&mut self, c: usize) -> Option<(u64, Reverse<u64>)> {
        loop {
            let (key, t) = match &self.ready[c] {
                Queue::Fifo(q) => {
                    let t = *q.front()?;
                    ((0, Reverse(t)), t)
                }
                Queue::Cost(h) => {
                    let key = *h.peek()?;
                    (key, key.1.0)
                }
            };
            if self.state[t as usize] == State::Ready {
                return Some(key);
            }
            match &mut self.ready[c] {
                Queue::Fifo(q) => {
                    q.pop_front();
                }
                Queue::Cost(h) => {
                    h.pop();
                }
            }
        }
    }

    /// Takes the next task of kind `c`: a re-send first, then its queue.
    fn take_from(&mut self, c: usize) -> Option<u64> {
        while let Some(t) = self.retry[c].pop_front() {
            if self.state[t as usize] == State::Ready {
                self.state[t as usize] = State::Taken;
                return Some(t);
            }
        }
        loop {
            let t = match &mut self.ready[c] {
                Queue::Fifo(q) => q.pop_front()?,
                Queue::Cost(h) => h.pop()?.1.0,
            };
            if self.state[t as usize] == State::Ready {
                self.state[t as usize] = State::Taken;
                return Some(t);
            }
        }
    }

    /// Per kind (as in [`Ledger::kind_names`]), how many tasks are ready
    /// to go and wait for a worker. A scan of the batch: for the log.
    pub fn ready_by_kind(&self) -> Vec<u64> {
        let mut counts = vec![0; self.kind_names.len()];
        for (t, s) in self.state.iter().enumerate() {
            if *s == State::Ready {
                counts[self.class(t as u64)] += 1;
            }
        }
        counts
    }

    /// Whether a task taken to be sent still needs sending (its result may
    /// have been acknowledged meanwhile).
    pub fn still_taken(&self, t: u64) -> bool {
        self.state[t as usize] == State::Taken
    }

    /// Puts back a task that [`Ledger::next_task`] gave but that could not
    /// be sent: it goes first next time, same attempt.
    pub fn unsend(&mut self, t: u64) {
        if self.state[t as usize] == State::Taken {
            self.state[t as usize] = State::Ready;
            let c = self.class(t);
            self.retry[c].push_front(t);
        }
    }

    /// Fails a task taken to be sent that cannot be sent at all (too large
    /// for the worker), telling the sink why (GIVEN_UP).
    pub fn refuse(&mut self, t: u64, why: String) {
        if self.state[t as usize] == State::Taken {
            log::warn!("task {}: {why}", self.plan.name(t));
            self.fail(t, why, true);
        }
    }

    /// Whether a task may be waiting in a queue (cheap, may say yes wrongly).
    pub fn has_ready(&self) -> bool {
        self.retry.iter().any(|r| !r.is_empty())
            || self.ready.iter().any(|q| match q {
                Queue::Fifo(q) => !q.is_empty(),
                Queue::Cost(h) => !h.is_empty(),
            })
    }

    /// The task has gone to `holder` (or to the PUSH socket: [`NOBODY`]).
    pub fn sent(&mut self, t: u64, holder: u32, now: Instant) {
        if self.state[t as usize] != State::Taken {
            // Acknowledged while in hand: the copy sent is a spare.
            return;
        }
        self.state[t as usize] = State::Out;
        self.holder[t as usize] = holder;
        self.out += 1;
        self.leases
            .push_back((now + self.task_timeout, t, self.attempt[t as usize]));
    }

    /// Sends again, with attempt + 1, every task whose lease ran out.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, t, attempt)) = self.leases.front() {
            let live = self.state[t as usize] == State::Out && self.attempt[t as usize] == attempt;
            if live && deadline > now {
                break;
            }
            self.leases.pop_front();
            if live {
                let why = format!(
                    "no result within --task-timeout {}",
                    humantime::format_duration(self.task_timeout)
                );
                log::warn!(
                    "task {} (attempt {attempt}): {why}; sending it again",
                    self.plan.name(t)
                );
                self.requeue(t, &why, true);
            }
        }
    }

    /// The task's result is lost (its worker died, or the sink that had it
    /// restarted): send it again, or give it up when `charge`d losses have
    /// used up its retries. (Losses not the task's doing, such as a sink
    /// restart or a worker's reconnection, are not charged.)
    pub fn requeue(&mut self, t: u64, why: &str, charge: bool) {
        let i = t as usize;
        if self.state[i] != State::Out {
            return;
        }
        self.out -= 1;
        self.holder[i] = NOBODY;
        let attempt = self.attempt[i];
        if charge {
            self.charged[i] += 1;
        }
        if self.charged[i] >= self.max_attempts {
            let reason = format!("given up after {attempt} attempt(s); the last: {why}");
            log::warn!("task {}: {reason}", self.plan.name(t));
            self.fail(t, reason, true);
            return;
        }
        self.attempt[t as usize] = attempt + 1;
        self.resent += 1;
        self.state[t as usize] = State::Ready;
        let c = self.class(t);
        self.retry[c].push_back(t);
    }

    /// Every `Out` task held by worker thread `peer`, or (`None`) every
    /// `Out` task.
    pub fn held_by(&self, peer: Option<u32>) -> Vec<u64> {
        (0..self.tasks())
            .filter(|&t| {
                self.state[t as usize] == State::Out
                    && peer.is_none_or(|p| self.holder[t as usize] == p)
            })
            .collect()
    }

    /// The sink acknowledged these results.
    pub fn ack(&mut self, ok: &[Range<u64>], failed: &[Range<u64>]) -> u64 {
        let mut unknown = 0;
        for (ranges, good) in [(ok, true), (failed, false)] {
            for r in ranges {
                let end = r.end.min(self.tasks());
                unknown += r.end - end;
                for t in r.start.min(end)..end {
                    self.acked(t, good);
                }
            }
        }
        unknown
    }

    fn acked(&mut self, t: u64, good: bool) {
        let i = t as usize;
        match self.state[i] {
            State::Ok => {}
            // A result that beat the give-up to the sink: it stands.
            State::Failed if good => self.state[i] = State::Ok,
            State::Failed => {}
            s => {
                if s == State::Out {
                    self.out -= 1;
                }
                // (A `Taken` task is dropped by `sent`.)
                self.holder[i] = NOBODY;
                if good {
                    self.state[i] = State::Ok;
                    self.done += 1;
                    self.release(t);
                } else {
                    self.fail(t, String::new(), false);
                }
            }
        }
    }

    /// Frees what waited for `t`, now ok; once per task, however often it
    /// comes back (a restarted sink may have lost its result).
    fn release(&mut self, t: u64) {
        let Some(released) = self.released.get_mut(t as usize) else {
            // Nothing waits for anything.
            return;
        };
        if std::mem::replace(released, true) {
            return;
        }
        if let Some(ds) = self.dependants.get(t as usize) {
            for d in ds.clone() {
                self.unwait(d);
            }
        }
        let s = self.plan.stage_of(t);
        if let Some(left) = self.stage_left.get_mut(&s) {
            *left -= 1;
        }
        // Open the next stages while the open one is finished.
        while let Some(open) = self.open_stage {
            if self.stage_left.get(&open).copied().unwrap_or(0) > 0 {
                break;
            }
            let next = self.stages.range(open + 1..).next().map(|(&s, _)| s);
            self.open_stage = next;
            if let Some(next) = next {
                for d in self.stages[&next].clone() {
                    self.unwait(d);
                }
            }
        }
    }

    fn unwait(&mut self, d: u64) {
        let i = d as usize;
        if self.state[i] == State::Blocked {
            self.waiting[i] = self.waiting[i].saturating_sub(1);
            if self.waiting[i] == 0 {
                self.make_ready(d);
            }
        }
    }

    /// Marks `t` failed; `tell` when the sink must hear it from us. Fails
    /// whatever waits for it.
    fn fail(&mut self, t: u64, reason: String, tell: bool) {
        let mut stack = vec![(t, reason, tell)];
        while let Some((t, reason, tell)) = stack.pop() {
            let i = t as usize;
            if matches!(self.state[i], State::Ok | State::Failed) {
                continue;
            }
            // (Callers have taken an `Out` task off the count already.)
            self.state[i] = State::Failed;
            self.done += 1;
            if tell {
                self.given_up += 1;
                self.gave_up.insert(t, reason.clone());
                self.owed.push((t, self.attempt[i], reason));
            }
            let name = self.plan.name(t);
            if let Some(ds) = self.dependants.get(i) {
                for &d in ds {
                    if self.state[d as usize] == State::Blocked {
                        stack.push((
                            d,
                            format!("not run: task {name}, which it runs after, failed"),
                            true,
                        ));
                    }
                }
            }
            let s = self.plan.stage_of(t);
            if self.failed_stage.is_none_or(|f| s < f) {
                self.failed_stage = Some(s);
                let later: Vec<u64> = self
                    .stages
                    .range(s + 1..)
                    .flat_map(|(_, ts)| ts.iter().copied())
                    .collect();
                for d in later {
                    if self.state[d as usize] == State::Blocked {
                        stack.push((
                            d,
                            format!("not run: task {name} of the earlier stage {s} failed"),
                            true,
                        ));
                    }
                }
            }
        }
    }

    /// Makes the book agree with what a sink holds (`ok`, `failed`: all of
    /// it) after the sink restarted or the ventilator did: results the sink
    /// lost are done again, tasks out may have had their results lost with
    /// the old sink and go out again, given-up tasks are told again.
    pub fn reconcile(&mut self, ok: &[Range<u64>], failed: &[Range<u64>]) {
        let mut held = vec![false; self.state.len()];
        for r in ok.iter().chain(failed) {
            for t in r.start.min(self.tasks())..r.end.min(self.tasks()) {
                held[t as usize] = true;
            }
        }
        for t in 0..self.tasks() {
            let i = t as usize;
            if held[i] {
                continue;
            }
            match self.state[i] {
                State::Out => self.requeue(t, "the sink restarted; its result may be lost", false),
                State::Ok | State::Failed => {
                    self.done -= 1;
                    if let Some(reason) = self.gave_up.get(&t) {
                        self.done += 1;
                        self.owed.push((t, self.attempt[i], reason.clone()));
                    } else {
                        self.attempt[i] += 1;
                        self.state[i] = State::Ready;
                        let c = self.class(t);
                        self.retry[c].push_back(t);
                        self.resent += 1;
                    }
                }
                State::Ready | State::Taken | State::Blocked => {}
            }
        }
        self.ack(ok, failed);
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use common::work::Work;

    #[test]
    fn the_ready_queue_keeps_runs_and_gives_ids_back_in_the_order_they_came() {
        let mut q = Runs::default();
        for t in [0, 1, 2, 5, 6, 3] {
            q.push_back(t);
        }
        assert_eq!(q.0.len(), 3, "three runs: {:?}", q.0);
        let mut out = Vec::new();
        while let Some(t) = q.pop_front() {
            out.push(t);
        }
        assert_eq!(out, [0, 1, 2, 5, 6, 3]);
        assert!(q.is_empty() && q.front().is_none());
    }

    #[test]
    fn a_batch_without_dependencies_keeps_no_word_per_task_for_them() {
        let plan = Plan::from(vec![Work::Noop; 1000]);
        let l = Ledger::new(&plan, Order::Input, Duration::from_secs(1), 0);
        assert!(l.waiting.is_empty() && l.released.is_empty());
        assert!(l.stages.values().all(Vec::is_empty));
        assert!(matches!(&l.ready[..], [Queue::Fifo(q)] if q.0.len() == 1));
    }

    fn drain(l: &mut Ledger<'_>) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(t) = l.next_task() {
            l.sent(t, NOBODY, Instant::now());
            v.push(t);
        }
        v
    }

    /// A plan of data tasks of these kinds.
    fn kinds_plan(kinds: &[&str]) -> Plan {
        let mut plan = Plan::from(vec![
            Work::Data {
                data: serde_json::Value::Null
            };
            kinds.len()
        ]);
        plan.kinds = kinds.iter().map(|k| Some(k.to_string())).collect();
        plan
    }

    #[test]
    fn each_kind_has_its_queue_and_an_unserved_kind_holds_up_no_other() {
        let plan = kinds_plan(&["A", "B", "A", "C", "B"]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        assert_eq!(l.kind_names(), ["A", "B", "C"]);
        let (a, b, c) = (1u64, 2u64, 4u64);
        // Nobody serves A: B and C go on, in input order among themselves.
        assert_eq!(l.next_task_for(b | c), Some(1));
        assert_eq!(l.next_task_for(b | c), Some(3));
        assert_eq!(l.next_task_for(c), None);
        assert_eq!(l.ready_by_kind(), vec![2, 1, 0]);
        assert_eq!(l.next_task_for(a), Some(0));
        // A lost task goes first again, to a thread of its kind only.
        l.sent(0, 7, Instant::now());
        l.requeue(0, "worker died", true);
        assert_eq!(l.next_task_for(b), Some(4));
        assert_eq!(l.next_task_for(a | b), Some(0));
        assert_eq!(l.next_task(), Some(2));
        assert!(!l.has_ready());
        // A batch of one kind has one queue: a thread serves it or nothing.
        let one = Plan::from(vec![Work::Noop; 2]);
        let mut l = Ledger::new(&one, Order::Input, Duration::from_secs(60), 3);
        assert_eq!(l.kind_names(), ["noop"]);
        assert_eq!(l.next_task_for(0), None);
        assert_eq!(l.next_task_for(1), Some(0));
        // By cost: the costliest head among the kinds served.
        let mut plan = kinds_plan(&["A", "B", "B"]);
        plan.cost = vec![Some(5), Some(1), Some(9)];
        let mut l = Ledger::new(&plan, Order::Cost, Duration::from_secs(60), 3);
        assert_eq!(l.next_task_for(a | b), Some(2));
        assert_eq!(l.next_task_for(a | b), Some(0));
    }

    #[test]
    fn dependencies_and_stages_hold_tasks_back_until_ok() {
        let mut plan = Plan::from(vec![Work::Noop; 5]);
        plan.after = vec![vec![], vec![0], vec![], vec![], vec![]];
        plan.stage = vec![0, 0, 0, 1, 1];
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        assert_eq!(drain(&mut l), vec![0, 2]);
        l.ack(&[0..1], &[]);
        assert_eq!(drain(&mut l), vec![1]);
        l.ack(&[1..3], &[]);
        assert_eq!(drain(&mut l), vec![3, 4]);
        l.ack(&[3..5], &[]);
        assert_eq!(l.done(), 5);
        assert!(l.owed.is_empty());
    }

    #[test]
    fn a_failed_dependency_fails_its_dependants_and_later_stages() {
        let mut plan = Plan::from(vec![Work::Noop; 4]);
        plan.after = vec![vec![], vec![0], vec![1], vec![]];
        plan.stage = vec![0, 0, 0, 1];
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        assert_eq!(drain(&mut l), vec![0]);
        l.ack(&[], &[0..1]);
        assert_eq!(l.done(), 4);
        let owed: Vec<u64> = l.owed.iter().map(|o| o.0).collect();
        assert_eq!(owed.len(), 3);
        assert!(
            l.owed.iter().all(|o| o.2.contains("failed")),
            "{:?}",
            l.owed
        );
    }

    #[test]
    fn every_task_sent_once_counts_resends_and_results_but_not_waiting_tasks() {
        let mut plan = Plan::from(vec![Work::Noop; 3]);
        plan.after = vec![vec![], vec![0], vec![]];
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        assert!(!l.all_sent_once());
        assert_eq!(drain(&mut l), vec![0, 2]);
        assert!(!l.all_sent_once(), "task 1 waits for task 0");
        // Task 2's worker dies: it waits to go out again, but it went once.
        l.requeue(2, "worker died", true);
        l.ack(&[0..1], &[]);
        assert!(!l.all_sent_once(), "task 1 is ready, never sent");
        assert_eq!(l.next_task(), Some(2));
        assert!(!l.all_sent_once(), "task 1 is still ready");
        let t = l.next_task().unwrap();
        assert!(!l.all_sent_once(), "taken is not sent");
        l.sent(t, NOBODY, Instant::now());
        assert!(l.all_sent_once());
    }

    #[test]
    fn lost_tasks_go_out_again_until_their_attempts_run_out() {
        let plan = Plan::from(vec![Work::Noop; 2]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_millis(1), 1);
        assert_eq!(drain(&mut l), vec![0, 1]);
        l.ack(&[1..2], &[]);
        l.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(l.attempt(0), 2);
        assert_eq!(drain(&mut l), vec![0]);
        l.requeue(0, "worker died", true);
        assert_eq!(l.next_task(), None);
        assert_eq!(l.done(), 2);
        assert_eq!(l.given_up, 1);
        assert!(l.owed[0].2.contains("worker died"));
    }

    #[test]
    fn a_result_lost_and_done_again_releases_its_stage_once() {
        let mut plan = Plan::from(vec![Work::Noop; 3]);
        plan.stage = vec![0, 0, 1];
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 0);
        assert_eq!(drain(&mut l), vec![0, 1]);
        l.ack(&[0..1], &[]);
        // The sink restarts having lost task 0's result: 0 goes out again,
        // not charged against --retries 0.
        l.reconcile(&[], &[]);
        assert_eq!(l.given_up, 0);
        let mut again = drain(&mut l);
        again.sort();
        assert_eq!(again, vec![0, 1]);
        l.ack(&[0..1], &[]);
        // Stage 1 must still wait for task 1.
        assert_eq!(l.next_task(), None);
        l.ack(&[1..2], &[]);
        assert_eq!(drain(&mut l), vec![2]);
        // A task acknowledged while in hand is not counted as out.
        let plan = Plan::from(vec![Work::Noop; 2]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 0);
        let t = l.next_task().unwrap();
        l.ack(&[t..t + 1], &[]);
        assert!(!l.still_taken(t));
        l.sent(t, NOBODY, Instant::now());
        assert_eq!(l.out(), 0);
    }

    #[test]
    fn cost_order_sends_the_costliest_first_and_reconcile_redoes_lost_results() {
        let plan = Plan::from(vec![
            Work::Sleep { ms: 5 },
            Work::Sleep { ms: 50 },
            Work::Noop,
            Work::Sleep { ms: 20 },
        ]);
        let mut l = Ledger::new(&plan, Order::Cost, Duration::from_secs(60), 3);
        assert_eq!(drain(&mut l), vec![1, 3, 0, 2]);
        l.ack(&[0..4], &[]);
        // A restarted sink holds only 0 and 1.
        l.reconcile(&[0..2], &[]);
        assert_eq!(l.done(), 2);
        let mut again = drain(&mut l);
        again.sort();
        assert_eq!(again, vec![2, 3]);
    }
}
