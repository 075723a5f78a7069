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
//! and bind). It runs tasks on `--threads N` threads. In push dispatch each
//! thread owns one PULL from the ventilator and one PUSH to the sink, so one
//! process with N threads is N peers of the PUSH, which deals round-robin
//! among them: the guide's multithreaded worker. In credit dispatch a
//! worker of several threads keeps one DEALER and one PUSH for all of them,
//! on a dispatcher thread, and its threads share a queue (see `shared.rs`):
//! a task and its result then cost no wake-up of the ventilator and the
//! sink of their own. The main thread subscribes to the sink's control PUB
//! and stops everything on END or KILL.
//!
//! **Credit dispatch** (`--dispatch credit`, the default): the DEALER tells
//! the ventilator's ROUTER how many tasks it can take (CREDIT),
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
//! the slow joiner), woken by the socket monitor's event rather than by
//! looking now and then; then the worker says HELLO to the sink, which tells
//! the ventilator, which starts the batch once `--workers N` said hello. No
//! one presses Enter.
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
//! # Task kinds
//!
//! A worker serves the kinds it declares: `--kinds exec,primes`, or its
//! handler's [`Handler::kinds`] (the flag wins). It says them in its HELLO
//! and HEARTBEAT, and in credit dispatch the ventilator deals it only
//! tasks of those kinds. One that declares nothing serves the built-in
//! kinds (`noop`, `sleep`, `primes`, `exec`, `data`), as every worker did
//! before kinds. A data task may name a kind of its own
//! (`{"kind":"data","type":"A","data":...}`); it reaches the handler
//! through [`Handler::run_named`], which by default is [`Handler::run`].
//! A task of a kind the worker did not declare (push dispatch cannot
//! choose) is answered `rejected`, never run. `examples/two_kinds.rs` runs
//! two kinds of workers, the second kind after the first.
//!
//! # Layout
//!
//! The worker has two kinds of thread, and each file is one of their
//! conversations or one rule they follow:
//!
//! - `lib.rs`: flags ([`Config`]), errors, the [`Report`], the [`Handler`]
//!   trait, and [`run_with`], which only routes: it starts the executor
//!   threads, runs the main thread's conversation, joins the threads and
//!   reports.
//! - `main_thread.rs`: the main thread's conversation: HELLO, HEARTBEAT and
//!   BYE to the sink (PUSH) and in credit dispatch to the ventilator
//!   (DEALER), the ventilator's heartbeats and the warning when it falls
//!   silent, END and KILL on the control SUB. When to say what is
//!   `Presence`, a pure type.
//! - `executor.rs`: one executor thread: taking tasks from its task socket
//!   (decoded once, through `common::protocol::Message`), running them
//!   through the handler (a panic becomes `panicked`, an unreadable body
//!   `rejected`), fitting results to `--max-msg-size`; and the `Gate` on
//!   which the threads wait for HELLO.
//! - `shared.rs`: credit dispatch with several threads: one connection for
//!   all, kept by a dispatcher thread, and the `Board` the threads share
//!   (tasks in, results out, a wake-up pipe).
//! - `handshake.rs`: how a thread waits for the ventilator: the ZMTP
//!   handshake seen through the socket monitor, and the warning when a peer
//!   never completes it (the other `--dispatch`).
//! - `credit.rs`: where credit dispatch lives on the worker's side: how many
//!   tasks a thread (or the dispatcher, for all) asks for (about a
//!   millisecond of work, one at a time
//!   for long tasks, the round-trip rule, the caps, batching, the idle
//!   reset), as arithmetic without sockets.
//! - `idle.rs`: how long no task has run, for `--idle-exit` (a pilot gives
//!   its allocation back); with `--serve`, END ends a batch and the main
//!   thread waits for the next.
//! - `held.rs`: what a push worker's threads hold (taken, not yet sent
//!   back), said in its HEARTBEAT and BYE so that a lost worker's tasks
//!   alone are charged against `--retries`.
//! - `pack.rs`: packing results into RESULTS (at most 64, never held more
//!   than a millisecond, never past the size limit, one batch a message).
//! - [`builtin`]: the built-in task kinds, `exec` with timeouts and process
//!   groups.
//! - `serving.rs`: the kinds a worker declared, kept at its door: a task
//!   of another kind is `rejected`, not run.
//! - `exec.rs`: running one `exec` command on the executor thread itself:
//!   spawned by `posix_spawn`, its pipes (stdout, stderr, and stdin when
//!   the task gives one) and a pidfd of the shell in one `poll`, no thread
//!   per command.
//! - `metrics.rs`: `--metrics`: tasks run by status and busy threads, told
//!   by each executor thread; served by [`common::metrics`] until
//!   [`run_with`] returns.
//! - `classic.rs`: the guide's wire format for `--classic`.
//!
//! The cut follows the threads rather than the sockets: the main thread's
//! three sockets (control SUB, status PUSH, heartbeat DEALER) serve one
//! conversation, being known alive and told to stop, in one poll loop, so
//! they share a file; the executor's two sockets serve one task at a time,
//! so they share another. What a loop decides is a small pure type, tested
//! without sockets, and the loop only applies its answers: the credit
//! arithmetic, the packing rules and the handshake account each have a file
//! of their own (each is a rule of its own, and the executor's loop is the
//! hot path, best read whole); `Presence`, when to say HELLO and
//! HEARTBEAT, sits beside the one loop that uses it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builtin;
mod classic;
mod credit;
mod exec;
mod executor;
mod handshake;
mod held;
mod idle;
mod main_thread;
mod metrics;
mod pack;
mod serving;
mod shared;

