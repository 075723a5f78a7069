//! Credit dispatch for a worker of several threads: one connection for all
//! of them.
//!
//! ```text
//!  ventilator ROUTER ◀─▶ DEALER ┐                 ┌─▶ thread 0 ┐
//!                               │ the dispatcher ─┤   thread 1 ├─ results ─▶ the dispatcher ─▶ PUSH ─▶ sink
//!                               │  (one thread)   └─▶ thread N ┘
//! ```
//!
//! With a socket pair per thread (the guide's multithreaded worker, as push
//! dispatch keeps it), N threads are N peers of the ventilator and of the
//! sink, and every task costs a CREDIT, a TASK and a RESULT of its own,
//! each a wake-up of three processes. That is cheap beside a long task, but
//! with many threads running millisecond tasks on a small machine those
//! wake-ups are most of the work. So in credit dispatch a worker of
//! several threads has one DEALER and one PUSH, kept by a dispatcher
//! thread; the task threads share a queue (the [`Board`]):
//!
//! - the dispatcher asks for the worker as a whole: each thread's window
//!   (one task, and as many ahead as about a millisecond of work, see
//!   `credit.rs`), added up, so the ventilator still deals by what the
//!   worker can take; the tasks come as TASKS of up to 1024 and wait in the
//!   shared queue, where the first free thread takes the next;
//! - results wait on the board and leave together, as RESULTS of up to 1024,
//!   at most a millisecond after their task ended (the dispatcher looks at
//!   the board every millisecond while the worker is busy), or at once when
//!   a thread finds nothing left to run (it wakes the dispatcher);
//! - the ventilator sees one peer per worker; what it deals to the worker
//!   goes to whichever thread is free, which balances the worker's threads
//!   better than dealing to each in turn.
//!
//! The dispatcher is the worker's thread 0 as the ventilator and the sink
//! see it: it waits for the ZMTP handshake and names a refusal, as that
//! thread does in the per-thread form. Each result still names the thread
//! that ran it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use common::Shutdown;
use common::drops::Drops;
use common::protocol::{self, ResultBody};
use common::sockets::{self, Monitor, Recv};
use common::work::Status;

use crate::Handler;
use crate::credit::Credit;
use crate::executor::{Counts, Executor, Queued, STOP_POLL, fit};
use crate::metrics::Observer;
use crate::pack::{HOLD_LIMIT, Pack};

/// A result on the board, waiting for the dispatcher.
struct Done {
    batch: u64,
    task: u64,
    attempt: u32,
    /// The result body, written by [`protocol::encode_result`].
    body: Vec<u8>,
    took: Duration,
    finished: Instant,
}

/// What the dispatcher and the task threads share.
#[derive(Default)]
struct State {
    /// Tasks dealt to the worker, not yet taken by a thread.
    queue: VecDeque<Queued>,
    /// Results not yet sent.
    done: Vec<Done>,
    /// Threads running a task.
    running: u32,
}

/// The shared queue of tasks and of results, and the dispatcher's wake-up
/// (a socket pair it polls beside its zmq sockets, as a pipe).
pub(crate) struct Board {
    state: Mutex<State>,
    /// A task thread waits here for a task.
    work: Condvar,
    wake_in: UnixStream,
    wake_out: UnixStream,
    /// A wake-up is on its way (so a busy worker writes one, not one a
    /// task).
    woken: AtomicBool,
}

