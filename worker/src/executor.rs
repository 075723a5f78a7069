//! One executor thread: take tasks, run them, send the results.
//!
//! In push dispatch (and in credit dispatch with one thread) each of the
//! worker's `--threads` threads owns one task socket to the ventilator
//! (PULL, or DEALER) and one PUSH to the sink: the guide's multithreaded
//! worker, with no shared queue in the middle, so N threads are N peers of
//! the ventilator. (In credit dispatch several threads share one
//! connection instead: `shared.rs`, which reuses this file's parts.)
//!
//! A thread connects, waits for the ZMTP handshake ([`crate::handshake`]),
//! tells the main thread it is ready, and waits until the main thread has
//! said HELLO (a [`Gate`]), so that the sink knows the worker before its
//! first result. Then it loops:
//!
//! - **take**: a message from the task socket is decoded once
//!   ([`Message::decode`]) and its tasks (one TASK, or a TASKS of several in
//!   credit dispatch) go to the thread's own queue; a task whose body cannot
//!   be read keeps its id and is answered `rejected`;
//! - **run**: the handler runs the task; a panic becomes `panicked`;
//! - **ask** (credit dispatch): [`Credit`] says when to send a CREDIT and
//!   for how many;
//! - **send**: the result is cut to fit `--max-msg-size` ([`fit`]) and held
//!   in the [`Pack`] or sent at once, as the pack's rules say.
//!
//! The loop looks at the socket only when its queue is empty (each look is a
//! system call), waits for a message only when it holds no results, and
//! allocates nothing per task beyond what decoding the task needs: it runs
//! about a million no-op tasks a second.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::drops::Drops;
use common::protocol::{self, Dispatch, Header, Item, Kind, Message, ResultBody, TaskBody};
use common::sockets::{self, Monitor, Recv, Tuning};
use common::work::{Outcome, Status};
use common::{Action, Endpoints, Shutdown};

use crate::credit::{Ask, Credit};
use crate::held::Held;
use crate::idle::Activity;
use crate::metrics::{Metrics, Observer};
use crate::pack::Pack;
use crate::{Handler, TaskInfo, handshake};

/// The longest a thread waits without looking at its stop flag.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(100);

/// What one thread did, summed into the worker's report.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Tasks run.
    pub tasks: u64,
    /// Of which not ok.
    pub failed: u64,
    /// Messages dropped on the task socket.
    pub dropped: u64,
}

/// A latch the main thread opens once (when HELLO is out) and the executor
/// threads wait on, with a timeout so they still see their stop flag.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    /// Opens the gate for every thread waiting on it, now and later.
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Waits at most `timeout` for the gate to open; true when it is open.
    pub fn wait(&self, timeout: Duration) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (open, _) = self
            .opened
            .wait_timeout_while(open, timeout, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        *open
    }
}

/// Rung once when the worker stops (END, KILL, a signal): a pipe that
/// becomes readable and stays so, polled beside each thread's task socket,
/// so a thread waiting for work hears the stop at once rather than at its
/// next look at the stop flag (up to [`STOP_POLL`] later, which kept every
/// worker alive that much past the end of its batch).
#[derive(Debug)]
pub(crate) struct StopBell {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

impl StopBell {
    /// A bell not yet rung.
    pub fn new() -> std::io::Result<StopBell> {
        let (read, write) = rustix::pipe::pipe()?;
        Ok(StopBell { read, write })
    }

    /// Wakes every thread waiting on the bell, now and later.
    pub fn ring(&self) {
        // One byte that nobody reads: the pipe stays readable.
        let _ = rustix::io::write(&self.write, b"!");
    }

    /// The end to poll for the ring (readable once rung).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.read.as_raw_fd()
    }

    /// Waits at most `timeout` for a message on `socket`, or the bell.
    fn recv(
        &self,
        socket: &zmq::Socket,
        frames: &mut Vec<zmq::Message>,
        timeout: Duration,
    ) -> Result<Recv<()>, common::Error> {
        use std::os::fd::AsRawFd;
        // Try first: when messages are flowing this avoids a poll each.
        match sockets::recv_frames_now(socket, frames)? {
            Recv::Timeout => {}
            done => return Ok(done),
        }
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(self.read.as_raw_fd(), zmq::POLLIN),
        ];
        match zmq::poll(&mut items, timeout.as_millis().min(i64::MAX as u128) as i64) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(zmq::Error::ETERM) => return Ok(Recv::Stopped),
            Err(e) => return Err(common::Error::zmq("polling", e)),
        }
        if items[0].is_readable() {
            sockets::recv_frames_now(socket, frames)
        } else {
            Ok(Recv::Timeout)
        }
    }
}