use std::sync::{Arc, mpsc};
use std::time::Duration;

use clap::Parser;
use common::protocol::{Dispatch, WorkerInfo};
use common::work::{Outcome, Work};
use common::{Action, Endpoints, Shutdown};

pub use builtin::Builtin;

use executor::{Counts, Executor, Gate, StopBell};
use idle::Activity;
use main_thread::MainThread;

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
    /// runs, when tasks are short (it asks for about a millisecond of work:
    /// 10 000 tasks of 0.1 µs, 10 of 100 µs); long tasks are asked for one
    /// at a time. A worker's threads share one connection: once they ask
    /// beyond `--hwm` tasks, they ask for no more than this together.
    #[arg(long, env = "ZPIPE_PREFETCH", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub prefetch: u32,
    /// Tasks run at once, each in its own thread (in credit dispatch the
    /// threads share one connection to the ventilator and one to the sink;
    /// in push dispatch each has its own).
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
    /// The task kinds this worker serves, comma-separated (`exec,primes`;
    /// a data task's own kind, `"type"`, needs a handler of your own). In
    /// credit dispatch the ventilator deals it only these; a task of
    /// another kind is answered `rejected`, never run. Without it: its
    /// handler's kinds, else the built-in ones (noop, sleep, primes, exec,
    /// data).
    #[arg(long, env = "ZPIPE_KINDS", value_name = "KIND,...")]
    pub kinds: Option<common::kinds::KindList>,
    /// High-water mark, message size limit, ZMTP heartbeats and security:
    /// the flags every role takes.
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    // --metrics ADDR (Prometheus); a doc comment here would replace its
    // help.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub metrics: common::metrics::MetricsArgs,
    /// Stay for batch after batch (a standing pool): END ends a batch, not
    /// the worker. It keeps its connections and heartbeats, so whichever
    /// ventilator and sink come next (restarted or new) hear of it and give
    /// it work; it exits on KILL, SIGTERM or Ctrl-C, or after --idle-exit.
    #[arg(long, env = "ZPIPE_SERVE")]
    pub serve: bool,
    /// Exit (status 0) once no task has run for this long, counted from the
    /// start and from the end of each task: a pilot in a cluster gives its
    /// allocation back when no batch comes.
    #[arg(long, env = "ZPIPE_IDLE_EXIT", value_parser = common::cli::duration)]
    pub idle_exit: Option<Duration>,
    /// Speak the guide's wire format (taskwork2): decimal milliseconds in,
    /// an empty message out, any control message means kill.
    #[arg(long, env = "ZPIPE_CLASSIC")]
    pub classic: bool,
}

