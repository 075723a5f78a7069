//! Credit dispatch: how many tasks a worker thread asks for.
//!
//! The guide's load-balancing broker has each worker ask for one task at a
//! time, so the least busy one gets the next. That costs a round trip per
//! task, which is most of the time of a no-op task, so a thread asks for
//! more while its tasks are short and stays at one while they are long:
//!
//! - it keeps an exponentially weighted average of its tasks' run time and
//!   asks for about a millisecond of work ahead ([`PREFETCH_WORK_US`]): a
//!   round trip hides behind short tasks, and a millisecond is too little to
//!   matter when the ventilator places long ones;
//! - when waiting for the next task (the round trip it measured while idle)
//!   costs more than 2 % of a task ([`ROUND_TRIP_SHARE`]), it asks for one
//!   task ahead, so a slow link does not leave it idle between long tasks;
//! - `--prefetch` caps what it holds (threads that share one connection,
//!   each with its own window: beyond `--hwm` tasks, what they hold
//!   together, beyond one task each), and so does the high-water mark, in
//!   messages: as many tasks as that many messages
//!   carry, at the size the ventilator's messages have had (one task each
//!   to begin with, up to a pack of 1024), so the ventilator's pipe to it
//!   can take what it asked for. Beyond `--hwm` tasks only when the
//!   ventilator's TASKS say it allows that much credit (a ventilator from
//!   before that cuts a thread's credit to its own `--hwm`, and a thread
//!   that asked for more would wait for tasks that never come);
//! - while plenty is queued it asks in batches (once half its window is
//!   free), so a flood of tiny tasks is not a CREDIT each; when its queue
//!   runs dry it asks at once;
//! - idle for a second ([`IDLE_RESET`]), it says *exactly* how much it can
//!   take, so a restarted ventilator learns of it and credit lost on the way
//!   is restored.
//!
//! [`Credit`] is that arithmetic and nothing else: no socket, no clock of its
//! own (every method takes the time), so it is tested here as numbers. The
//! executor sends each [`Ask`] it returns as a CREDIT.

use std::time::{Duration, Instant};

/// Prefetch covers about this much work (µs): enough that the round trip of
/// a CREDIT is hidden behind short tasks, too little to matter for
/// scheduling long ones.
pub(crate) const PREFETCH_WORK_US: f64 = 1000.0;
/// The shortest task time (µs) the window is reckoned from: a no-op
/// measures less than the bookkeeping around it. A millisecond of such
/// tasks is 10 000 of them, `--prefetch`'s default: the round trip of a
/// CREDIT then comes once per thousands of tasks, not once per hundreds,
/// and it is the round trip's wake-ups of both processes, not the tasks,
/// that cost the most CPU at that rate.
const SHORTEST_TASK_US: f64 = 0.1;
/// A thread that waits for its next task longer than this share of the
/// task's own time asks for one task ahead.
pub(crate) const ROUND_TRIP_SHARE: f64 = 0.02;
/// Threads that share one connection (see `shared.rs`) wait this long
/// (µs) at most for the dispatcher to send their results and ask for more,
/// beside the round trip: the dispatcher's look at the board while busy,
/// twice.
pub(crate) const SHARED_GAP_US: f64 = 2000.0;
/// An idle thread says again how much it can take this often (a restarted
/// ventilator learns of it; lost credit is restored).
pub(crate) const IDLE_RESET: Duration = Duration::from_secs(1);

/// A CREDIT to send to the ventilator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// How many tasks.
    pub tasks: u32,
    /// The thread is idle and can take *exactly* `tasks` (rather than
    /// `tasks` more than it asked for already).
    pub exact: bool,
}