/// How soon a thread tries again to reach a ventilator that is not there
/// (libzmq's default is 100 ms): a worker waiting for the next batch gets
/// its first task within a few tens of milliseconds of the ventilator's
/// start. A worker of many threads tries less often, so that it makes no
/// more than about 400 attempts a second while no ventilator is up.
pub(crate) fn reconnect_interval(threads: u32) -> i32 {
    (20.0f64).max(f64::from(threads + 1) * 2.5) as i32
}

/// One executor thread and what it needs to make its sockets.
pub(crate) struct Executor<H> {
    /// The thread's index in the worker (CREDIT names it).
    pub index: usize,
    /// The worker's id.
    pub worker: u64,
    /// `--classic`: the guide's wire format (see `classic.rs`).
    pub classic: bool,
    pub dispatch: Dispatch,
    /// `--prefetch`.
    pub prefetch: u32,
    pub task_endpoint: Endpoints,
    pub result_endpoint: Endpoints,
    pub tuning: Tuning,
    pub ctx: zmq::Context,
    /// Raised on END, KILL or a signal.
    pub stop: Shutdown,
    /// Rung when `stop` is raised.
    pub bell: Arc<StopBell>,
    /// The worker's `--threads` (for [`reconnect_interval`]).
    pub threads: u32,
    pub handler: Arc<H>,
    /// Opened when the main thread has said HELLO.
    pub hello: Arc<Gate>,
    /// Told when each task begins and ends (`--idle-exit`).
    pub activity: Arc<Activity>,
    /// Push dispatch: what each thread holds, for the heartbeats.
    pub held: Option<Arc<Held>>,
    /// `--metrics`.
    pub metrics: Option<Metrics>,
}

/// A task waiting in a thread's own queue (credit dispatch may send several
/// at once).
pub(crate) struct Queued {
    pub batch: u64,
    pub task: Item<TaskBody>,
}

/// A task that ran.
pub(crate) struct Ran {
    /// The ventilator's clock when it sent the task (0 when unread).
    pub sent_us: u64,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Outcome,
}

