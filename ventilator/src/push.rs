//! Push dispatch: the guide's PUSH round-robin, and its window.
//!
//! ```text
//!  ventilator PUSH ── TASK ──▶ PULL worker thread ×N  (round-robin)
//! ```
//!
//! A PUSH deals each message to the next worker connected *now*, blind to
//! how long tasks take and to who holds what. Everything given to it at
//! once goes to the workers already there, so the ventilator keeps at most
//! `--window` tasks out (sent, not yet acknowledged): workers that join
//! later get a share of the rest. When the PUSH is full (every pipe at its
//! high-water mark) the task it did not take waits as the *pending* task,
//! and goes first when the socket can take more.
//!
//! The PUSH does not know which worker holds what: when the sink reports
//! a worker lost, every unacknowledged task goes out again, and those the
//! worker said it held are charged against `--retries` ([`worker_lost`]).
//!
//! **Task kinds.** A PUSH cannot choose either which worker gets a task,
//! so it cannot route kinds: a batch of more than one kind is refused in
//! push dispatch (use credit), and a batch of one kind starts only when
//! every ready worker the sink hears serves it ([`unserved`]). A worker
//! that joins later and does not serve it still gets its share: it answers
//! `rejected` rather than run a kind it did not declare.

use std::collections::VecDeque;
use std::time::Instant;

use crate::Error;
use crate::ledger::{Ledger, NOBODY};
use crate::packer::{Pace, Packer};
use crate::plan::Plan;
use common::protocol::WorkerInfo;

/// Deals tasks on the PUSH socket within the window.
pub struct Push {
    /// `--window`: most tasks out at once.
    window: u64,
    /// Tasks the full PUSH did not take (one message's): they go first.
    pending: VecDeque<u64>,
    /// The message being built.
    packer: Packer,
    /// How many tasks a message may carry.
    pace: Pace,
}

impl Push {
    /// A dealer of `batch` keeping at most `window` tasks out.
    pub fn new(batch: u64, window: u64) -> Push {
        Push {
            window,
            pending: VecDeque::new(),
            packer: Packer::new(batch),
            pace: Pace::new(Instant::now()),
        }
    }

    /// Whether a task is waiting for the PUSH to take it.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the window has room for `out` tasks and one more.
    pub fn window_open(&self, out: u64) -> bool {
        out < self.window
    }

    /// The next task to send: a pending one if it still needs sending (it
    /// may have been acknowledged meanwhile), else the next ready one while
    /// the window has room.
    pub fn next(&mut self, ledger: &mut Ledger<'_>) -> Option<u64> {
        self.next_after(ledger, 0)
    }

    /// [`Push::next`] with `gathered` tasks already taken for the message
    /// being built (they count against the window).
    fn next_after(&mut self, ledger: &mut Ledger<'_>, gathered: u64) -> Option<u64> {
        while let Some(t) = self.pending.pop_front() {
            if ledger.still_taken(t) {
                return Some(t);
            }
        }
        if !self.window_open(ledger.out() + gathered) {
            return None;
        }
        ledger.next_task()
    }

    /// The PUSH did not take `t` (it is full): it goes first next time.
    pub fn full(&mut self, t: u64) {
        self.pending.push_back(t);
    }