/// One thread's credit (or, when the worker's threads share one
/// connection, the worker's: see `shared.rs`): what it has asked for and
/// how much it wants.
#[derive(Debug)]
pub(crate) struct Credit {
    /// The threads it asks for: 1, or all of the worker's when they share
    /// one connection. Each wants its own window.
    threads: u32,
    /// `--prefetch`: the most tasks asked for beyond the one running.
    prefetch: u32,
    /// The high-water mark, in messages: more could not be queued on the
    /// way.
    hwm: u32,
    /// Tasks a message has carried (exponentially weighted): the window
    /// stays within `hwm` messages of this size.
    pack: f64,
    /// The most credit the ventilator lets a thread hold, as its TASKS say;
    /// 0 until they say it (then the window stays within `hwm` tasks).
    allowed: u32,
    /// Tasks asked for that have not arrived yet.
    expected: u32,
    /// Tasks it wants to hold (running, queued or coming): 1 + what it
    /// prefetches, for each thread.
    window: u32,
    /// One thread's share of the window: it asks once that much is free.
    per_thread: u32,
    /// Average task time, µs (exponentially weighted); `None` before the
    /// first task.
    average_us: Option<f64>,
    /// When it last asked.
    last_asked: Instant,
    /// When it last asked while holding nothing: the start of a round trip.
    idle_since: Option<Instant>,
    /// How long work takes to come when idle (µs, exponentially weighted).
    round_trip_us: Option<f64>,
}

/// The weight of the newest sample in the moving averages.
const NEWEST: f64 = 0.2;

fn moving_average(average: Option<f64>, sample: f64) -> f64 {
    average.map_or(sample, |a| a * (1.0 - NEWEST) + sample * NEWEST)
}

impl Credit {
    /// A thread starting at `now`, and its first CREDIT: exactly one task,
    /// since it knows nothing of the tasks yet.
    pub fn start(prefetch: u32, hwm: i32, now: Instant) -> (Credit, Ask) {
        Credit::for_threads(1, prefetch, hwm, now)
    }

    /// [`Credit::start`] for `threads` threads that share one connection:
    /// one task each to begin with.
    pub fn for_threads(threads: u32, prefetch: u32, hwm: i32, now: Instant) -> (Credit, Ask) {
        let hwm = hwm.max(1) as u32;
        let first = threads.clamp(1, hwm);
        let credit = Credit {
            threads: threads.max(1),
            prefetch,
            hwm,
            pack: 1.0,
            allowed: 0,
            expected: first,
            window: first,
            per_thread: 1,
            average_us: None,
            last_asked: now,
            idle_since: None,
            round_trip_us: None,
        };
        (
            credit,
            Ask {
                tasks: first,
                exact: true,
            },
        )
    }

    /// A message with `tasks` tasks arrived; a TASKS message's header said
    /// the ventilator allows `allowed` credit (0: not said, a ventilator
    /// from before; `None`: a TASK, which does not say). `now` is read only
    /// when this ends a round trip being measured (the hot path reads no
    /// clock).
    pub fn arrived(&mut self, tasks: u32, allowed: Option<u32>, now: impl FnOnce() -> Instant) {
        if let Some(allowed) = allowed {
            self.allowed = allowed;
        }
        if let Some(since) = self.idle_since.take() {
            let us = now().saturating_duration_since(since).as_secs_f64() * 1e6;
            self.round_trip_us = Some(moving_average(self.round_trip_us, us));
        }
        self.expected = self.expected.saturating_sub(tasks);
        self.pack = moving_average(Some(self.pack), f64::from(tasks.max(1)));
    }

    /// A task that ran for `took` finished at `now`, with `queued` tasks
    /// still waiting in the thread's queue; returns the CREDIT to send, if
    /// it is time to ask.
    #[inline]
    pub fn finished(&mut self, took: Duration, queued: usize, now: Instant) -> Option<Ask> {
        self.ran(took);
        self.due(queued, now)
    }