/// The worker's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be made, bound or connected (a bad endpoint, a
    /// port in use, bad security settings).
    #[error(transparent)]
    Setup(#[from] common::Error),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// An executor thread died outside a task's handler.
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
    /// The batch (a fingerprint of its tasks, chosen by the ventilator).
    pub batch: u64,
    /// The task's index in the batch (0-based, input order).
    pub task: u64,
    /// 1 for the first delivery; more when the task was sent again (its
    /// worker was thought dead, or its result lost).
    pub attempt: u32,
    /// Raised when the worker must stop: long handlers should check it.
    pub stop: &'a Shutdown,
}

/// A task body. Implemented for any `Fn(&TaskInfo, &Work) -> Outcome`.
pub trait Handler: Send + Sync {
    /// Runs one task; a panic becomes a `panicked` result.
    fn run(&self, task: &TaskInfo<'_>, work: &Work) -> Outcome;

    /// The task kinds this handler serves (see [`common::kinds`]), said in
    /// the worker's HELLO so that the ventilator deals it only those;
    /// `None` (the default): the built-in kinds. The worker's `--kinds`
    /// wins over it.
    fn kinds(&self) -> Option<Vec<String>> {
        None
    }

    /// Runs a data task that names a kind of its own (`"type"`: `kind`).
    /// By default the same as [`Handler::run`]: a handler that serves one
    /// such kind need not look; one that serves several tells them apart
    /// here.
    fn run_named(&self, task: &TaskInfo<'_>, kind: &str, work: &Work) -> Outcome {
        let _ = kind;
        self.run(task, work)
    }
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
    /// No task for `--idle-exit`.
    Idle,
}

/// What the worker did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The worker's id (random per process; results name it).
    pub worker: u64,
    /// Tasks run, over all threads.
    pub tasks: u64,
    /// Of which did not succeed.
    pub failed: u64,
    /// Messages dropped (garbage, other kinds) on the task and control
    /// sockets.
    pub dropped: u64,
    /// Why it stopped.
    pub stopped_by: StopReason,
}