    /// One dealing round: up to 10 000 tasks, until none is ready, the
    /// window is full or the PUSH is. Returns how many were sent.
    ///
    /// With `packs` (the ready worker threads, when every ready worker
    /// takes several tasks in a message) a message carries as many tasks
    /// as [`Pace`] allows; else one, as the guide's PUSH.
    ///
    /// A PUSH cannot choose its peer, so a task larger than the smallest
    /// `limit` of the ready workers (their `--max-msg-size`, as the sink
    /// heard it) is failed, saying why, rather than sent to a worker whose
    /// connection it would drop.
    pub fn deal(
        &mut self,
        ledger: &mut Ledger<'_>,
        push: &zmq::Socket,
        plan: &Plan,
        limit: usize,
        packs: Option<u64>,
    ) -> Result<u64, Error> {
        let now = Instant::now();
        self.packer.refresh();
        self.pace.sample(ledger.done(), now);
        let most = packs.map_or(1, |threads| self.pace.pack(threads));
        let mut sent = 0;
        while sent < 10_000 {
            self.packer.tasks.clear();
            while self.packer.tasks.len() < most {
                let gathered = self.packer.tasks.len() as u64;
                match self.next_after(ledger, gathered) {
                    Some(t) => self.packer.tasks.push(t),
                    None => break,
                }
            }
            if self.packer.tasks.is_empty() {
                break;
            }
            let too_large = |len| {
                format!(
                    "not sent: the task's message is {len} bytes, more than a ready worker takes (the smallest --max-msg-size is {limit}), and a PUSH cannot choose who gets it: raise it on the workers, or make the task smaller"
                )
            };
            let Some(head) = self.packer.encode(ledger, plan, limit, too_large) else {
                continue;
            };
            match push.send_multipart([&head[..], &self.packer.body[..]], zmq::DONTWAIT) {
                Ok(()) => {
                    for &t in &self.packer.tasks {
                        ledger.sent(t, NOBODY, now);
                    }
                    sent += self.packer.tasks.len() as u64;
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                    self.pending.extend(self.packer.tasks.iter().copied());
                    break;
                }
                Err(zmq::Error::ETERM) => break,
                Err(e) => return Err(common::Error::zmq("sending a task", e).into()),
            }
        }
        Ok(sent)
    }
}

/// The sink lost worker `w`: a PUSH cannot tell which tasks it held, so
/// every task out goes out again. Those the worker said it held (in its
/// last HEARTBEAT or its BYE, passed on by the sink) are charged against
/// `--retries`; the rest (held by live workers, or in a pipe) are not, until
/// a task has gone out more often than `--retries` allows: a task that
/// kills its worker before the next heartbeat names it is charged from
/// then on, so it cannot take down worker after worker for ever. A worker
/// that does not say (an older one) has every task out charged. Returns
/// how many went out again.
pub fn worker_lost(ledger: &mut Ledger<'_>, batch: u64, w: &WorkerInfo) -> usize {
    let out = ledger.held_by(None);
    let why = format!("worker {} was lost", w.name());
    let held: Option<std::collections::HashSet<u64>> = w.held.as_ref().map(|h| {
        h.iter()
            .filter(|[b, _]| *b == batch)
            .map(|[_, t]| *t)
            .collect()
    });
    match &held {
        Some(h) => log::warn!(
            "the sink lost worker {}: all {} unacknowledged tasks go out again (a PUSH cannot tell who holds what); the {} it said it held are charged against --retries",
            w.name(),
            out.len(),
            h.len()
        ),
        None => log::warn!(
            "the sink lost worker {}: push dispatch cannot tell which tasks it held, so all {} unacknowledged tasks go out again",
            w.name(),
            out.len()
        ),
    }
    for &t in &out {
        let charge = held.as_ref().is_none_or(|h| h.contains(&t))
            || ledger.attempt(t) > ledger.max_attempts();
        ledger.requeue(t, &why, charge);
    }
    out.len()
}