impl Board {
    /// An empty board.
    pub(crate) fn new() -> Result<Board, common::Error> {
        let pipe = || {
            let (wake_out, wake_in) = UnixStream::pair()?;
            wake_out.set_nonblocking(true)?;
            Ok::<_, std::io::Error>((wake_out, wake_in))
        };
        let (wake_out, wake_in) = pipe().map_err(|e| {
            common::Error::Usage(format!("cannot make the dispatcher's wake-up pipe: {e}"))
        })?;
        Ok(Board {
            state: Mutex::default(),
            work: Condvar::new(),
            wake_in,
            wake_out,
            woken: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks for the threads.
    fn deal(&self, tasks: impl IntoIterator<Item = Queued>) {
        let mut s = self.lock();
        let before = s.queue.len();
        s.queue.extend(tasks);
        let added = s.queue.len() - before;
        drop(s);
        for _ in 0..added {
            self.work.notify_one();
        }
    }

    /// A task thread's next task: waits for one, and gives none once
    /// `stop` is raised (what is left is not run: the ventilator sends it
    /// again).
    fn take(&self, stop: &Shutdown) -> Option<Queued> {
        let mut s = self.lock();
        loop {
            if stop.is_triggered() {
                return None;
            }
            if let Some(t) = s.queue.pop_front() {
                s.running += 1;
                return Some(t);
            }
            s = self
                .work
                .wait_timeout(s, STOP_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A task thread is done with its task: with its result, or without
    /// one (cut short by a stop). The dispatcher is woken when the thread
    /// finds nothing more to run: its result should go, and more work be
    /// asked for.
    fn finish(&self, done: Option<Done>) {
        let mut s = self.lock();
        s.running -= 1;
        if let Some(d) = done {
            s.done.push(d);
        }
        let idle = s.queue.is_empty();
        drop(s);
        if idle {
            self.wake();
        }
    }

    /// Wakes the dispatcher (once until it looks).
    fn wake(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            let _ = (&self.wake_in).write(&[1]);
        }
    }

    /// The dispatcher looks at the board: the next wake-up is written
    /// again, and the pipe emptied when `readable` (its poll said so: a
    /// read then cannot block).
    fn woke(&self, readable: bool) {
        self.woken.store(false, Ordering::Release);
        if readable {
            let mut buf = [0u8; 64];
            let _ = (&self.wake_out).read(&mut buf);
        }
    }

    /// Takes the results waiting into `into`; returns the tasks the
    /// worker holds besides (queued and running).
    fn collect(&self, into: &mut Vec<Done>) -> usize {
        let mut s = self.lock();
        std::mem::swap(&mut s.done, into);
        s.queue.len() + s.running as usize
    }

    /// Threads running a task.
    fn running(&self) -> u32 {
        self.lock().running
    }

    /// The worker stops: every thread waiting for a task hears it now.
    pub(crate) fn stop(&self) {
        drop(self.lock());
        self.work.notify_all();
    }
}

impl<H: Handler> Executor<H> {
    /// A task thread of a worker whose threads share one connection: takes
    /// tasks from the board, runs them, and leaves the results there.
    pub(crate) fn work_shared(&self, board: &Board) -> Counts {
        let mut counts = Counts::default();
        let max_body = self.max_body();
        let mut observer = self.metrics.as_ref().map(Observer::new);
        while let Some(Queued { batch, task }) = board.take(&self.stop) {
            if let Some(o) = &mut observer {
                o.busy();
            }
            let ran = self.run_task(batch, &task);
            let mut outcome = ran.outcome;
            if outcome.status != Status::Ok && self.stop.is_triggered() {
                log::info!(
                    "task {} of batch {batch:016x} was cut short by the stop: not reported, so it is sent again",
                    task.task
                );
                board.finish(None);
                break;
            }
            let took = ran.finished - ran.started;
            counts.tasks += 1;
            if outcome.status != Status::Ok {
                counts.failed += 1;
            }
            if let Some(o) = &mut observer {
                o.ran(outcome.status);
            }
            fit(&mut outcome, max_body);
            let mut body = Vec::with_capacity(64 + outcome.output.len() + outcome.error.len());
            protocol::encode_result(
                &mut body,
                &ResultBody {
                    worker: self.worker,
                    thread: self.index as u16,
                    sent_us: ran.sent_us,
                    duration_us: took.as_micros() as u64,
                    outcome,
                },
            );
            board.finish(Some(Done {
                batch,
                task: task.task,
                attempt: task.attempt,
                body,
                took,
                finished: ran.finished,
            }));
            if let Some(o) = &mut observer {
                o.idle();
            }
        }
        counts
    }

    /// The dispatcher's loop (see the module doc): tasks in, results out,
    /// credit for all `threads`, until stopped and no thread runs a task.
    pub(crate) fn dispatch(
        &self,
        threads: u32,
        board: &Board,
        tasks: &zmq::Socket,
        results: &zmq::Socket,
        handshakes: &Monitor,
        mut sink_refusals: Option<&mut sockets::Refusals>,
    ) -> Result<Counts, common::Error> {
        let (mut credit, first) =
            Credit::for_threads(threads, self.prefetch, self.tuning.hwm, Instant::now());
        self.ask(tasks, first);
        let mut pack = Pack::new(self.max_body());
        let mut drops = Drops::default();
        if let Some(m) = &self.metrics {
            drops.count_into(m.dropped.clone());
        }
        let mut frames = Vec::new();
        let mut arrived: VecDeque<Queued> = VecDeque::new();
        let mut done = Vec::new();
        let mut counts = Counts::default();
        let mut held = 0;
        loop {
            let stopping = self.stop.is_triggered();
            if stopping && board.running() == 0 {
                break;
            }
            let busy = held > 0 || stopping;
            let wait = if busy { HOLD_LIMIT } else { STOP_POLL };
            let woken = {
                let mut items = [
                    tasks.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(board.wake_out.as_raw_fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(self.bell.raw_fd(), zmq::POLLIN),
                ];
                // The bell stays rung: once stopping, only the board wakes
                // us (while the threads end their tasks).
                let looked = if stopping { 2 } else { 3 };
                match zmq::poll(&mut items[..looked], wait.as_millis() as i64) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(zmq::Error::ETERM) => break,
                    Err(e) => return Err(common::Error::zmq("polling", e)),
                }
                items[1].is_readable()
            };
            board.woke(woken);
            // Tasks in: all that came, to the board at once.
            while !stopping && let Recv::Message(()) = sockets::recv_frames_now(tasks, &mut frames)?
            {
                let (n, cap) =
                    self.take(&frames, &mut arrived, &mut drops, results, &mut counts)?;
                credit.arrived(n, cap, Instant::now);
            }
            if !arrived.is_empty() {
                board.deal(arrived.drain(..));
            }
            // Results out: all that wait, packed.
            held = board.collect(&mut done);
            for d in done.drain(..) {
                credit.ran(d.took);
                if (pack.holds_other_batch(d.batch) || !pack.fits(d.body.len()))
                    && !pack.flush(results, &Shutdown::new())?
                {
                    break;
                }
                pack.add(d.batch, d.task, d.attempt, &d.body, d.finished);
                // Full (MAX_PACK results): it goes, and the next begins.
                if pack.due(Duration::ZERO, d.finished) {
                    pack.flush(results, &Shutdown::new())?;
                }
            }
            pack.flush(results, &Shutdown::new())?;
            if stopping {
                continue;
            }
            let now = Instant::now();
            if let Some(ask) = credit.due(held, now) {
                self.ask(tasks, ask);
            }
            if held == 0 {
                self.idle(
                    tasks,
                    Some(&mut credit),
                    handshakes,
                    sink_refusals.as_deref_mut(),
                )?;
            }
        }
        pack.flush(results, &Shutdown::new()).ok();
        counts.dropped = drops.total();
        Ok(counts)
    }

    /// The dispatcher thread's body: connects as thread 0 would, says the
    /// worker's `threads` threads are ready once its handshake is done, and
    /// dispatches.
    pub(crate) fn run_dispatcher(
        self,
        threads: u32,
        board: std::sync::Arc<Board>,
        ready: mpsc::Sender<Result<(), common::Error>>,
    ) -> Counts {
        let served = self.serve_with(&ready, threads, |tasks, results, handshakes, refusals| {
            self.dispatch(threads, &board, tasks, results, handshakes, refusals)
        });
        match served {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                Counts::default()
            }
        }
    }
}

/// A task as the board holds it (for the tests).
#[cfg(test)]
fn queued(task: u64) -> Queued {
    use common::protocol::{Item, TaskBody};
    Queued {
        batch: 1,
        task: Item {
            task,
            attempt: 1,
            body: Ok(TaskBody {
                sent_us: 0,
                work: common::work::Work::Noop,
                name: None,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threads_take_what_is_dealt_and_an_idle_thread_wakes_the_dispatcher() {
        let board = Arc::new(Board::new().unwrap());
        let stop = Shutdown::new();
        let taker = {
            let (board, stop) = (Arc::clone(&board), stop.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(q) = board.take(&stop) {
                    got.push(q.task.task);
                    board.finish(Some(Done {
                        batch: q.batch,
                        task: q.task.task,
                        attempt: 1,
                        body: Vec::new(),
                        took: Duration::ZERO,
                        finished: Instant::now(),
                    }));
                    if got.len() == 3 {
                        break;
                    }
                }
                got
            })
        };
        board.deal((0..3).map(queued));
        assert_eq!(taker.join().unwrap(), [0, 1, 2]);
        // The thread found nothing more: the pipe holds a wake-up.
        assert!(board.woken.load(Ordering::Acquire));
        board.woke(true);
        assert!(!board.woken.load(Ordering::Acquire));
        board.wake();
        assert!(board.woken.load(Ordering::Acquire), "written again");
        board.woke(true);
        let mut done = Vec::new();
        assert_eq!(board.collect(&mut done), 0, "nothing queued or running");
        assert_eq!(done.iter().map(|d| d.task).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn a_stop_leaves_what_is_queued_untaken() {
        let board = Board::new().unwrap();
        board.deal((0..2).map(queued));
        let stop = Shutdown::new();
        stop.trigger();
        assert!(board.take(&stop).is_none());
        let mut done = Vec::new();
        assert_eq!(board.collect(&mut done), 2, "still queued, not run");
    }
}
