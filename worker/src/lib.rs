//! zpipe's **worker**: the dynamic part of the parallel pipeline.
//!
//! ```text
//!  credit: ventilator ROUTER ◀─▶ DEALER ┐
//!  push:   ventilator PUSH   ──▶ PULL   ┤
//!                                       worker thread ×N ── PUSH ──▶ PULL sink
//!  sink PUB ──▶ SUB (END, KILL) ────────┘
//! ```
//!
//! A worker *connects* (workers come and go; the ventilator and the sink stay
//! and bind). Each of its `--threads N` threads owns one task socket to the
//! ventilator and one PUSH socket to the sink, so one process with N threads is
//! N peers of the ventilator: the guide's multithreaded worker without a
//! shared queue in the middle. The main thread subscribes to the sink's
//! control PUB and stops everything on END or KILL.
//!
//! **Credit dispatch** (`--dispatch credit`, the default): each thread's
//! DEALER tells the ventilator's ROUTER how many tasks it can take (CREDIT),
//! and asks again as it finishes them. A thread asks for one task at a time
//! while tasks are long, so the least busy worker gets the next one; when
//! tasks are short (under a millisecond) it asks for up to `--prefetch` more,
//! so that a flood of tiny tasks is not one round trip each. The main thread
//! says HEARTBEAT to the ventilator too (the guide's Paranoid Pirate), so a
//! worker that dies is noticed and its tasks go to others. **Push dispatch**
//! (`--dispatch push`) is the guide's PULL socket; the ventilator and the
//! worker must use the same mode: a thread that connects but never completes
//! the handshake says so.
//!
//! **Start.** Each thread waits until its task socket has completed the ZMTP
//! handshake with the ventilator (a PUSH deals only to peers already connected:
//! the slow joiner); then the worker says HELLO to the sink, which tells the
//! ventilator, which starts the batch once `--workers N` said hello. No one
//! presses Enter.
//!
//! **Tasks.** The task body runs through a [`Handler`]: [`Builtin`] knows
//! `noop`, `sleep`, `primes` and `exec`; a Rust program passes its own handler
//! to [`run_with`]. A task that fails, panics or cannot be read becomes an
//! error result; the worker lives on.
//!
//! **Heartbeats.** Every `--heartbeat` the worker repeats its HELLO as a
//! HEARTBEAT, so the sink knows it is alive (and a restarted sink learns of it).
//!
//! **Shutdown.** END or KILL on the control channel, or the [`Shutdown`] flag
//! (SIGINT, SIGTERM), stops the threads within 100 ms of their current task; a
//! running `exec` command's process group is killed. The worker says BYE and
//! closes its sockets with a bounded linger, so results in flight are delivered
//! but the exit never hangs.
//!
//! # Your own handler
//!
//! ```no_run
//! use common::work::{Outcome, Status, Work};
//! use worker::{Config, TaskInfo};
//! use clap::Parser;
//!
//! let config = Config::parse_from(["worker", "--threads", "4"]);
//! let handler = |_task: &TaskInfo<'_>, work: &Work| match work {
//!     Work::Data { data } => match data.as_str() {
//!         Some(text) => Outcome::ok(text.to_uppercase()),
//!         None => Outcome::failed(Status::Failed, "expected a string"),
//!     },
//!     _ => Outcome::failed(Status::Failed, "this worker only takes data tasks"),
//! };
//! let report = worker::run_with(&config, &zmq::Context::new(), &common::Shutdown::new(), handler)?;
//! eprintln!("{} tasks done", report.tasks);
//! # Ok::<(), worker::Error>(())
//! ```
//!
//! `examples/uppercase.rs` is the same as a whole program.
//!
//! # Layout
//!
//! - `lib.rs`: flags ([`Config`]), the main thread ([`run_with`]) and the
//!   executor threads.
//! - [`builtin`]: the built-in task kinds, `exec` with timeouts and process
//!   groups.
//! - `classic.rs`: the guide's wire format for `--classic`.
#![forbid(unsafe_code)]

pub mod builtin;
mod classic;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::drops::Drops;
use std::collections::VecDeque;

use common::protocol::{self, DecodeError, Dispatch, Header, Kind, ResultBody, WorkerInfo};
use common::sockets::{self, HandshakeWatch, Recv, Tuning};
use common::work::{Outcome, Status, Work};
use common::{Action, Endpoints, Shutdown};