    /// A task ran for `took`: the window follows the tasks' average time.
    #[inline]
    pub fn ran(&mut self, took: Duration) {
        let average = moving_average(self.average_us, took.as_secs_f64() * 1e6);
        self.average_us = Some(average);
        // Short tasks: about a millisecond of work ahead. Longer ones: one
        // ahead only if waiting for the next costs more than a sliver of
        // the task itself; else none, so the next task goes to whoever is
        // free first.
        let mut extra = (PREFETCH_WORK_US / average.max(SHORTEST_TASK_US)) as u32;
        if self
            .round_trip_us
            .is_some_and(|rt| rt > average * ROUND_TRIP_SHARE)
        {
            extra = extra.max(1);
        }
        if self.threads > 1 {
            // Threads that share one connection wait, besides the round
            // trip, for the dispatcher, which looks at the board once a
            // millisecond while busy: enough ahead to cover both.
            let gap = SHARED_GAP_US + self.round_trip_us.unwrap_or(0.0);
            if gap > average * ROUND_TRIP_SHARE {
                extra = extra.max((gap / average.max(SHORTEST_TASK_US)).ceil() as u32);
            }
        }
        self.per_thread = 1 + extra.min(self.prefetch);
        // At most `hwm` messages on the way, of the size they have had,
        // and no more than the ventilator allows; threads that share a
        // connection hold --prefetch together, beyond one task each.
        let most = if self.allowed == 0 {
            self.hwm
        } else {
            let in_hwm = (f64::from(self.hwm) * self.pack).min(f64::from(u32::MAX)) as u32;
            in_hwm
                .max(self.hwm)
                .min(self.allowed)
                .min(self.prefetch.saturating_add(self.threads).max(self.hwm))
        };
        self.window = self.per_thread.saturating_mul(self.threads).min(most);
    }

    /// The CREDIT to send now, if it is time to ask, with `queued` tasks
    /// held here (waiting, or running when threads share the window).
    #[inline]
    pub fn due(&mut self, queued: usize, now: Instant) -> Option<Ask> {
        let holding = self.expected.saturating_add(queued as u32);
        let free = self.window.saturating_sub(holding);
        // Ask in batches while plenty is queued (once half of a thread's
        // window is free); at once when the queue runs dry.
        let batch = if self.threads > 1 {
            self.per_thread
        } else {
            self.window
        };
        if free > 0 && (holding == 0 || free >= batch.div_ceil(2)) {
            self.expected += free;
            self.last_asked = now;
            if holding == 0 {
                self.idle_since = Some(now);
            }
            return Some(Ask {
                tasks: free,
                exact: false,
            });
        }
        None
    }

    /// The thread is idle at `now` (nothing queued, nothing arrived
    /// lately): once a second it says exactly what it can take.
    pub fn idle(&mut self, now: Instant) -> Option<Ask> {
        if now.saturating_duration_since(self.last_asked) < IDLE_RESET {
            return None;
        }
        self.expected = self.window;
        self.last_asked = now;
        Some(Ask {
            tasks: self.window,
            exact: true,
        })
    }

    /// The thread, idle, has just connected to a ventilator (a new one, in
    /// a standing pool: a new batch): it says at once what it can take,
    /// rather than at the next idle reset. What it learnt of the last
    /// batch's tasks says nothing of this one's (a thousand no-ops, then
    /// ten-second jobs): it starts again from one task, as a new thread
    /// does, or it would take the new batch's first thousand tasks alone.
    pub fn reconnected(&mut self, now: Instant) -> Ask {
        let (fresh, ask) = Credit::for_threads(self.threads, self.prefetch, self.hwm as i32, now);
        *self = fresh;
        ask
    }

    /// Tasks it wants to hold: 1 + what it prefetches.
    #[cfg(test)]
    fn window(&self) -> u32 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    fn ask(tasks: u32) -> Option<Ask> {
        Some(Ask {
            tasks,
            exact: false,
        })
    }

    /// A thread that has had its first task and runs it for `took`.
    fn after_first(prefetch: u32, hwm: i32, took: Duration) -> (Credit, Option<Ask>, Instant) {
        let t0 = Instant::now();
        let (mut c, first) = Credit::start(prefetch, hwm, t0);
        assert_eq!(
            first,
            Ask {
                tasks: 1,
                exact: true
            }
        );
        c.arrived(1, None, || unreachable!("no round trip is measured yet"));
        let done = t0 + took;
        let next = c.finished(took, 0, done);
        (c, next, done)
    }

