//! Writing tasks into one message, for either dispatch: one TASK, or a
//! TASKS message of records, never a frame larger than the receiver takes.
//!
//! Credit dispatch packs what a thread's credit allows (at most
//! [`MAX_PACK`]); push dispatch packs as many as a millisecond of work
//! holds, as [`Pace`] measures it, and one task a message otherwise, as
//! the guide's PUSH does. [`Packer`] reuses its buffers and reads the clock
//! once per 32 tasks, so a task costs no allocation and no system call of
//! its own.

use std::time::{Duration, Instant};

use common::clock::Coarse;
use common::protocol::{self, Header, Kind};

use crate::ledger::Ledger;
use crate::plan::Plan;

/// Most tasks in one TASKS message. A thread is sent no more than its
/// credit, and asks for about a millisecond of work (see the worker's
/// `credit.rs`); push dispatch packs a millisecond of work at most
/// ([`Pace`]). So large packs only ever form for tasks of a microsecond or
/// so, where each message saved is a wake-up of four threads saved.
pub const MAX_PACK: u32 = 1024;

/// The tasks of one message, and the message.
pub struct Packer {
    batch: u64,
    /// The message body being built, reused.
    pub body: Vec<u8>,
    /// One task body inside a TASKS message, reused.
    record: Vec<u8>,
    /// The tasks of the message being built, reused.
    pub tasks: Vec<u64>,
    clock: Coarse,
    /// Said in each TASKS header: the most credit a thread may hold (0: a
    /// worker keeps to its own high-water mark).
    pub credit_cap: u32,
}

impl Packer {
    /// A packer of `batch`'s tasks.
    pub fn new(batch: u64) -> Packer {
        Packer {
            batch,
            body: Vec::with_capacity(256),
            record: Vec::new(),
            tasks: Vec::with_capacity(MAX_PACK as usize),
            // 32 tasks sent in one go leave within microseconds of each
            // other; each dealing round reads the clock afresh.
            clock: Coarse::new(32),
            credit_cap: 0,
        }
    }

    /// Reads the clock afresh (once per dealing round).
    pub fn refresh(&mut self) {
        self.clock.refresh();
    }

    /// Writes `self.tasks` into `self.body`: one TASK, or TASKS records,
    /// never a frame larger than `limit` (the receiver's `--max-msg-size`,
    /// which would drop its connection). Tasks that do not fit go back to
    /// the ledger for the next message; a task too large on its own fails,
    /// saying `too_large(its size)` (`None`: nothing left to send).
    pub fn encode(
        &mut self,
        ledger: &mut Ledger<'_>,
        plan: &Plan,
        limit: usize,
        too_large: impl FnOnce(usize) -> String,
    ) -> Option<[u8; protocol::HEADER_LEN]> {
        let clock = self.clock.now_us();
        self.body.clear();
        if self.tasks.len() > 1 {
            let mut fitted = self.tasks.len();
            for (i, &t) in self.tasks.iter().enumerate() {
                self.record.clear();
                plan.encode_task(&mut self.record, clock, t);
                if self.body.len() + protocol::RECORD_HEAD_LEN + self.record.len() > limit {
                    fitted = i;
                    break;
                }
                protocol::encode_record(&mut self.body, t, ledger.attempt(t), &self.record);
            }
            if fitted < self.tasks.len() {
                // The first alone may still fit as a TASK (no record head).
                let keep = fitted.max(1);
                for &t in self.tasks[keep..].iter().rev() {
                    ledger.unsend(t);
                }
                self.tasks.truncate(keep);
                self.body.clear();
                if keep > 1 {
                    for &t in &self.tasks {
                        self.record.clear();
                        plan.encode_task(&mut self.record, clock, t);
                        protocol::encode_record(&mut self.body, t, ledger.attempt(t), &self.record);
                    }
                }
            }
            if self.tasks.len() > 1 {
                return Some(
                    Header {
                        kind: Kind::Tasks,
                        attempt: self.credit_cap,
                        batch: self.batch,
                        task: self.tasks.len() as u64,
                    }
                    .encode(),
                );
            }
        }
        let t = self.tasks[0];
        plan.encode_task(&mut self.body, clock, t);
        if self.body.len() > limit {
            ledger.refuse(t, too_large(self.body.len()));
            self.tasks.clear();
            return None;
        }
        Some(
            Header {
                kind: Kind::Task,
                attempt: ledger.attempt(t),
                batch: self.batch,
                task: t,
            }
            .encode(),
        )
    }
}