pub use builtin::Builtin;

/// The worker's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    version,
    about = "zpipe worker: takes tasks from the ventilator (PULL), sends results to the sink (PUSH), stops on the sink's END (SUB)"
)]
pub struct Config {
    /// Where tasks come from (ventilator or streamer). `@` binds, `>` connects,
    /// bare connects; comma-separated list.
    #[arg(
        long,
        env = "ZPIPE_TASK_ENDPOINT",
        default_value = "tcp://localhost:5557"
    )]
    pub task_endpoint: Endpoints,
    /// Where results go (sink or streamer).
    #[arg(
        long,
        env = "ZPIPE_RESULT_ENDPOINT",
        default_value = "tcp://localhost:5558"
    )]
    pub result_endpoint: Endpoints,
    /// The sink's control channel (PUB), which says END and KILL.
    #[arg(
        long,
        env = "ZPIPE_CONTROL_ENDPOINT",
        default_value = "tcp://localhost:5559"
    )]
    pub control_endpoint: Endpoints,
    /// How tasks are taken: `credit` (a DEALER asks the ventilator's ROUTER
    /// for work) or `push` (the guide's PULL). Use the ventilator's mode.
    #[arg(long, env = "ZPIPE_DISPATCH", value_enum, default_value = "credit")]
    pub dispatch: Dispatch,
    /// Credit dispatch: the most tasks a thread asks for beyond the one it
    /// runs, when tasks are short (under a millisecond); long tasks are asked
    /// for one at a time.
    #[arg(long, env = "ZPIPE_PREFETCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub prefetch: u32,
    /// Tasks run at once, each in its own thread with its own sockets.
    #[arg(long, env = "ZPIPE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// How often to tell the sink (and, in credit dispatch, the ventilator)
    /// this worker is alive.
    #[arg(long, env = "ZPIPE_HEARTBEAT", default_value = "1s", value_parser = common::cli::duration)]
    pub heartbeat: Duration,
    /// Default time limit for an `exec` task; its whole process group is
    /// killed when it runs over.
    #[arg(long, env = "ZPIPE_EXEC_TIMEOUT", default_value = "10m", value_parser = common::cli::duration)]
    pub exec_timeout: Duration,
    /// Bytes of stdout and of stderr kept per `exec` task.
    #[arg(long, env = "ZPIPE_MAX_OUTPUT", default_value_t = 64 * 1024)]
    pub max_output: usize,
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    /// Speak the guide's wire format (taskwork2): decimal milliseconds in,
    /// an empty message out, any control message means kill.
    #[arg(long, env = "ZPIPE_CLASSIC")]
    pub classic: bool,
}

/// The worker's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Setup(#[from] common::Error),
    #[error("{0}")]
    Usage(String),
    #[error("worker thread {0} panicked outside a task")]
    ThreadPanicked(usize),
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::Usage(_) => true,
            Error::ThreadPanicked(_) => false,
        }
    }
}

/// What a handler is told about the task besides its body.
#[derive(Debug)]
pub struct TaskInfo<'a> {
    pub batch: u64,
    pub task: u64,
    pub attempt: u32,
    /// Raised when the worker must stop: long handlers should check it.
    pub stop: &'a Shutdown,
}

/// A task body. Implemented for any `Fn(&TaskInfo, &Work) -> Outcome`.
pub trait Handler: Send + Sync {
    fn run(&self, task: &TaskInfo<'_>, work: &Work) -> Outcome;
}

impl<F> Handler for F
where
    F: Fn(&TaskInfo<'_>, &Work) -> Outcome + Send + Sync,
{
    fn run(&self, task: &TaskInfo<'_>, work: &Work) -> Outcome {
        self(task, work)
    }
}

/// Why the worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// The sink said the batch is complete.
    End,
    /// A KILL (or, in classic mode, any control message).
    Kill,
    /// The shutdown flag (a signal).
    Signal,
}

/// What the worker did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub worker: u64,
    pub tasks: u64,
    pub failed: u64,
    pub dropped: u64,
    pub stopped_by: StopReason,
}