    #[test]
    fn short_tasks_ask_for_about_a_millisecond_of_work() {
        let (c, next, _) = after_first(1000, 1000, 10 * US);
        // 10 µs tasks: 100 ahead, plus the one to run.
        assert_eq!(c.window(), 101);
        assert_eq!(next, ask(101));
        let (c, _, _) = after_first(1000, 1000, 250 * US);
        assert_eq!(c.window(), 5);
    }

    #[test]
    fn long_tasks_are_asked_for_one_at_a_time() {
        let (mut c, next, done) = after_first(1000, 1000, 100 * MS);
        assert_eq!(c.window(), 1);
        assert_eq!(next, ask(1), "idle: one more at once");
        // Holding one (it arrived and waits in the queue): nothing more.
        c.arrived(1, None, || done);
        assert_eq!(c.finished(100 * MS, 1, done + 100 * MS), None);
        assert_eq!(c.window(), 1);
    }

    #[test]
    fn a_round_trip_over_two_percent_of_a_task_asks_one_ahead() {
        for (round_trip, window) in [(5 * MS, 2), (MS, 1)] {
            let (mut c, next, done) = after_first(1000, 1000, 100 * MS);
            assert_eq!(next, ask(1));
            // It asked while holding nothing: the wait is measured.
            c.arrived(1, None, || done + round_trip);
            let next = c.finished(100 * MS, 0, done + round_trip + 100 * MS);
            assert_eq!(c.window(), window, "round trip {round_trip:?}");
            assert_eq!(next, ask(window));
        }
    }

    /// A thread of 50 ns tasks, sent packs of 1000 with TASKS headers
    /// that allow `allowed`: its window after twenty of them.
    fn window_after_packs(prefetch: u32, hwm: i32, threads: u32, allowed: u32) -> u32 {
        let nanos = Duration::from_nanos(50);
        let mut t = Instant::now();
        let (mut c, _) = Credit::for_threads(threads, prefetch, hwm, t);
        for _ in 0..20 {
            c.arrived(1000, Some(allowed), || t);
            t += nanos;
            c.finished(nanos, 0, t);
        }
        c.window()
    }

    #[test]
    fn sub_microsecond_tasks_fill_a_window_of_as_many_messages_as_the_hwm_as_packs_grow() {
        let nanos = Duration::from_nanos(50);
        let (c, _, _) = after_first(10_000, 1000, nanos);
        // One task a message so far: no more than 1000 messages' worth.
        assert_eq!(c.window(), 1000);
        // Packs of 1000 come, from a ventilator that allows it: the same
        // 1000 messages hold ten times the tasks, and the window grows to
        // a millisecond of them (at least 0.1 µs each), --prefetch's
        // 10 000 ahead.
        assert_eq!(window_after_packs(10_000, 1000, 1, 1_024_000), 10_001);
        // Two messages of about 1000.
        let two = window_after_packs(100_000, 2, 1, 1_024_000);
        assert!((1900..=2000).contains(&two), "{two}");
        // No more than the ventilator allows.
        assert_eq!(window_after_packs(10_000, 1000, 1, 5120), 5120);
        // A ventilator that does not say (one from before): its own --hwm
        // cuts a thread's credit there, so no more is asked for.
        assert_eq!(window_after_packs(10_000, 1000, 1, 0), 1000);
        // Threads that share a connection hold --prefetch together.
        assert_eq!(window_after_packs(10_000, 1000, 64, 1_024_000), 10_064);
        // A ventilator from before, after one that allowed more (a standing
        // pool's next batch): back within --hwm; a TASK says nothing.
        let t = Instant::now();
        let (mut c, _) = Credit::start(10_000, 1000, t);
        for allowed in [1_024_000, 1_024_000, 1_024_000] {
            c.arrived(1000, Some(allowed), || t);
            c.finished(nanos, 0, t);
        }
        c.arrived(1, None, || t);
        c.finished(nanos, 0, t);
        assert!(c.window() > 1000, "{}", c.window());
        c.arrived(1000, Some(0), || t);
        c.finished(nanos, 0, t);
        assert_eq!(c.window(), 1000);
    }