impl<H: Handler> Executor<H> {
    /// The thread's body: says on `ready` when its task socket is connected
    /// (or why it could not be), and returns what it did.
    pub fn run(self, ready: mpsc::Sender<Result<(), common::Error>>) -> Counts {
        match self.serve(&ready) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                Counts::default()
            }
        }
    }

    fn credit_mode(&self) -> bool {
        self.dispatch == Dispatch::Credit
    }

    fn serve(
        &self,
        ready: &mpsc::Sender<Result<(), common::Error>>,
    ) -> Result<Counts, common::Error> {
        self.serve_with(ready, 1, |tasks, results, handshakes, refusals| {
            self.work(tasks, results, handshakes, refusals)
        })
    }

    /// Connects the thread's sockets, waits for the handshake, says
    /// `threads` threads are ready on `ready`, waits for HELLO, then runs
    /// `work` on the sockets.
    pub(crate) fn serve_with(
        &self,
        ready: &mpsc::Sender<Result<(), common::Error>>,
        threads: u32,
        work: impl FnOnce(
            &zmq::Socket,
            &zmq::Socket,
            &Monitor,
            Option<&mut sockets::Refusals>,
        ) -> Result<Counts, common::Error>,
    ) -> Result<Counts, common::Error> {
        // DEALER (credit) or PULL (push): tasks from the ventilator, one
        // connection per thread.
        let kind = if self.credit_mode() {
            zmq::DEALER
        } else {
            zmq::PULL
        };
        let tasks = sockets::socket(&self.ctx, kind, "tasks", &self.tuning)?;
        tasks
            .set_reconnect_ivl(reconnect_interval(self.threads))
            .map_err(|e| common::Error::zmq("setting the reconnect interval", e))?;
        let monitor = Monitor::connections(&self.ctx, &tasks)?;
        self.task_endpoint.attach_secured(
            &tasks,
            Action::Connect,
            "tasks",
            self.tuning.security.as_deref(),
        )?;
        // PUSH: results to the sink.
        let results = sockets::socket(&self.ctx, zmq::PUSH, "results", &self.tuning)?;
        results
            .set_reconnect_ivl(reconnect_interval(self.threads))
            .map_err(|e| common::Error::zmq("setting the reconnect interval", e))?;
        self.result_endpoint.attach_secured(
            &results,
            Action::Connect,
            "results",
            self.tuning.security.as_deref(),
        )?;
        // Thread 0 names what refuses it: the ventilator on the task
        // socket, the sink on the result socket.
        let speaks = self.index == 0 && !self.classic;
        let mut sink_refusals = if speaks {
            let peer = format!("the sink at {}", self.result_endpoint);
            Some(sockets::Refusals::new(&self.ctx, &results, peer)?)
        } else {
            None
        };
        let mut refusals = sockets::RefusalLog::default();
        let ventilator = format!("the ventilator at {}", self.task_endpoint);
        let on = handshake::Watchers {
            stalled: || self.handshake_stalled(),
            refused: |why: &str| {
                if speaks {
                    refusals.say(&ventilator, why);
                }
            },
            meanwhile: || {
                if let Some(r) = &mut sink_refusals {
                    // A monitor that cannot be read says nothing more.
                    let _ = r.check();
                }
            },
        };
        let mechanism = sockets::mechanism_of(&tasks)?;
        let shook = handshake::wait(&monitor, handshake::GRACE, &self.stop, mechanism, on);
        monitor.stop(&tasks);
        let counts = match shook {
            Ok(true) => {
                for _ in 0..threads {
                    let _ = ready.send(Ok(()));
                }
                if !self.classic && !self.wait_for_hello() {
                    Ok(Counts::default())
                } else {
                    // From now on only completed handshakes matter: a new
                    // ventilator (a standing pool's next batch) hears this
                    // thread's credit at once.
                    let handshakes = Monitor::handshakes(&self.ctx, &tasks)?;
                    let counts = work(&tasks, &results, &handshakes, sink_refusals.as_mut());
                    handshakes.stop(&tasks);
                    counts
                }
            }
            Ok(false) => Ok(Counts::default()),
            Err(e) => Err(e),
        };
        if let Some(r) = sink_refusals {
            r.stop(&results);
        }
        counts
    }

    /// A connection of the task socket never completed its handshake: the
    /// peer cannot pair with us. Thread 0 says so (once per connection).
    fn handshake_stalled(&self) {
        if self.index != 0 || self.classic {
            return;
        }
        let (mine, other) = match self.dispatch {
            Dispatch::Credit => ("DEALER (--dispatch credit)", "push"),
            Dispatch::Push => ("PULL (--dispatch push)", "credit"),
        };
        log::error!(
            "connected to {} but the ZMTP handshake never completed: the peer cannot pair with this worker's {mine}. Is the ventilator dealing by {other}? Start workers and ventilator with the same --dispatch",
            self.task_endpoint
        );
    }

    /// Waits until the main thread has said HELLO; false when told to stop
    /// first.
    fn wait_for_hello(&self) -> bool {
        loop {
            if self.hello.wait(STOP_POLL) {
                return true;
            }
            if self.stop.is_triggered() {
                return false;
            }
        }
    }

    /// The receive loop: take, run, ask, send, until stopped.
    fn work(
        &self,
        tasks: &zmq::Socket,
        results: &zmq::Socket,
        handshakes: &Monitor,
        mut sink_refusals: Option<&mut sockets::Refusals>,
    ) -> Result<Counts, common::Error> {
        let mut counts = Counts::default();
        let mut credit = if self.credit_mode() {
            let (credit, first) = Credit::start(self.prefetch, self.tuning.hwm, Instant::now());
            self.ask(tasks, first);
            Some(credit)
        } else {
            None
        };
        let max_body = self.max_body();
        let mut frames = Vec::new();
        let mut queue: VecDeque<Queued> = VecDeque::new();
        let mut body = Vec::with_capacity(256);
        let held = self.held.as_ref().map(|h| (Arc::clone(h), self.index));
        let mut pack = Pack::new(max_body).tell(held);
        let mut drops = Drops::default();
        let mut observer = self.metrics.as_ref().map(Observer::new);
        if let Some(m) = &self.metrics {
            drops.count_into(m.dropped.clone());
        }
        // When the last task ended, if this thread went straight on from it
        // to the next (no wait, no send that may block in between): the
        // next one's clock starts there.
        let mut went_on: Option<Instant> = None;
        while !self.stop.is_triggered() {
            // With tasks queued, the socket is left alone: each look costs
            // a system call, and the queue has work. With results held
            // back, only look for a message that is already here;
            // otherwise wait for one.
            let got = if !queue.is_empty() {
                Recv::Timeout
            } else if !pack.is_empty() {
                sockets::recv_frames_now(tasks, &mut frames)?
            } else {
                self.bell.recv(tasks, &mut frames, STOP_POLL)?
            };
            if !matches!(got, Recv::Timeout) {
                went_on = None;
            }
            match got {
                Recv::Message(()) => {
                    let (n, cap) =
                        self.take(&frames, &mut queue, &mut drops, results, &mut counts)?;
                    if let Some(credit) = &mut credit {
                        credit.arrived(n, cap, Instant::now);
                    }
                }
                Recv::Timeout if queue.is_empty() => {
                    // Nothing to run: what is held goes now.
                    if !pack.flush(results, &self.stop)? {
                        break;
                    }
                    self.idle(
                        tasks,
                        credit.as_mut(),
                        handshakes,
                        sink_refusals.as_deref_mut(),
                    )?;
                    continue;
                }
                Recv::Timeout => {}
                Recv::Stopped => break,
            }
            let Some(Queued { batch, task }) = queue.pop_front() else {
                continue;
            };
            if let Some(o) = &mut observer {
                o.busy();
            }
            if pack.holds_other_batch(batch) {
                went_on = None;
                if !pack.flush(results, &self.stop)? {
                    break;
                }
            }
            let Ran {
                sent_us,
                started,
                finished,
                mut outcome,
            } = self.run_task_from(batch, &task, went_on.take());
            if outcome.status != Status::Ok && self.stop.is_triggered() {
                // Cut short because the worker is stopping (a signal, KILL):
                // that is no result of the task's. It is not reported, so
                // the ventilator sends it again: at once in credit dispatch
                // (our BYE tells it which tasks this thread held), when the
                // sink reports the worker gone in push dispatch.
                log::info!(
                    "task {} of batch {batch:016x} was cut short by the stop: not reported, so it is sent again",
                    task.task
                );
                break;
            }
            let duration = finished - started;
            counts.tasks += 1;
            if outcome.status != Status::Ok {
                counts.failed += 1;
            }
            if let Some(o) = &mut observer {
                o.ran(outcome.status);
                if queue.is_empty() {
                    o.idle();
                }
            }
            if let Some(ask) = credit
                .as_mut()
                .and_then(|c| c.finished(duration, queue.len(), finished))
            {
                self.ask(tasks, ask);
            }
            fit(&mut outcome, max_body);
            let result = ResultBody {
                worker: self.worker,
                thread: self.index as u16,
                sent_us,
                duration_us: duration.as_micros() as u64,
                outcome,
            };
            body.clear();
            protocol::encode_result(&mut body, &result);
            let mut sent = false;
            if !pack.fits(body.len()) {
                sent = true;
                if !pack.flush(results, &self.stop)? {
                    break;
                }
            }
            pack.add(batch, task.task, task.attempt, &body, finished);
            if pack.due(duration, finished) {
                sent = true;
                if !pack.flush(results, &self.stop)? {
                    break;
                }
            }
            went_on = (!sent).then_some(finished);
        }
        // Results of finished tasks still go out (the socket lingers).
        pack.flush(results, &Shutdown::new()).ok();
        // Nothing on the task socket is worth waiting for: a CREDIT queued
        // for a ventilator that is gone would hold the worker's exit for
        // the whole linger.
        let _ = tasks.set_linger(0);
        counts.dropped = drops.total();
        Ok(counts)
    }

    /// What an idle thread (or dispatcher) looks at: a refusal by the sink
    /// is named; a new ventilator (a standing pool's next batch) hears at
    /// once what it can take, and any ventilator again once a second.
    pub(crate) fn idle(
        &self,
        tasks: &zmq::Socket,
        credit: Option<&mut Credit>,
        handshakes: &Monitor,
        sink_refusals: Option<&mut sockets::Refusals>,
    ) -> Result<(), common::Error> {
        if let Some(r) = sink_refusals {
            r.check()?;
        }
        let mut reconnected = false;
        while let Recv::Message(_) = handshakes.next_event(Duration::ZERO)? {
            reconnected = true;
        }
        let now = Instant::now();
        let ask = credit.and_then(|c| {
            if reconnected {
                Some(c.reconnected(now))
            } else {
                c.idle(now)
            }
        });
        if let Some(ask) = ask {
            self.ask(tasks, ask);
        }
        Ok(())
    }

    /// Sends a CREDIT to the ventilator; dropped rather than queued when it
    /// is away (the idle reset says it again).
    pub(crate) fn ask(&self, tasks: &zmq::Socket, ask: Ask) {
        let head = Header {
            kind: Kind::Credit,
            attempt: u32::from(ask.exact),
            batch: 0,
            task: u64::from(ask.tasks),
        }
        .encode();
        let who = protocol::encode_credit(self.worker, self.index as u16);
        let _ = tasks.send_multipart([&b""[..], &head[..], &who[..]], zmq::DONTWAIT);
    }

    /// Reads one message from the task socket into the queue; returns how
    /// many tasks it held, and the most credit a TASKS header says a thread
    /// may hold (`Some(0)`: a ventilator from before, which does not say;
    /// `None`: not a TASKS). Classic tasks run at once.
    pub(crate) fn take(
        &self,
        frames: &[zmq::Message],
        queue: &mut VecDeque<Queued>,
        drops: &mut Drops,
        results: &zmq::Socket,
        counts: &mut Counts,
    ) -> Result<(u32, Option<u32>), common::Error> {
        if self.classic {
            if self.classic_task(frames, drops) {
                counts.tasks += 1;
                // taskwork: the result is an empty message.
                sockets::send_frames(results, &[b""], || !self.stop.is_triggered())?;
            }
            return Ok((0, None));
        }
        let frames = if self.credit_mode() {
            match protocol::split_envelope(frames) {
                Some(([], rest)) => rest,
                _ => {
                    drops.note(
                        "tasks",
                        "no envelope",
                        "a message without a leading empty frame",
                    );
                    return Ok((0, None));
                }
            }
        } else {
            frames
        };
        match Message::decode(frames) {
            // Several tasks at once: as much as a thread's credit allows,
            // or in push dispatch a pack of quick tasks (this worker says
            // in HELLO that it takes them).
            Ok(Message::Tasks { batch, tasks }) => {
                let n = tasks.len() as u32;
                let cap = protocol::Header::decode(&frames[0])
                    .ok()
                    .filter(|h| h.kind == protocol::Kind::Tasks)
                    .map(|h| h.attempt);
                if let Some(h) = &self.held {
                    for t in &tasks {
                        h.took(self.index, batch, t.task);
                    }
                }
                queue.extend(tasks.into_iter().map(|task| Queued { batch, task }));
                Ok((n, cap))
            }
            // The ventilator's answer to our heartbeat goes to the main
            // thread's socket; nothing else is expected here.
            Ok(other) => {
                drops.note(
                    "tasks",
                    "unexpected kind",
                    format_args!("{:?} on the task socket", other.kind()),
                );
                Ok((0, None))
            }
            Err(e) => {
                drops.note("tasks", e.label(), &e);
                Ok((0, None))
            }
        }
    }

    /// The most a result message may carry: the sockets' message size limit,
    /// less room for the header.
    pub(crate) fn max_body(&self) -> usize {
        usize::try_from(self.tuning.max_msg_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(64)
            .max(4096)
    }

    /// Runs one task through the handler; a body that could not be read, or
    /// a handler that panics, becomes an error outcome.
    #[inline]
    pub(crate) fn run_task(&self, batch: u64, task: &Item<TaskBody>) -> Ran {
        self.run_task_from(batch, task, None)
    }

    /// [`Self::run_task`], starting the task's clock at `started` when the
    /// thread goes straight on from the task that ended then (one reading
    /// of the clock a task, not two: at the no-op rate each is felt).
    pub(crate) fn run_task_from(
        &self,
        batch: u64,
        task: &Item<TaskBody>,
        started: Option<Instant>,
    ) -> Ran {
        self.activity.begin();
        let ran = self.run_handler(batch, task, started);
        self.activity.end(ran.finished);
        ran
    }

    /// [`Self::run_task_from`] without the bookkeeping.
    fn run_handler(&self, batch: u64, task: &Item<TaskBody>, started: Option<Instant>) -> Ran {
        let started = started.unwrap_or_else(Instant::now);
        let body = match &task.body {
            Ok(body) => body,
            Err(e) => {
                return Ran {
                    sent_us: 0,
                    started,
                    finished: Instant::now(),
                    outcome: Outcome::failed(
                        Status::Rejected,
                        format!("cannot read the task: {e}"),
                    ),
                };
            }
        };
        let info = TaskInfo {
            batch,
            task: task.task,
            attempt: task.attempt,
            stop: &self.stop,
        };
        // A data task that names a kind of its own goes by that name.
        let run = || match &body.name {
            Some(kind) => self.handler.run_named(&info, kind, &body.work),
            None => self.handler.run(&info, &body.work),
        };
        let outcome = match catch_unwind(AssertUnwindSafe(run)) {
            Ok(o) => o,
            Err(panic) => Outcome::failed(
                Status::Panicked,
                format!("the handler panicked: {}", panic_message(&*panic)),
            ),
        };
        Ran {
            sent_us: body.sent_us,
            started,
            finished: Instant::now(),
            outcome,
        }
    }
}