/// Runs a worker with the built-in task kinds until END, KILL or `shutdown`.
pub fn run(config: &Config, ctx: &zmq::Context, shutdown: &Shutdown) -> Result<Report, Error> {
    let builtin = Builtin {
        exec_timeout: config.exec_timeout,
        max_output: config.max_output,
    };
    run_with(config, ctx, shutdown, builtin)
}

/// Runs a worker whose task bodies are `handler`.
pub fn run_with<H: Handler + 'static>(
    config: &Config,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
    handler: H,
) -> Result<Report, Error> {
    if config.threads > 1
        && (config.task_endpoint.any_bind(Action::Connect)
            || config.result_endpoint.any_bind(Action::Connect))
    {
        return Err(Error::Usage(
            "a worker with --threads > 1 connects one socket per thread, so its task and result endpoints cannot bind (@): put a streamer in front, or use --threads 1".into(),
        ));
    }
    // Enough I/O threads that a many-threaded worker is not bound by one.
    let _ = ctx.set_io_threads(1 + (config.threads as i32) / 4);
    let tuning = config.sockets.tuning()?;
    let worker_id: u64 = rand::random();
    let dispatch = if config.classic {
        Dispatch::Push
    } else {
        config.dispatch
    };
    let info = WorkerInfo {
        id: worker_id,
        host: common::hostname(),
        pid: std::process::id(),
        threads: config.threads,
        dispatch,
        heartbeat_ms: config.heartbeat.as_millis() as u64,
    };

    // SUB: the control channel; subscribe to everything (END, KILL).
    let control = sockets::socket(ctx, zmq::SUB, "control", &tuning)?;
    control
        .set_subscribe(b"")
        .map_err(|e| common::Error::zmq("subscribing", e))?;
    config.control_endpoint.attach_secured(
        &control,
        Action::Connect,
        "control",
        tuning.security.as_deref(),
    )?;
    // PUSH: HELLO, HEARTBEAT and BYE to the sink (results go from the threads).
    let status = if config.classic {
        None
    } else {
        let s = sockets::socket(ctx, zmq::PUSH, "results", &tuning)?;
        config.result_endpoint.attach_secured(
            &s,
            Action::Connect,
            "results",
            tuning.security.as_deref(),
        )?;
        Some(s)
    };
    // DEALER (credit dispatch): HELLO, HEARTBEAT and BYE to the ventilator,
    // which answers each HEARTBEAT.
    let vent = if dispatch == Dispatch::Credit {
        let s = sockets::socket(ctx, zmq::DEALER, "heartbeats", &tuning)?;
        config.task_endpoint.attach_secured(
            &s,
            Action::Connect,
            "heartbeats",
            tuning.security.as_deref(),
        )?;
        Some(s)
    } else {
        None
    };

    // The threads' own stop flag: raised on END/KILL as well as on signals.
    let stop = Shutdown::new();
    let handler = Arc::new(handler);
    // Raised once HELLO is out: a thread asks for work only then, so the
    // sink knows this worker before its first result.
    let hello = Shutdown::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), common::Error>>();
    let mut threads = Vec::new();
    for index in 0..config.threads as usize {
        let exec = Executor {
            index,
            worker: worker_id,
            classic: config.classic,
            dispatch,
            prefetch: config.prefetch,
            task_endpoint: config.task_endpoint.clone(),
            result_endpoint: config.result_endpoint.clone(),
            tuning: tuning.clone(),
            ctx: ctx.clone(),
            stop: stop.clone(),
            handler: Arc::clone(&handler),
            hello: hello.clone(),
        };
        let ready = ready_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || exec.run(ready))
                .map_err(|e| Error::Usage(format!("cannot start a thread: {e}")))?,
        );
    }
    drop(ready_tx);

    let mut connected = 0;
    let mut hello_sent = false;
    let mut next_beat = Instant::now();
    let mut waiting_since = Instant::now();
    let mut frames = Vec::new();
    let mut drops = Drops::default();
    let mut vent_heard: Option<Instant> = None;
    let mut vent_silent = false;
    let stopped_by = loop {
        if shutdown.is_triggered() {
            break StopReason::Signal;
        }
        while let Ok(r) = ready_rx.try_recv() {
            match r {
                Ok(()) => connected += 1,
                Err(e) => {
                    stop.trigger();
                    join(threads);
                    return Err(e.into());
                }
            }
        }
        if connected == config.threads && !hello_sent {
            hello_sent = true;
            log::info!(
                "worker {} ready: {} thread(s) connected to {}",
                info.name(),
                config.threads,
                config.task_endpoint
            );
            if let Some(s) = &status {
                send_info(s, Kind::Hello, &info, &stop);
            }
            if let Some(v) = &vent {
                send_to_ventilator(v, Kind::Hello, &info);
            }
            hello.trigger();
            next_beat = Instant::now() + config.heartbeat;
        } else if !hello_sent && waiting_since.elapsed() >= Duration::from_secs(5) {
            log::info!(
                "still waiting for a ventilator at {} ({connected} of {} threads connected)",
                config.task_endpoint,
                config.threads
            );
            waiting_since = Instant::now();
        }
        if hello_sent && Instant::now() >= next_beat {
            if let Some(s) = &status {
                send_info(s, Kind::Heartbeat, &info, &stop);
            }
            if let Some(v) = &vent {
                send_to_ventilator(v, Kind::Heartbeat, &info);
            }
            next_beat = Instant::now() + config.heartbeat;
        }
        if let Some(v) = &vent {
            // The ventilator's heartbeats: only liveness matters.
            while let Recv::Message(()) = sockets::recv_frames_now(v, &mut frames)? {
                vent_heard = Some(Instant::now());
                vent_silent = false;
            }
            if let Some(at) = vent_heard
                && !vent_silent
                && at.elapsed() > config.heartbeat * 3
            {
                vent_silent = true;
                log::warn!(
                    "the ventilator at {} has been silent for {:.1?}: waiting for it (the sockets reconnect by themselves)",
                    config.task_endpoint,
                    at.elapsed()
                );
            }
        }
        match sockets::recv_frames(&control, &mut frames, Duration::from_millis(50))? {
            Recv::Timeout => continue,
            Recv::Stopped => break StopReason::Signal,
            Recv::Message(()) => {}
        }
        if config.classic {
            // taskwork2: any message on the controller socket means kill.
            break StopReason::Kill;
        }
        match protocol::split(&frames) {
            Ok((h, _)) if h.kind == Kind::End => break StopReason::End,
            Ok((h, _)) if h.kind == Kind::Kill => break StopReason::Kill,
            Ok((h, _)) => drops.note(
                "control",
                "unexpected kind",
                format!("{:?} is not a control message", h.kind),
            ),
            Err(e) => drops.note("control", e.label(), e),
        }
    };
    stop.trigger();
    let (tasks, failed, thread_drops) = join(threads);
    if let Some(s) = &status {
        send_info(s, Kind::Bye, &info, &Shutdown::new());
    }
    if let Some(v) = &vent {
        send_to_ventilator(v, Kind::Bye, &info);
    }
    let report = Report {
        worker: worker_id,
        tasks,
        failed,
        dropped: drops.total() + thread_drops,
        stopped_by,
    };
    log::info!(
        "worker {} stopped ({:?}): {} tasks, {} failed, {} messages dropped",
        info.name(),
        report.stopped_by,
        report.tasks,
        report.failed,
        report.dropped
    );
    Ok(report)
}