    #[test]
    fn prefetch_and_the_high_water_mark_cap_the_window() {
        assert_eq!(after_first(1000, 1000, US).0.window(), 1000, "hwm");
        assert_eq!(after_first(10, 1000, US).0.window(), 11, "prefetch");
        assert_eq!(after_first(1000, 5, US).0.window(), 5, "hwm");
        assert_eq!(after_first(1000, 0, US).0.window(), 1, "hwm 0 is 1");
        // --prefetch 0: one at a time, even when the round trip is long.
        let (mut c, _, done) = after_first(0, 1000, 100 * MS);
        c.arrived(1, None, || done + 50 * MS);
        c.finished(100 * MS, 0, done + 150 * MS);
        assert_eq!(c.window(), 1);
    }

    #[test]
    fn it_asks_in_batches_while_plenty_is_queued_and_at_once_when_dry() {
        let (mut c, next, t) = after_first(1000, 1000, 10 * US);
        assert_eq!(next, ask(101));
        c.arrived(101, None, || t + MS);
        // 100 queued, then 51: less than half the window free, no CREDIT.
        assert_eq!(c.finished(10 * US, 100, t), None);
        assert_eq!(c.finished(10 * US, 51, t), None);
        // 50 queued: 51 free, half the window: ask for them.
        assert_eq!(c.finished(10 * US, 50, t), ask(51));
        // Those 51 are expected now: nothing more until they come.
        assert_eq!(c.finished(10 * US, 0, t), None);
        c.arrived(51, None, || unreachable!("it was not idle when it asked"));
        // The queue ran dry: ask for the whole window at once.
        assert_eq!(c.finished(10 * US, 0, t), ask(101));
    }

    #[test]
    fn an_idle_thread_says_exactly_what_it_can_take_every_second() {
        let t0 = Instant::now();
        let (mut c, _) = Credit::start(1000, 1000, t0);
        assert_eq!(c.idle(t0 + 999 * MS), None);
        let exactly_one = Some(Ask {
            tasks: 1,
            exact: true,
        });
        assert_eq!(c.idle(t0 + SECOND), exactly_one);
        assert_eq!(c.idle(t0 + SECOND + 500 * MS), None, "once a second");
        // After short tasks the window is larger, and the reset says so.
        c.arrived(1, None, || t0);
        let t1 = t0 + 2 * SECOND;
        assert_eq!(c.finished(10 * US, 0, t1), ask(101));
        assert_eq!(c.idle(t1 + SECOND / 2), None);
        assert_eq!(
            c.idle(t1 + SECOND),
            Some(Ask {
                tasks: 101,
                exact: true
            })
        );
        // It now expects exactly the window: nothing more until tasks come.
        assert_eq!(c.finished(10 * US, 0, t1 + SECOND), None);
    }

    #[test]
    fn more_tasks_than_asked_for_do_not_wrap_the_count() {
        let t0 = Instant::now();
        let (mut c, _) = Credit::start(1000, 1000, t0);
        c.arrived(5, None, || t0);
        assert_eq!(c.finished(100 * MS, 0, t0), ask(1));
    }

    #[test]
    fn a_new_ventilator_hears_at_once_and_the_last_batchs_pace_is_forgotten() {
        let t0 = Instant::now();
        let (mut c, _) = Credit::start(1000, 1000, t0);
        // A batch of tiny tasks: the thread learns to ask for many.
        c.arrived(1, None, || t0);
        for _ in 0..20 {
            c.finished(US, 0, t0);
        }
        assert!(c.window() > 100, "{}", c.window());
        assert_eq!(c.idle(t0 + MS), None, "not yet a second");
        // A new ventilator: one task, exactly, at once.
        let ask = c.reconnected(t0 + 2 * MS);
        assert_eq!((ask.tasks, ask.exact), (1, true));
        assert_eq!(c.window(), 1);
        assert_eq!(c.idle(t0 + 3 * MS), None, "and the idle reset starts again");
    }
}