/// A pack holds about this much work (s), as the credit a worker thread
/// asks for does.
const PACK_WORK_S: f64 = 0.001;
/// How often the rate of acknowledgements is measured again.
const PACE_EVERY: Duration = Duration::from_millis(10);

/// Push dispatch: how many tasks one message may carry. A PUSH cannot
/// choose who gets a message, so a pack is a share of the work dealt
/// blind; it is kept to a millisecond of work. The ventilator does not
/// know how long a task runs, but it sees how fast results are
/// acknowledged: with `threads` worker threads ready, a task takes at most
/// about `threads / rate` (less when the workers are not what holds the
/// batch back), so `rate × 1 ms / threads` tasks are at most a millisecond
/// of work. Until acknowledgements come, and for any task of a
/// millisecond or more, that is one task a message: the guide's PUSH.
#[derive(Debug)]
pub struct Pace {
    /// When the rate was last measured, and the count acknowledged then.
    at: Instant,
    done: u64,
    /// Tasks acknowledged per second, smoothed.
    per_sec: f64,
}

impl Pace {
    /// No acknowledgement seen yet, at `now`.
    pub fn new(now: Instant) -> Pace {
        Pace {
            at: now,
            done: 0,
            per_sec: 0.0,
        }
    }

    /// `done` tasks are acknowledged at `now`.
    pub fn sample(&mut self, done: u64, now: Instant) {
        let dt = now.saturating_duration_since(self.at);
        if dt < PACE_EVERY {
            return;
        }
        let rate = done.saturating_sub(self.done) as f64 / dt.as_secs_f64();
        self.per_sec = (self.per_sec + rate) / 2.0;
        self.at = now;
        self.done = done;
    }

    /// Most tasks in one message for `threads` ready worker threads.
    pub fn pack(&self, threads: u64) -> usize {
        let p = self.per_sec * PACK_WORK_S / threads.max(1) as f64;
        (p as usize).clamp(1, MAX_PACK as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_task_a_message_until_acknowledgements_show_the_tasks_are_quick() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        assert_eq!(pace.pack(1), 1, "nothing known: the guide's PUSH");
        // Too soon to measure.
        pace.sample(1000, t0 + MS);
        assert_eq!(pace.pack(1), 1);
        // A million a second on one thread: a microsecond a task.
        let mut done = 0;
        for i in 1..=10 {
            done += 10_000;
            pace.sample(done, t0 + 10 * MS * i);
        }
        assert_eq!(pace.pack(1), 999, "a millisecond of work");
        assert_eq!(pace.pack(4), 249, "shared among four threads");
        assert_eq!(pace.pack(0), 999, "no threads known: as one");
        // Ten million a second would be more than a pack may hold.
        for i in 11..=20 {
            done += 100_000;
            pace.sample(done, t0 + 10 * MS * i);
        }
        assert_eq!(pace.pack(1), MAX_PACK as usize);
    }

    #[test]
    fn tasks_of_a_millisecond_or_more_go_one_a_message() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        // 10 threads busy with 10 ms tasks: 1000 a second.
        for i in 1..=50u32 {
            pace.sample(10 * u64::from(i), t0 + 10 * MS * i);
        }
        assert_eq!(pace.pack(10), 1);
        // The guide's batch on 4 workers: some 80 a second.
        let mut pace = Pace::new(t0);
        for i in 1..=50u32 {
            pace.sample(u64::from(i), t0 + 12 * MS * i);
        }
        assert_eq!(pace.pack(4), 1);
    }

    #[test]
    fn a_batch_that_slows_down_packs_less() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        let mut done = 0;
        let mut at = t0;
        for _ in 0..10 {
            done += 10_000;
            at += 10 * MS;
            pace.sample(done, at);
        }
        assert!(pace.pack(1) > 500);
        // Then nothing for a while (long tasks now): one task a message.
        for _ in 0..10 {
            at += 100 * MS;
            pace.sample(done, at);
        }
        assert_eq!(pace.pack(1), 1);
    }
}