/// Waits for the executor threads; sums their counts.
fn join(threads: Vec<std::thread::JoinHandle<Counts>>) -> (u64, u64, u64) {
    let mut total = (0, 0, 0);
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(c) => {
                total.0 += c.tasks;
                total.1 += c.failed;
                total.2 += c.dropped;
            }
            Err(_) => log::error!("worker thread {i} panicked outside a task"),
        }
    }
    total
}

fn send_info(socket: &zmq::Socket, kind: Kind, info: &WorkerInfo, stop: &Shutdown) {
    let frames = protocol::json_frames(Header::bare(kind, 0), info);
    let deadline = Instant::now() + Duration::from_millis(500);
    if let Err(e) = sockets::send_frames(socket, &frames, || {
        Instant::now() < deadline && !stop.is_triggered()
    }) {
        log::warn!("cannot send {kind:?} to the sink: {e}");
    }
}

/// HELLO, HEARTBEAT or BYE to the ventilator (credit dispatch), after the
/// empty delimiter; dropped rather than queued when the ventilator is away.
fn send_to_ventilator(socket: &zmq::Socket, kind: Kind, info: &WorkerInfo) {
    let [h, p] = protocol::json_frames(Header::bare(kind, 0), info);
    let _ = socket.send_multipart([&b""[..], &h[..], &p[..]], zmq::DONTWAIT);
}

