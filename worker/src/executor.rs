//! One executor thread: take tasks, run them, send the results.
//!
//! Each of the worker's `--threads` threads owns one task socket to the
//! ventilator (DEALER in credit dispatch, PULL in push dispatch) and one
//! PUSH to the sink: the guide's multithreaded worker, with no shared queue
//! in the middle, so N threads are N peers of the ventilator.
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
const STOP_POLL: Duration = Duration::from_millis(100);

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
struct Queued {
    batch: u64,
    task: Item<TaskBody>,
}

/// A task that ran.
struct Ran {
    /// The ventilator's clock when it sent the task (0 when unread).
    sent_us: u64,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
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
        // DEALER (credit) or PULL (push): tasks from the ventilator, one
        // connection per thread.
        let kind = if self.credit_mode() {
            zmq::DEALER
        } else {
            zmq::PULL
        };
        let tasks = sockets::socket(&self.ctx, kind, "tasks", &self.tuning)?;
        let monitor = Monitor::connections(&self.ctx, &tasks)?;
        self.task_endpoint.attach_secured(
            &tasks,
            Action::Connect,
            "tasks",
            self.tuning.security.as_deref(),
        )?;
        // PUSH: results to the sink.
        let results = sockets::socket(&self.ctx, zmq::PUSH, "results", &self.tuning)?;
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
                let _ = ready.send(Ok(()));
                if !self.classic && !self.wait_for_hello() {
                    Ok(Counts::default())
                } else {
                    // From now on only completed handshakes matter: a new
                    // ventilator (a standing pool's next batch) hears this
                    // thread's credit at once.
                    let handshakes = Monitor::handshakes(&self.ctx, &tasks)?;
                    let counts = self.work(&tasks, &results, &handshakes, sink_refusals.as_mut());
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
                sockets::recv_frames(tasks, &mut frames, STOP_POLL)?
            };
            match got {
                Recv::Message(()) => {
                    let n = self.take(&frames, &mut queue, &mut drops, results, &mut counts)?;
                    if let Some(credit) = &mut credit {
                        credit.arrived(n, Instant::now);
                    }
                }
                Recv::Timeout if queue.is_empty() => {
                    // Nothing to run: what is held goes now.
                    if !pack.flush(results, &self.stop)? {
                        break;
                    }
                    if let Some(r) = sink_refusals.as_deref_mut() {
                        r.check()?;
                    }
                    let mut reconnected = false;
                    while let Recv::Message(_) = handshakes.next_event(Duration::ZERO)? {
                        reconnected = true;
                    }
                    let ask = credit.as_mut().and_then(|c| {
                        if reconnected {
                            Some(c.reconnected(Instant::now()))
                        } else {
                            c.idle(Instant::now())
                        }
                    });
                    if let Some(ask) = ask {
                        self.ask(tasks, ask);
                    }
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
            if pack.holds_other_batch(batch) && !pack.flush(results, &self.stop)? {
                break;
            }
            let Ran {
                sent_us,
                started,
                finished,
                mut outcome,
            } = self.run_task(batch, &task);
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
            if !pack.fits(body.len()) && !pack.flush(results, &self.stop)? {
                break;
            }
            pack.add(batch, task.task, task.attempt, &body, finished);
            if pack.due(duration, finished) && !pack.flush(results, &self.stop)? {
                break;
            }
        }
        // Results of finished tasks still go out (the socket lingers).
        pack.flush(results, &Shutdown::new()).ok();
        counts.dropped = drops.total();
        Ok(counts)
    }

    /// Sends a CREDIT to the ventilator; dropped rather than queued when it
    /// is away (the idle reset says it again).
    fn ask(&self, tasks: &zmq::Socket, ask: Ask) {
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
    /// many tasks it held. Classic tasks run at once.
    fn take(
        &self,
        frames: &[zmq::Message],
        queue: &mut VecDeque<Queued>,
        drops: &mut Drops,
        results: &zmq::Socket,
        counts: &mut Counts,
    ) -> Result<u32, common::Error> {
        if self.classic {
            if self.classic_task(frames, drops) {
                counts.tasks += 1;
                // taskwork: the result is an empty message.
                sockets::send_frames(results, &[b""], || !self.stop.is_triggered())?;
            }
            return Ok(0);
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
                    return Ok(0);
                }
            }
        } else {
            frames
        };
        match Message::decode(frames) {
            // Several tasks at once come only with credit.
            Ok(Message::Tasks { batch, tasks }) if self.credit_mode() || tasks.len() == 1 => {
                let n = tasks.len() as u32;
                if let Some(h) = &self.held {
                    for t in &tasks {
                        h.took(self.index, batch, t.task);
                    }
                }
                queue.extend(tasks.into_iter().map(|task| Queued { batch, task }));
                Ok(n)
            }
            // The ventilator's answer to our heartbeat goes to the main
            // thread's socket; nothing else is expected here.
            Ok(other) => {
                drops.note(
                    "tasks",
                    "unexpected kind",
                    format_args!("{:?} on the task socket", other.kind()),
                );
                Ok(0)
            }
            Err(e) => {
                drops.note("tasks", e.label(), &e);
                Ok(0)
            }
        }
    }

    /// The most a result message may carry: the sockets' message size limit,
    /// less room for the header.
    fn max_body(&self) -> usize {
        usize::try_from(self.tuning.max_msg_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(64)
            .max(4096)
    }

    /// Runs one task through the handler; a body that could not be read, or
    /// a handler that panics, becomes an error outcome.
    fn run_task(&self, batch: u64, task: &Item<TaskBody>) -> Ran {
        self.activity.begin();
        let ran = self.run_handler(batch, task);
        self.activity.end(ran.finished);
        ran
    }

    /// [`Self::run_task`] without the bookkeeping.
    fn run_handler(&self, batch: u64, task: &Item<TaskBody>) -> Ran {
        let started = Instant::now();
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
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.handler.run(&info, &body.work))) {
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
    fn a_panic_says_what_it_said() {
        let text = catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*text), "boom 1");
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*literal), "plain");
        let other = catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(panic_message(&*other), "a non-string panic");
    }
}