/// Runs a worker with the built-in task kinds until END, KILL or `shutdown`.
pub fn run(config: &Config, ctx: &zmq::Context, shutdown: &Shutdown) -> Result<Report, Error> {
    if let Some(list) = &config.kinds
        && let Some(own) = list
            .0
            .iter()
            .find(|k| !common::kinds::BUILTIN.contains(&k.as_str()))
    {
        return Err(Error::Usage(format!(
            "--kinds {own}: this worker runs the built-in kinds only ({}); a kind of your own needs a handler of your own (worker::run_with)",
            common::kinds::BUILTIN.join(", ")
        )));
    }
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
            "a worker with --threads > 1 connects its threads' sockets (one per thread in push dispatch), so its task and result endpoints cannot bind (@): put a streamer in front, or use --threads 1".into(),
        ));
    }
    if config.serve && config.classic {
        return Err(Error::Usage(
            "--serve waits for batch after batch, and the guide's wire format (--classic) has no batches: any control message means kill".into(),
        ));
    }
    if config.classic && config.kinds.is_some() {
        return Err(Error::Usage(
            "--classic speaks the guide's wire format, which has no task kinds: drop --kinds"
                .into(),
        ));
    }
    let kinds = match &config.kinds {
        Some(list) => Some(list.0.clone()),
        None => handler.kinds(),
    };
    if let Some(list) = &kinds {
        if list.is_empty() {
            return Err(Error::Usage("the handler serves no task kind".into()));
        }
        for k in list {
            common::kinds::check_name(k).map_err(Error::Usage)?;
        }
    }
    if config.classic && config.metrics.metrics.is_some() {
        return Err(Error::Usage(
            "--classic speaks the guide's wire format, which has no batches to measure: drop --metrics".into(),
        ));
    }
    // Served until this function returns.
    let exported = config
        .metrics
        .start("worker", |r| metrics::Metrics::register(r, config.threads))?;
    let metrics = exported.as_ref().map(|e| &e.metrics);
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
        // libzmq's -1 is no limit.
        max_msg_size: u64::try_from(tuning.max_msg_size).ok(),
        held: None,
        kinds: kinds.clone(),
        packs: true,
    };
    let name = info.name();
    // A PUSH cannot tell who holds what: the worker says it.
    let held = (dispatch == Dispatch::Push && !config.classic)
        .then(|| Arc::new(held::Held::new(config.threads as usize)));
    let mut main = MainThread::connect(ctx, config, &tuning, info, held.clone())?;
    if let Some(m) = metrics {
        main.count_drops_into(m.dropped.clone());
    }

    // The threads' own stop flag: raised on END/KILL as well as on signals.
    let stop = Shutdown::new();
    if let Some(list) = &kinds {
        log::info!("worker {name} serves task kinds {}", list.join(", "));
    }
    let handler = Arc::new(serving::Serving {
        inner: handler,
        kinds,
    });
    let bell =
        Arc::new(StopBell::new().map_err(|e| Error::Usage(format!("cannot make a pipe: {e}")))?);
    // Opened once HELLO is out: a thread asks for work only then, so the
    // sink knows this worker before its first result.
    let hello = Arc::new(Gate::default());
    let activity = Arc::new(Activity::new(std::time::Instant::now()));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), common::Error>>();
    // Credit dispatch with several threads: one connection for all, kept
    // by a dispatcher thread (see `shared.rs`); else a pair per thread.
    let board = if dispatch == Dispatch::Credit && config.threads > 1 && !config.classic {
        Some(Arc::new(shared::Board::new()?))
    } else {
        None
    };
    let executor = |index: usize| Executor {
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
        bell: Arc::clone(&bell),
        threads: config.threads,
        handler: Arc::clone(&handler),
        hello: Arc::clone(&hello),
        activity: Arc::clone(&activity),
        held: held.clone(),
        metrics: metrics.cloned(),
    };
    let mut threads = Vec::new();
    let mut start = |name: String, body: Box<dyn FnOnce() -> Counts + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(body)
            .map(|t| threads.push(t))
    };
    let mut spawned = Ok(());
    if let Some(board) = &board {
        let (exec, board_d, ready) = (executor(0), Arc::clone(board), ready_tx.clone());
        let n = config.threads;
        spawned = start(
            "worker-dispatch".into(),
            Box::new(move || exec.run_dispatcher(n, board_d, ready)),
        );
    }
    for index in 0..config.threads as usize {
        if spawned.is_err() {
            break;
        }
        let exec = executor(index);
        spawned = match &board {
            Some(board) => {
                let board = Arc::clone(board);
                start(
                    format!("worker-{index}"),
                    Box::new(move || exec.work_shared(&board)),
                )
            }
            None => {
                let ready = ready_tx.clone();
                start(format!("worker-{index}"), Box::new(move || exec.run(ready)))
            }
        };
    }
    let stop_all = || {
        stop.trigger();
        bell.ring();
        if let Some(board) = &board {
            board.stop();
        }
    };
    if let Err(e) = spawned {
        stop_all();
        join(threads);
        return Err(Error::Usage(format!("cannot start a thread: {e}")));
    }
    drop(ready_tx);

    let stopped = main.run(shutdown, &stop, &ready_rx, &hello, &activity);
    stop_all();
    let counts = join(threads);
    let stopped_by = stopped?;
    main.bye(stopped_by);
    let report = Report {
        worker: worker_id,
        tasks: counts.tasks,
        failed: counts.failed,
        dropped: main.dropped() + counts.dropped,
        stopped_by,
    };
    log::info!(
        "worker {name} stopped ({:?}): {} tasks, {} failed, {} messages dropped",
        report.stopped_by,
        report.tasks,
        report.failed,
        report.dropped
    );
    Ok(report)
}

/// Waits for the executor threads; sums their counts.
fn join(threads: Vec<std::thread::JoinHandle<Counts>>) -> Counts {
    let mut total = Counts::default();
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(c) => {
                total.tasks += c.tasks;
                total.failed += c.failed;
                total.dropped += c.dropped;
            }
            Err(_) => log::error!("worker thread {i} panicked outside a task"),
        }
    }
    total
}