/// Cuts a result's output, then its error, so that the whole result fits in
/// `max` bytes, and says so in the error: a message larger than the sink's
/// `--max-msg-size` would be dropped with the connection, silently.
fn fit(outcome: &mut Outcome, max: usize) {
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

/// At most this many results travel in one RESULTS message.
const MAX_PACK: u32 = 64;
/// A result is held back for packing only behind tasks quicker than this,
/// and never longer than this.
const HOLD_LIMIT: Duration = Duration::from_millis(1);

/// Results waiting to be sent together (see RESULTS in the protocol).
#[derive(Debug)]
struct Pack {
    records: Vec<u8>,
    count: u32,
    batch: u64,
    oldest: Instant,
}

impl Default for Pack {
    fn default() -> Self {
        Pack {
            records: Vec::with_capacity(4096),
            count: 0,
            batch: 0,
            oldest: Instant::now(),
        }
    }
}

impl Pack {
    fn add(&mut self, batch: u64, record: &[u8], finished: Instant) {
        if self.count == 0 {
            self.oldest = finished;
            self.batch = batch;
        }
        self.records.extend_from_slice(record);
        self.count += 1;
    }

    /// Sends what is held: one RESULT as itself, several as RESULTS. Returns
    /// false when it gave up because of a stop.
    fn flush(&mut self, results: &zmq::Socket, stop: &Shutdown) -> Result<bool, common::Error> {
        if self.count == 0 {
            return Ok(true);
        }
        let sent = if self.count == 1 {
            // A record is task u64, attempt u32, len u32, then the body.
            let r = &self.records;
            let head = Header {
                kind: Kind::Result,
                attempt: u32::from_le_bytes(r[8..12].try_into().unwrap_or_default()),
                batch: self.batch,
                task: u64::from_le_bytes(r[0..8].try_into().unwrap_or_default()),
            };
            sockets::send_frames(results, &[&head.encode()[..], &r[16..]], || {
                !stop.is_triggered()
            })?
        } else {
            let head = Header {
                kind: Kind::Results,
                attempt: 0,
                batch: self.batch,
                task: self.count as u64,
            };
            sockets::send_frames(results, &[&head.encode()[..], &self.records[..]], || {
                !stop.is_triggered()
            })?
        };
        self.records.clear();
        self.count = 0;
        Ok(sent)
    }
}

#[derive(Debug, Default)]
struct Counts {
    tasks: u64,
    failed: u64,
    dropped: u64,
}

/// One executor thread and the sockets it owns.
struct Executor<H> {
    index: usize,
    worker: u64,
    classic: bool,
    dispatch: Dispatch,
    prefetch: u32,
    task_endpoint: Endpoints,
    result_endpoint: Endpoints,
    tuning: Tuning,
    ctx: zmq::Context,
    stop: Shutdown,
    handler: Arc<H>,
    /// Raised when the main thread has said HELLO.
    hello: Shutdown,
}

/// A task waiting in a thread's own queue (credit dispatch may send
/// several at once).
struct Queued {
    header: Header,
    body: Vec<u8>,
}

/// Credit dispatch: what a thread has asked for and how much it wants.
struct Credit {
    /// Tasks asked for that have not arrived yet.
    expected: u32,
    /// Tasks it wants to hold (running, queued or coming): 1 + prefetch.
    window: u32,
    /// Average task time, µs (exponentially weighted); `None` before the
    /// first task.
    average_us: Option<f64>,
    last_asked: Instant,
    /// When this thread, idle, last asked for work; and how long work takes
    /// to come (the round trip, µs, exponentially weighted).
    idle_since: Option<Instant>,
    round_trip_us: Option<f64>,
}

/// Prefetch covers about this much work: enough that the round trip of a
/// CREDIT is hidden behind short tasks, too little to matter for
/// scheduling long ones.
const PREFETCH_WORK_US: f64 = 1000.0;
/// A thread that waits for its next task longer than this share of the
/// task's own time asks for one task ahead.
const ROUND_TRIP_SHARE: f64 = 0.02;
/// An idle thread says again how much it can take this often (a
/// restarted ventilator learns of it; lost credit is restored).
const IDLE_RESET: Duration = Duration::from_secs(1);

impl<H: Handler> Executor<H> {
    fn run(self, ready: mpsc::Sender<Result<(), common::Error>>) -> Counts {
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

    /// Asks the ventilator for `n` more tasks (`exact`: this thread is idle
    /// and can take exactly `n`).
    fn ask(&self, tasks: &zmq::Socket, n: u32, exact: bool) {
        let head = Header {
            kind: Kind::Credit,
            attempt: u32::from(exact),
            batch: 0,
            task: u64::from(n),
        }
        .encode();
        let who = protocol::encode_credit(self.worker, self.index as u16);
        let _ = tasks.send_multipart([&b""[..], &head[..], &who[..]], zmq::DONTWAIT);
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
        let mut watch = HandshakeWatch::new(&self.ctx, &tasks, Duration::from_secs(3))?;
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
        let mut counts = Counts::default();
        loop {
            if self.stop.is_triggered() {
                return Ok(counts);
            }
            let stalled = watch.stalled()?;
            if stalled > 0 && self.index == 0 && !self.classic {
                let (mine, other) = match self.dispatch {
                    Dispatch::Credit => ("DEALER (--dispatch credit)", "push"),
                    Dispatch::Push => ("PULL (--dispatch push)", "credit"),
                };
                log::error!(
                    "connected to {} but the ZMTP handshake never completed: the peer cannot pair with this worker's {mine}. Is the ventilator dealing by {other}? Start workers and ventilator with the same --dispatch",
                    self.task_endpoint
                );
            }
            if watch.handshakes() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        watch.stop(&tasks);
        let _ = ready.send(Ok(()));

        let mut credit = Credit {
            expected: 1,
            window: 1,
            average_us: None,
            last_asked: Instant::now(),
            idle_since: None,
            round_trip_us: None,
        };
        while !self.hello.is_triggered() && !self.classic {
            if self.stop.is_triggered() {
                return Ok(counts);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.credit_mode() {
            self.ask(&tasks, 1, true);
        }
        let mut frames = Vec::new();
        let mut queue: VecDeque<Queued> = VecDeque::new();
        let mut body = Vec::with_capacity(256);
        let mut pack = Pack::default();
        let mut drops = Drops::default();
        while !self.stop.is_triggered() {
            // With results held back, only look for a message that is
            // already here; otherwise wait for one.
            // (With tasks queued, the socket is left alone: each look costs
            // a system call, and the queue has work.)
            let got = if !queue.is_empty() {
                Recv::Timeout
            } else if pack.count > 0 {
                sockets::recv_frames_now(&tasks, &mut frames)?
            } else {
                sockets::recv_frames(&tasks, &mut frames, Duration::from_millis(100))?
            };
            match got {
                Recv::Message(()) => {
                    if let Some(since) = credit.idle_since.take() {
                        let us = since.elapsed().as_secs_f64() * 1e6;
                        credit.round_trip_us =
                            Some(credit.round_trip_us.map_or(us, |r| r * 0.8 + us * 0.2));
                    }
                    let n = self.take(&frames, &mut queue, &mut drops, &results, &mut counts)?;
                    credit.expected = credit.expected.saturating_sub(n);
                }
                Recv::Timeout if queue.is_empty() => {
                    if !pack.flush(&results, &self.stop)? {
                        break;
                    }
                    if self.credit_mode() && credit.last_asked.elapsed() >= IDLE_RESET {
                        // Idle: say exactly what we can take.
                        self.ask(&tasks, credit.window, true);
                        credit.expected = credit.window;
                        credit.last_asked = Instant::now();
                    }
                    continue;
                }
                Recv::Timeout => {}
                Recv::Stopped => break,
            }
            let Some(task) = queue.pop_front() else {
                continue;
            };
            let header = task.header;
            if pack.count > 0 && pack.batch != header.batch && !pack.flush(&results, &self.stop)? {
                break;
            }
            let (sent_us, started, finished, outcome) = self.run_task(header, &task.body);
            let duration = finished - started;
            counts.tasks += 1;
            if outcome.status != Status::Ok {
                counts.failed += 1;
            }
            if self.credit_mode() {
                let us = duration.as_secs_f64() * 1e6;
                let avg = credit.average_us.map_or(us, |a| a * 0.8 + us * 0.2);
                credit.average_us = Some(avg);
                // Short tasks: about a millisecond of work ahead. Longer
                // ones: one ahead only if waiting for the next costs more
                // than a sliver of the task itself; else none, so the next
                // task goes to whoever is free first.
                let mut extra = (PREFETCH_WORK_US / avg.max(1.0)) as u32;
                if credit
                    .round_trip_us
                    .is_some_and(|rt| rt > avg * ROUND_TRIP_SHARE)
                {
                    extra = extra.max(1);
                }
                let extra = extra.min(self.prefetch);
                credit.window = (1 + extra).min(self.tuning.hwm.max(1) as u32);
                let holding = credit.expected + queue.len() as u32;
                let free = credit.window.saturating_sub(holding);
                // Ask in batches while plenty is queued; at once when the
                // queue runs dry.
                if free > 0 && (holding == 0 || free >= credit.window.div_ceil(2)) {
                    self.ask(&tasks, free, false);
                    credit.expected += free;
                    credit.last_asked = Instant::now();
                    if holding == 0 {
                        credit.idle_since = Some(credit.last_asked);
                    }
                }
            }
            let mut outcome = outcome;
            fit(&mut outcome, self.max_body());
            let result = ResultBody {
                worker: self.worker,
                thread: self.index as u16,
                sent_us,
                duration_us: duration.as_micros() as u64,
                outcome,
            };
            body.clear();
            protocol::encode_result_record(&mut body, header.task, header.attempt, &result);
            // A pack never grows past what one message may carry.
            if pack.count > 0
                && pack.records.len() + body.len() > self.max_body()
                && !pack.flush(&results, &self.stop)?
            {
                break;
            }
            pack.add(header.batch, &body, finished);
            // Hold results back only behind cheap tasks, and not for long.
            if (pack.count >= MAX_PACK
                || duration >= HOLD_LIMIT
                || finished - pack.oldest >= HOLD_LIMIT)
                && !pack.flush(&results, &self.stop)?
            {
                break;
            }
        }
        // Results of finished tasks still go out (the socket lingers).
        pack.flush(&results, &Shutdown::new()).ok();
        counts.dropped = drops.total();
        Ok(counts)
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
        match protocol::split(frames) {
            Ok((h, p)) if h.kind == Kind::Task => {
                queue.push_back(Queued {
                    header: h,
                    body: p.to_vec(),
                });
                Ok(1)
            }
            Ok((h, p)) if h.kind == Kind::Tasks && self.credit_mode() => {
                match protocol::split_records(p, h.task) {
                    Ok(records) => {
                        for r in &records {
                            queue.push_back(Queued {
                                header: Header {
                                    kind: Kind::Task,
                                    attempt: r.attempt,
                                    batch: h.batch,
                                    task: r.task,
                                },
                                body: r.body.to_vec(),
                            });
                        }
                        Ok(records.len() as u32)
                    }
                    Err(e) => {
                        drops.note("tasks", e.label(), &e);
                        Ok(0)
                    }
                }
            }
            // The ventilator's answer to our heartbeat goes to the main
            // thread's socket; nothing else is expected here.
            Ok((h, _)) => {
                drops.note(
                    "tasks",
                    "unexpected kind",
                    format!("{:?} on the task socket", h.kind),
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

    /// Decodes and runs one task; a body that cannot be read, or a handler
    /// that panics, becomes an error outcome. Returns the ventilator's send
    /// time, when the task started and ended here, and the outcome.
    fn run_task(&self, header: Header, payload: &[u8]) -> (u64, Instant, Instant, Outcome) {
        let started = Instant::now();
        let (sent_us, work) = match protocol::decode_task(payload) {
            Ok(x) => x,
            Err(e) => {
                let e: DecodeError = e;
                return (
                    0,
                    started,
                    Instant::now(),
                    Outcome::failed(Status::Rejected, format!("cannot read the task: {e}")),
                );
            }
        };
        let info = TaskInfo {
            batch: header.batch,
            task: header.task,
            attempt: header.attempt,
            stop: &self.stop,
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.handler.run(&info, &work))) {
            Ok(o) => o,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                Outcome::failed(Status::Panicked, format!("the handler panicked: {msg}"))
            }
        };
        (sent_us, started, Instant::now(), outcome)
    }
}