/// What a panic said, when it said it as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}

/// Cuts a result's output, then its error, so that the whole result fits in
/// `max` bytes, and says so in the error: a message larger than the sink's
/// `--max-msg-size` would be dropped with the connection, silently.
pub(crate) fn fit(outcome: &mut Outcome, max: usize) {
    // The fixed part of a result body, a record's head, and the note below.
    let room = max.saturating_sub(protocol::RESULT_FIXED_LEN + 16 + 200);
    if outcome.output.len() + outcome.error.len() <= room {
        return;
    }
    let (out, err) = (outcome.output.len(), outcome.error.len());
    let keep_err = err.min(room / 4);
    outcome.error.truncate(keep_err);
    outcome.output.truncate(room - keep_err);
    outcome.error.extend_from_slice(
        format!("\n[zpipe: result cut to fit --max-msg-size: output {out} → {} bytes, error {err} → {keep_err} bytes]", outcome.output.len()).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_that_fits_is_left_alone() {
        let mut o = Outcome::ok(vec![b'x'; 1000]);
        o.error = b"err".to_vec();
        let before = o.clone();
        fit(&mut o, 4096);
        assert_eq!(o, before);
    }

    #[test]
    fn a_large_result_is_cut_to_fit_and_says_so() {
        let max = 4096;
        let mut o = Outcome::ok(vec![b'x'; 100_000]);
        o.error = vec![b'e'; 50_000];
        fit(&mut o, max);
        let mut body = Vec::new();
        protocol::encode_result(
            &mut body,
            &ResultBody {
                worker: 1,
                thread: 0,
                sent_us: 0,
                duration_us: 0,
                outcome: o.clone(),
            },
        );
        let mut record = Vec::new();
        protocol::encode_record(&mut record, 1, 1, &body);
        assert!(record.len() <= max, "{} > {max}", record.len());
        let error = String::from_utf8_lossy(&o.error);
        assert!(error.starts_with("eee"), "the error's start is kept");
        assert!(
            error.contains("result cut to fit --max-msg-size: output 100000 → ")
                && error.contains("error 50000 → "),
            "{error}"
        );
        assert!(o.output.iter().all(|&b| b == b'x') && !o.output.is_empty());
    }

    #[test]
    fn the_gate_lets_waiters_through_once_open() {
        let gate = Arc::new(Gate::default());
        assert!(!gate.wait(Duration::from_millis(10)), "closed: times out");
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.wait(Duration::from_secs(10)))
        };
        let opened = Instant::now();
        gate.open();
        assert!(waiter.join().unwrap());
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        assert!(gate.wait(Duration::ZERO), "it stays open");
    }

    #[test]
    fn the_stop_bell_wakes_a_thread_waiting_for_work_at_once_and_stays_rung() {
        let ctx = zmq::Context::new();
        let bell = Arc::new(StopBell::new().unwrap());
        let waiter = {
            let (ctx, bell) = (ctx.clone(), Arc::clone(&bell));
            std::thread::spawn(move || {
                // A task socket with no ventilator: nothing will come.
                let tasks = ctx.socket(zmq::PULL).unwrap();
                tasks.set_linger(0).unwrap();
                tasks.bind("inproc://no-ventilator").unwrap();
                let mut frames = Vec::new();
                let t = Instant::now();
                let got = bell.recv(&tasks, &mut frames, Duration::from_secs(60));
                (matches!(got, Ok(Recv::Timeout)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        bell.ring();
        let (woken, waited) = waiter.join().unwrap();
        assert!(woken);
        assert!(waited < Duration::from_secs(30), "not woken: {waited:?}");
        // Rung, it stays rung: a later wait returns at once too.
        let tasks = ctx.socket(zmq::PULL).unwrap();
        tasks.set_linger(0).unwrap();
        let t = Instant::now();
        let _ = bell.recv(&tasks, &mut Vec::new(), Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_panic_says_what_it_said() {
        let text = catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*text), "boom 1");
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*literal), "plain");
        let other = catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(panic_message(&*other), "a non-string panic");
    }
}