/// Push dispatch of a batch of one `kind`: the ready workers (by name,
/// with the kinds each said it serves, as the sink heard them) that do not
/// serve it, and so must not be connected when the PUSH deals; and how many
/// do serve it.
pub fn unserved<'w>(
    kind: &str,
    ready: &'w [(String, Option<Vec<String>>)],
) -> (Vec<&'w str>, usize) {
    let mut not = Vec::new();
    let mut serving = 0;
    for (name, said) in ready {
        if common::kinds::serves(said.as_deref(), kind) {
            serving += 1;
        } else {
            not.push(name.as_str());
        }
    }
    (not, serving)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::ledger::Order;
    use crate::plan::Plan;
    use common::protocol;
    use common::work::Work;
    use std::time::Duration;

    /// Sends what `next` gives until it gives nothing.
    fn send_all(p: &mut Push, l: &mut Ledger<'_>) -> Vec<u64> {
        std::iter::from_fn(|| {
            let t = p.next(l)?;
            l.sent(t, NOBODY, Instant::now());
            Some(t)
        })
        .collect()
    }

    #[test]
    fn the_window_holds_tasks_back_until_acknowledgements_make_room() {
        let plan = Plan::from(vec![Work::Noop; 5]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        let mut p = Push::new(1, 2);
        assert_eq!(send_all(&mut p, &mut l), vec![0, 1]);
        l.ack(&[0..1], &[]);
        assert_eq!(send_all(&mut p, &mut l), vec![2]);
        l.ack(&[1..3], &[]);
        assert_eq!(send_all(&mut p, &mut l), vec![3, 4]);
        assert!(!p.window_open(2));
    }

    #[test]
    fn the_task_a_full_push_did_not_take_goes_first_unless_acknowledged_meanwhile() {
        let plan = Plan::from(vec![Work::Noop; 4]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        let mut p = Push::new(1, 10);
        let t = p.next(&mut l).unwrap();
        p.full(t);
        assert!(p.pending());
        assert_eq!(p.next(&mut l), Some(t), "before the ready ones");
        assert!(!p.pending());
        l.sent(t, NOBODY, Instant::now());
        // Pending again, then acknowledged before the PUSH took it (a
        // restarted sink had its result): the next ready task goes instead.
        let t = p.next(&mut l).unwrap();
        assert_eq!(t, 1);
        p.full(t);
        l.ack(&[1..2], &[]);
        assert_eq!(p.next(&mut l), Some(2));
        assert_eq!(l.out(), 1);
    }

    #[test]
    fn a_lost_worker_sends_every_unacknowledged_task_again() {
        let plan = Plan::from(vec![Work::Noop; 5]);
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 3);
        let mut p = Push::new(1, 10);
        assert_eq!(send_all(&mut p, &mut l), vec![0, 1, 2, 3, 4]);
        l.ack(&[0..2], &[]);
        let w = WorkerInfo {
            id: 7,
            host: "h".into(),
            pid: 7,
            threads: 1,
            dispatch: protocol::Dispatch::Push,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        };
        assert_eq!(worker_lost(&mut l, 1, &w), 3);
        assert_eq!(l.out(), 0);
        let again = send_all(&mut p, &mut l);
        assert_eq!(again, vec![2, 3, 4], "the acknowledged ones stay done");
        assert!(again.iter().all(|&t| l.attempt(t) == 2), "attempt raised");
        assert_eq!(worker_lost(&mut l, 1, &w), 3, "and again, if lost again");
    }

    #[test]
    fn only_what_a_lost_worker_said_it_held_is_charged() {
        let plan = Plan::from(vec![Work::Noop; 4]);
        // --retries 1: two charged losses give a task up.
        let mut l = Ledger::new(&plan, Order::Input, Duration::from_secs(60), 1);
        let mut p = Push::new(9, 10);
        send_all(&mut p, &mut l);
        let lost = |held: Vec<[u64; 2]>| WorkerInfo {
            id: 7,
            host: "h".into(),
            pid: 7,
            threads: 1,
            dispatch: protocol::Dispatch::Push,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: Some(held),
            kinds: None,
            packs: false,
        };
        // It held task 0 (task 1 of another batch is no task of ours).
        assert_eq!(worker_lost(&mut l, 9, &lost(vec![[9, 0], [8, 1]])), 4);
        send_all(&mut p, &mut l);
        // Another held task 1; then task 0 is lost a second time.
        assert_eq!(worker_lost(&mut l, 9, &lost(vec![[9, 1]])), 4);
        send_all(&mut p, &mut l);
        // Tasks 2 and 3 went out twice, never charged: a third loss...
        assert_eq!(l.attempt(2), 3);
        worker_lost(&mut l, 9, &lost(vec![[9, 0]]));
        let mut given_up: Vec<u64> = l.owed.iter().map(|(t, _, _)| *t).collect();
        given_up.sort();
        // ...has task 0 lost twice on its workers, and task 1 (held once,
        // now out more often than --retries allows) given up.
        assert_eq!(given_up, vec![0, 1]);
        // 2 and 3 are charged now too (out a third time): once more, and
        // they are given up, so that a task no heartbeat names cannot take
        // down worker after worker for ever.
        assert_eq!(send_all(&mut p, &mut l), vec![2, 3]);
        worker_lost(&mut l, 9, &lost(vec![]));
        assert_eq!(l.given_up, 4);
    }
}
