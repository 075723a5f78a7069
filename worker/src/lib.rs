//! zpipe's **worker**: the dynamic part of the parallel pipeline.
//!
//! ```text
//!  ventilator PUSH ──▶ PULL ┐
//!                           worker thread ×N ── PUSH ──▶ PULL sink
//!  sink PUB ──▶ SUB (END, KILL) ┘
//! ```
//!
//! A worker *connects* (workers come and go; the ventilator and the sink stay
//! and bind). Each of its `--threads N` threads owns one PULL socket to the
//! ventilator and one PUSH socket to the sink, so one process with N threads is
//! N peers in the ventilator's round-robin: the guide's multithreaded worker
//! without a shared queue in the middle. The main thread subscribes to the
//! sink's control PUB and stops everything on END or KILL.
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
use common::protocol::{self, DecodeError, Header, Kind, ResultBody, WorkerInfo};
use common::sockets::{self, Monitor, Recv, Tuning};
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
    /// Tasks run at once, each in its own thread with its own sockets.
    #[arg(long, env = "ZPIPE_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// How often to tell the sink this worker is alive.
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
    let tuning = config.sockets.tuning();
    let worker_id: u64 = rand::random();
    let info = WorkerInfo {
        id: worker_id,
        host: common::hostname(),
        pid: std::process::id(),
        threads: config.threads,
    };

    // SUB: the control channel; subscribe to everything (END, KILL).
    let control = sockets::socket(ctx, zmq::SUB, "control", &tuning)?;
    control
        .set_subscribe(b"")
        .map_err(|e| common::Error::zmq("subscribing", e))?;
    config
        .control_endpoint
        .attach(&control, Action::Connect, "control")?;
    // PUSH: HELLO, HEARTBEAT and BYE to the sink (results go from the threads).
    let status = if config.classic {
        None
    } else {
        let s = sockets::socket(ctx, zmq::PUSH, "results", &tuning)?;
        config
            .result_endpoint
            .attach(&s, Action::Connect, "results")?;
        Some(s)
    };

    // The threads' own stop flag: raised on END/KILL as well as on signals.
    let stop = Shutdown::new();
    let handler = Arc::new(handler);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), common::Error>>();
    let mut threads = Vec::new();
    for index in 0..config.threads as usize {
        let exec = Executor {
            index,
            worker: worker_id,
            classic: config.classic,
            task_endpoint: config.task_endpoint.clone(),
            result_endpoint: config.result_endpoint.clone(),
            tuning,
            ctx: ctx.clone(),
            stop: stop.clone(),
            handler: Arc::clone(&handler),
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
            next_beat = Instant::now() + config.heartbeat;
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
    task_endpoint: Endpoints,
    result_endpoint: Endpoints,
    tuning: Tuning,
    ctx: zmq::Context,
    stop: Shutdown,
    handler: Arc<H>,
}

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

    fn serve(
        &self,
        ready: &mpsc::Sender<Result<(), common::Error>>,
    ) -> Result<Counts, common::Error> {
        // PULL: tasks from the ventilator, one connection per thread.
        let tasks = sockets::socket(&self.ctx, zmq::PULL, "tasks", &self.tuning)?;
        let monitor = Monitor::handshakes(&self.ctx, &tasks)?;
        self.task_endpoint
            .attach(&tasks, Action::Connect, "tasks")?;
        // PUSH: results to the sink.
        let results = sockets::socket(&self.ctx, zmq::PUSH, "results", &self.tuning)?;
        self.result_endpoint
            .attach(&results, Action::Connect, "results")?;
        let mut counts = Counts::default();
        loop {
            if self.stop.is_triggered() {
                return Ok(counts);
            }
            match monitor.wait_handshake(Duration::from_millis(100))? {
                Recv::Message(()) => break,
                Recv::Timeout => {}
                Recv::Stopped => return Ok(counts),
            }
        }
        drop(monitor);
        let _ = ready.send(Ok(()));

        let mut frames = Vec::new();
        let mut body = Vec::with_capacity(256);
        let mut pack = Pack::default();
        let mut drops = Drops::default();
        while !self.stop.is_triggered() {
            // With results held back, only look for a task that is already
            // here; otherwise wait for one.
            let got = if pack.count > 0 {
                sockets::recv_frames_now(&tasks, &mut frames)?
            } else {
                sockets::recv_frames(&tasks, &mut frames, Duration::from_millis(100))?
            };
            match got {
                Recv::Message(()) => {}
                Recv::Timeout => {
                    if !pack.flush(&results, &self.stop)? {
                        break;
                    }
                    continue;
                }
                Recv::Stopped => break,
            }
            if self.classic {
                if self.classic_task(&frames, &mut drops) {
                    counts.tasks += 1;
                    // taskwork: the result is an empty message.
                    if !sockets::send_frames(&results, &[b""], || !self.stop.is_triggered())? {
                        break;
                    }
                }
                continue;
            }
            let header = match protocol::split(&frames) {
                Ok((h, _)) if h.kind == Kind::Task => h,
                Ok((h, _)) => {
                    drops.note(
                        "tasks",
                        "unexpected kind",
                        format!("{:?} on the task socket", h.kind),
                    );
                    continue;
                }
                Err(e) => {
                    drops.note("tasks", e.label(), &e);
                    continue;
                }
            };
            if pack.count > 0 && pack.batch != header.batch && !pack.flush(&results, &self.stop)? {
                break;
            }
            let (sent_us, started, finished, outcome) = self.run_task(header, &frames[1]);
            let duration = finished - started;
            counts.tasks += 1;
            if outcome.status != Status::Ok {
                counts.failed += 1;
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
