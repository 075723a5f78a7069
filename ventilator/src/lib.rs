//! zpipe's **ventilator**: the stable start of the parallel pipeline.
//!
//! ```text
//!  credit: ventilator ROUTER (binds tcp://*:5557) ◀─▶ DEALER worker thread ×N
//!  push:   ventilator PUSH   (binds tcp://*:5557) ──▶ PULL   worker thread ×N
//!          ventilator DEALER (connects tcp://localhost:5561) ◀─▶ ROUTER sink
//! ```
//!
//! The ventilator *binds* its task socket: workers come and go and find it.
//! It hands tasks out in one of two ways (`--dispatch`):
//!
//! - **credit** (the default): each worker thread's DEALER tells the ROUTER
//!   how many tasks it can take (CREDIT) and asks again as it finishes; the
//!   ventilator gives the next ready task to a thread with free credit, so
//!   the least busy worker gets it, and it records which thread holds which
//!   task. This is the guide's load-balancing broker with Paranoid Pirate
//!   heartbeats: a worker not heard from for `--liveness` heartbeats is
//!   dead, and the tasks it held go out again at once. Works through a
//!   `queue` device (ROUTER/DEALER).
//! - **push**: the guide's way. The PUSH deals round-robin to the workers
//!   connected when it sends, blind to how long tasks take and to who holds
//!   what; when the sink reports a worker lost, every unacknowledged task
//!   goes out again. Works through a `streamer` device (PULL/PUSH).
//!
//! A worker in the other mode cannot pair with our socket, and libzmq drops
//! it without a word: the ventilator watches for connections whose ZMTP
//! handshake never completes and says so.
//!
//! **Start.** The ventilator announces the batch to the sink (START) until
//! it answers, and starts once `--workers N` are ready (heard by the sink in
//! push mode, so a PUSH never deals to a slow joiner; heard by us in credit
//! mode). Then it says GO (the sink starts its clock) and deals.
//!
//! **No task lost.** The ventilator keeps every task (see [`ledger`]) until
//! the sink acknowledges its result (ACK, as ranges). A task whose worker
//! died, or whose lease (`--task-timeout`) ran out, goes out again with its
//! attempt raised; after `--retries` re-sends it is given up and the sink is
//! sent a failed result saying why. The batch id is a fingerprint of the
//! tasks, so a restarted sink (or a restarted ventilator, `--resume`)
//! recognises the batch; whenever the sink is new, it tells us everything it
//! holds and we send the rest.
//!
//! **High-water mark.** A thread's credit never exceeds `--hwm`; a pipe that
//! is full all the same (threads behind one queue device share one) or a
//! full PUSH is retried when it can take more, while acks and heartbeats keep
//! flowing.
//!
//! **Shutdown.** The [`Shutdown`] flag (SIGINT, SIGTERM) stops the loop
//! within 100 ms; sockets close with linger 0, since nothing queued matters
//! once we stop.
//!
//! # Layout
//!
//! - `lib.rs`: flags ([`Config`]), sockets ([`Ventilator`]) and the batch
//!   loop.
//! - [`input`]: generated batches and input files.
//! - [`plan`]: dependencies and stages, checked before anything is sent.
//! - [`ledger`]: the book of tasks: leases, re-sends, acks.
//! - `classic.rs`: the guide's taskvent for `--classic`.
#![forbid(unsafe_code)]

mod classic;
pub mod input;
pub mod ledger;
pub mod plan;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use common::drops::Drops;
use common::protocol::{
    self, Acks, BatchDone, BatchInfo, Dispatch, Header, Kind, SinkStatus, WorkerInfo,
};
use common::sockets::{self, HandshakeWatch, Recv};
use common::work::Work;
use common::{Action, Endpoints, Shutdown};
use serde::Serialize;

pub use ledger::Order;
use ledger::{Ledger, NOBODY};
pub use plan::Plan;

/// The ventilator's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ventilator",
    version,
    about = "zpipe ventilator: waits for workers, deals a batch of tasks (by credit, or PUSH round-robin), re-sends what is lost, and waits for the sink's DONE",
    after_help = "Input lines: blank and # lines are skipped; {\"kind\":...} is a JSON task (sleep, primes, exec, noop, data) which may also carry \"id\", \"after\": [ids], \"stage\": N and \"cost\": N; any other line is a plain task (--plain). Without --input, --tasks tasks are generated."
)]
pub struct Config {
    /// Where workers (or a streamer) take tasks. `@` binds, `>` connects, bare
    /// binds; comma-separated list.
    #[arg(long, env = "ZPIPE_TASK_ENDPOINT", default_value = "tcp://*:5557")]
    pub task_endpoint: Endpoints,
    /// The sink's feedback channel (ROUTER): batch start, ready workers, DONE.
    #[arg(
        long,
        env = "ZPIPE_FEEDBACK_ENDPOINT",
        default_value = "tcp://localhost:5561"
    )]
    pub feedback_endpoint: Endpoints,
    /// Classic mode only: the sink's result socket, for the "0" that starts
    /// the batch.
    #[arg(
        long,
        env = "ZPIPE_RESULT_ENDPOINT",
        default_value = "tcp://localhost:5558"
    )]
    pub result_endpoint: Endpoints,
    /// How tasks are handed out: `credit` (workers ask for work; ROUTER,
    /// through a queue device) or `push` (the guide's round-robin; PUSH,
    /// through a streamer). Workers must use the same.
    #[arg(long, env = "ZPIPE_DISPATCH", value_enum, default_value = "credit")]
    pub dispatch: Dispatch,
    /// The order ready tasks go out in: `input`, or `cost` (the costliest
    /// first, by the tasks' cost hints: longest-processing-time first).
    #[arg(long, env = "ZPIPE_ORDER", value_enum, default_value = "input")]
    pub order: Order,
    /// A task without a result this long after it was sent goes out again.
    /// Set it above your longest task.
    #[arg(long, env = "ZPIPE_TASK_TIMEOUT", default_value = "15m", value_parser = common::cli::duration)]
    pub task_timeout: Duration,
    /// How many times a lost task is sent again before it is given up and
    /// reported failed.
    #[arg(long, env = "ZPIPE_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// Credit dispatch: how often a worker is expected to say HEARTBEAT (the
    /// worker's own `--heartbeat` counts if longer).
    #[arg(long, env = "ZPIPE_HEARTBEAT", default_value = "1s", value_parser = common::cli::duration)]
    pub heartbeat: Duration,
    /// Credit dispatch: a worker silent for this many heartbeats is dead and
    /// its tasks go to others.
    #[arg(long, env = "ZPIPE_LIVENESS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub liveness: u32,
    /// Push dispatch: the most tasks out (sent, not yet acknowledged) at
    /// once. A PUSH deals everything it is given to the workers connected
    /// now; a window lets workers that join later get a share.
    #[arg(long, env = "ZPIPE_WINDOW", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub window: u64,
    /// Write the ventilator's report (sent, re-sent, given up, workers lost,
    /// messages dropped) as JSON to this file.
    #[arg(long, env = "ZPIPE_VENTILATOR_REPORT")]
    pub report: Option<PathBuf>,
    /// Continue a batch the sink already holds results of (after the
    /// ventilator or the sink was restarted): only the missing tasks are sent.
    #[arg(long, env = "ZPIPE_RESUME")]
    pub resume: bool,
    /// Start once this many workers are ready.
    #[arg(long, env = "ZPIPE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// How long to wait for the sink and the workers before giving up (or, if
    /// some workers are ready, starting with them).
    #[arg(long, env = "ZPIPE_WAIT", default_value = "30s", value_parser = common::cli::duration)]
    pub wait: Duration,
    /// Read tasks from this file, one per line; `-` reads stdin.
    #[arg(long, short, env = "ZPIPE_INPUT")]
    pub input: Option<PathBuf>,
    /// What a plain (non-JSON) input line is.
    #[arg(long, env = "ZPIPE_PLAIN", value_enum, default_value = "exec")]
    pub plain: input::Plain,
    /// Without --input: how many tasks to generate.
    #[arg(long, env = "ZPIPE_TASKS", default_value_t = 100)]
    pub tasks: u64,
    /// Without --input: the kind of generated tasks.
    #[arg(long, env = "ZPIPE_KIND", value_enum, default_value = "sleep")]
    pub kind: input::Kind,
    /// Without --input: each task's workload, `N` or `random:A-B` (ms for
    /// sleep, range width for primes).
    #[arg(long, env = "ZPIPE_WORKLOAD", default_value = "random:1-100")]
    pub workload: input::Workload,
    /// Seed for random workloads (random if not given; logged either way).
    #[arg(long, env = "ZPIPE_SEED")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    /// Speak the guide's wire format (taskvent): "0" to the sink, then each
    /// workload in decimal milliseconds. Sleep tasks only.
    #[arg(long, env = "ZPIPE_CLASSIC")]
    pub classic: bool,
    /// Classic mode only: the ventilator cannot hear workers, so it starts
    /// after this delay (or when Enter is pressed, if stdin is a terminal).
    #[arg(long, env = "ZPIPE_START_AFTER", default_value = "1s", value_parser = common::cli::duration)]
    pub start_after: Duration,
    /// Classic mode only: how long queued tasks may take to leave after the
    /// last send.
    #[arg(long, env = "ZPIPE_LINGER", default_value = "10s", value_parser = common::cli::duration)]
    pub linger: Duration,
}

impl Config {
    /// The largest task body that fits a message (workers refuse larger ones
    /// when their `--max-msg-size` is the same as ours).
    fn max_task_bytes(&self) -> usize {
        usize::try_from(self.sockets.max_msg_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(64)
    }

    /// The batch this configuration describes: the input, or generated
    /// tasks; its dependencies are checked.
    pub fn load_tasks(&self) -> Result<Plan, Error> {
        let plan = self.read_tasks()?;
        plan.check()?;
        Ok(plan)
    }

    fn read_tasks(&self) -> Result<Plan, Error> {
        match &self.input {
            Some(path) if path.as_os_str() == "-" => Ok(input::parse(
                std::io::stdin().lock(),
                self.plain,
                self.max_task_bytes(),
            )?),
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    Error::Usage(format!("cannot open the input {}: {e}", path.display()))
                })?;
                Ok(input::parse(
                    std::io::BufReader::new(file),
                    self.plain,
                    self.max_task_bytes(),
                )?)
            }
            None => {
                if self.tasks == 0 {
                    return Err(Error::Usage("--tasks 0: nothing to do".into()));
                }
                let seed = self.seed.unwrap_or_else(rand::random);
                log::info!(
                    "generating {} {:?} tasks, workload {:?}, seed {seed}",
                    self.tasks,
                    self.kind,
                    self.workload
                );
                Ok(Plan::from(input::generate(
                    self.tasks,
                    self.kind,
                    self.workload,
                    seed,
                )))
            }
        }
    }
}

/// The ventilator's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Setup(#[from] common::Error),
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("{0}")]
    Usage(String),
    #[error(
        "no sink answered on {endpoint} within {waited:?}: start the sink, or point --feedback-endpoint at it"
    )]
    NoSink { endpoint: String, waited: Duration },
    #[error(
        "the sink is collecting another batch ({0:016x}); wait for it to finish or use another sink"
    )]
    SinkBusy(u64),
    #[error("no worker became ready within {waited:?}: are workers connected to {endpoint}?")]
    NoWorkers { endpoint: String, waited: Duration },
    #[error("the sink refused the batch: {0}")]
    Refused(String),
    #[error(
        "the sink already holds {held} results of this batch ({batch:016x}, the same tasks): pass --resume to send only the {missing} missing tasks, or give the sink a new output"
    )]
    Resume { batch: u64, held: u64, missing: u64 },
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::Input(_) | Error::Plan(_) | Error::Usage(_) | Error::Resume { .. } => true,
            _ => false,
        }
    }
}

/// What the ventilator did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub batch: String,
    pub dispatch: Dispatch,
    pub tasks: u64,
    /// Task messages sent, re-sends included.
    pub sent: u64,
    /// Tasks sent again (worker dead, lease out, sink restarted).
    pub resent: u64,
    /// Tasks given up after their last attempt, or failed by a failed
    /// dependency; the sink was sent a failed result for each.
    pub given_up: u64,
    /// Workers declared dead during the batch.
    pub workers_lost: u64,
    /// Messages dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Workers ready when the batch started.
    pub workers: usize,
    /// Time spent waiting for the sink and workers.
    pub wait_ms: f64,
    /// Time from the first task sent to the last.
    pub send_ms: f64,
    /// The sink's DONE, when it came.
    pub done: Option<BatchDone>,
}

/// A ventilator whose sockets are ready: [`Ventilator::bind`] fails fast on a
/// bad endpoint or a port in use, before any work; [`Ventilator::run`] sends a
/// batch.
pub struct Ventilator {
    config: Config,
    /// ROUTER (credit: CREDIT and heartbeats in, TASK/TASKS out) or PUSH
    /// (push and classic: tasks out, round-robin).
    tasks: zmq::Socket,
    /// DEALER: START and GO to the sink; STATUS, ACK and DONE back. (Classic
    /// mode: a PUSH to the sink's result socket.)
    feedback: zmq::Socket,
    /// Peers that connect to the task socket but never complete the
    /// handshake (a worker in the other dispatch mode).
    watch: Option<HandshakeWatch>,
    bound: Vec<String>,
}

impl Ventilator {
    /// Makes the sockets, binds the task endpoint and connects to the sink.
    pub fn bind(config: &Config, ctx: &zmq::Context) -> Result<Ventilator, Error> {
        let mut config = config.clone();
        let mut tuning = config.sockets.tuning()?;
        if config.classic {
            // The guide's taskvent has only a PUSH.
            config.dispatch = Dispatch::Push;
            tuning.linger = config.linger;
            tuning.heartbeat = None;
        }
        let credit = config.dispatch == Dispatch::Credit;
        let tasks = if credit {
            let router = sockets::socket(ctx, zmq::ROUTER, "tasks", &tuning)?;
            // An unroutable task is an error we see (the worker is gone), not
            // a silent drop.
            router
                .set_router_mandatory(true)
                .map_err(|e| common::Error::zmq("setting up the tasks socket", e))?;
            router
        } else {
            sockets::socket(ctx, zmq::PUSH, "tasks", &tuning)?
        };
        let watch = if config.classic {
            None
        } else {
            Some(HandshakeWatch::new(ctx, &tasks, HANDSHAKE_GRACE)?)
        };
        let bound = config.task_endpoint.attach_secured(
            &tasks,
            Action::Bind,
            "tasks",
            tuning.security.as_deref(),
        )?;
        log::info!(
            "ventilator listening: tasks {bound:?} ({} dispatch)",
            config.dispatch.as_str()
        );
        let feedback = if config.classic {
            let sink = sockets::socket(ctx, zmq::PUSH, "sink", &tuning)?;
            config.result_endpoint.attach_secured(
                &sink,
                Action::Connect,
                "sink",
                tuning.security.as_deref(),
            )?;
            sink
        } else {
            let feedback = sockets::socket(ctx, zmq::DEALER, "feedback", &tuning)?;
            // A routing id of our own, kept across reconnections, so that the
            // sink's answers (ACK, DONE) find us after a broken link.
            let id: [u8; 8] = rand::random();
            feedback
                .set_identity(&[b"vent-".as_slice(), &id].concat())
                .map_err(|e| common::Error::zmq("setting up the feedback socket", e))?;
            config.feedback_endpoint.attach_secured(
                &feedback,
                Action::Connect,
                "feedback",
                tuning.security.as_deref(),
            )?;
            feedback
        };
        Ok(Ventilator {
            config,
            tasks,
            feedback,
            watch,
            bound,
        })
    }

    /// The task endpoints as bound (a `tcp://127.0.0.1:*` comes back with its
    /// real port).
    pub fn bound(&self) -> &[String] {
        &self.bound
    }

    /// Runs one batch of `tasks` without dependencies (see
    /// [`Ventilator::run_plan`]).
    pub fn run(self, tasks: &[Work], shutdown: &Shutdown) -> Result<Report, Error> {
        self.run_plan(&Plan::from(tasks.to_vec()), shutdown)
    }

    /// Runs one batch: waits for the sink and the workers, deals every task,
    /// sends again what is lost, and waits for the sink's DONE (or
    /// `shutdown`).
    pub fn run_plan(mut self, plan: &Plan, shutdown: &Shutdown) -> Result<Report, Error> {
        if plan.is_empty() {
            return Err(Error::Usage("the batch is empty".into()));
        }
        if self.config.classic {
            if plan.has_constraints() {
                return Err(Error::Usage(
                    "classic mode speaks the guide's format, which has no dependencies or stages"
                        .into(),
                ));
            }
            return classic::run(
                &self.config,
                &plan.works,
                &self.tasks,
                &self.feedback,
                shutdown,
            );
        }
        plan.check()?;
        let watch = self.watch.take();
        let mut batch = Batch::new(&self.config, plan, &self.tasks, &self.feedback, watch);
        let report = batch.run(shutdown);
        if let Some(w) = batch.watch.take() {
            w.stop(&self.tasks);
        }
        // Whatever is still queued (START for a sink that never came, tasks
        // after a stop) is moot now: close at once; but the BYE that tells
        // the sink its DONE arrived gets a moment to leave.
        let _ = self.tasks.set_linger(0);
        let done = report.as_ref().is_ok_and(|r| r.done.is_some());
        let _ = self.feedback.set_linger(if done { 500 } else { 0 });
        report
    }
}

/// Binds and runs one batch (see [`Ventilator`]).
pub fn run(
    config: &Config,
    tasks: &[Work],
    ctx: &zmq::Context,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    Ventilator::bind(config, ctx)?.run(tasks, shutdown)
}

/// How long a peer may stay connected without completing the handshake
/// before we say it cannot be a worker of our dispatch mode.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(3);
/// How long the ventilator waits for DONE once every result is
/// acknowledged.
const DONE_GRACE: Duration = Duration::from_secs(5);
/// Most tasks in one TASKS message.
const MAX_PACK: u32 = 64;

/// One worker thread's DEALER, as the ROUTER knows it.
struct Peer {
    route: Vec<Vec<u8>>,
    worker: u64,
    credit: u32,
    /// In `Batch::eligible`.
    queued: bool,
}

/// What the ventilator knows of a worker process (credit dispatch).
struct Seen {
    name: String,
    /// The route of its main thread's DEALER, for heartbeats back.
    route: Option<Vec<Vec<u8>>>,
    last: Instant,
    heartbeat: Duration,
    dead: bool,
    /// Said HELLO or HEARTBEAT: counts as ready.
    hello: bool,
    peers: Vec<u32>,
}

struct Batch<'a> {
    config: &'a Config,
    plan: &'a Plan,
    ledger: Ledger<'a>,
    info: BatchInfo,
    hex: String,
    tasks: &'a zmq::Socket,
    feedback: &'a zmq::Socket,
    watch: Option<HandshakeWatch>,
    credit: bool,
    report: Report,
    drops: Drops,
    peers: Vec<Peer>,
    /// Peers by (worker, thread).
    peer_index: HashMap<(u64, u16), u32>,
    eligible: VecDeque<u32>,
    workers: HashMap<u64, Seen>,
    /// The sink as last heard: its instance, and the workers it had ready.
    sink_instance: Option<u64>,
    sink_ready: usize,
    /// The current sink knows the batch.
    announced: bool,
    /// ... and has told us everything it holds.
    synced: bool,
    snapshot: Acks,
    go_sent: bool,
    /// The workers were ready once: dealing may begin.
    started: bool,
    /// Push dispatch: a task the full PUSH did not take.
    pending: Option<u64>,
    body: Vec<u8>,
    frames: Vec<zmq::Message>,
    clock_us: u64,
    /// Sends left before the clock is read again.
    clock_left: u32,
    /// Credit dispatch: the last round stopped at a full pipe.
    blocked: bool,
    /// Since when the sink has said it holds more than we know of.
    behind_since: Option<Instant>,
    /// When every task was acknowledged, to stop waiting for a DONE that
    /// was lost.
    all_acked: Option<Instant>,
}

impl<'a> Batch<'a> {
    fn new(
        config: &'a Config,
        plan: &'a Plan,
        tasks: &'a zmq::Socket,
        feedback: &'a zmq::Socket,
        watch: Option<HandshakeWatch>,
    ) -> Self {
        let batch = plan.fingerprint();
        let hex = format!("{batch:016x}");
        let info = BatchInfo {
            batch,
            tasks: plan.len() as u64,
            expected_ms: plan.works.iter().filter_map(Work::expected_ms).sum(),
            dispatch: config.dispatch,
            resync: false,
        };
        Batch {
            config,
            plan,
            ledger: Ledger::new(plan, config.order, config.task_timeout, config.retries),
            report: Report {
                batch: hex.clone(),
                dispatch: config.dispatch,
                tasks: info.tasks,
                sent: 0,
                resent: 0,
                given_up: 0,
                workers_lost: 0,
                dropped: BTreeMap::new(),
                workers: 0,
                wait_ms: 0.0,
                send_ms: 0.0,
                done: None,
            },
            info,
            hex,
            tasks,
            feedback,
            watch,
            credit: config.dispatch == Dispatch::Credit,
            drops: Drops::default(),
            peers: Vec::new(),
            peer_index: HashMap::new(),
            eligible: VecDeque::new(),
            workers: HashMap::new(),
            sink_instance: None,
            sink_ready: 0,
            announced: false,
            synced: false,
            snapshot: Acks::default(),
            go_sent: false,
            started: false,
            pending: None,
            body: Vec::with_capacity(256),
            frames: Vec::new(),
            clock_us: 0,
            clock_left: 0,
            blocked: false,
            behind_since: None,
            all_acked: None,
        }
    }

    fn run(&mut self, shutdown: &Shutdown) -> Result<Report, Error> {
        log::info!(
            "batch {}: {} tasks on {} ({} dispatch); waiting for {} worker(s)",
            self.hex,
            self.info.tasks,
            self.config.task_endpoint,
            self.config.dispatch.as_str(),
            self.config.workers
        );
        let began = Instant::now();
        let mut send_began = None;
        let mut next_start = Instant::now();
        let mut next_tick = Instant::now();
        let mut next_log = Instant::now() + Duration::from_secs(5);
        while !shutdown.is_triggered() && self.report.done.is_none() {
            let now = Instant::now();
            if now >= next_start {
                // DEALER queues this until the connection is up; repeated
                // (every 500 ms until the sink answers, then every second)
                // so that a sink that restarted learns of the batch again.
                let mut info = self.info.clone();
                // Behind the sink's count for a while: acknowledgements were
                // lost (a broken link); ask it for all it holds.
                if self
                    .behind_since
                    .is_some_and(|t| now - t >= Duration::from_secs(2))
                {
                    log::info!(
                        "batch {}: asking the sink for everything it holds",
                        self.hex
                    );
                    info.resync = true;
                    self.behind_since = None;
                }
                let start = protocol::json_frames(Header::bare(Kind::Start, info.batch), &info);
                let _ = self.feedback.send_multipart(start.iter(), zmq::DONTWAIT);
                next_start = now
                    + if self.announced {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_millis(500)
                    };
            }
            if !self.started && self.announced && self.synced {
                let ready = self.ready_workers();
                let waited = began.elapsed();
                if ready >= self.config.workers || (waited >= self.config.wait && ready > 0) {
                    if ready < self.config.workers {
                        log::warn!(
                            "only {ready} of {} workers ready after {:?}: starting with them",
                            self.config.workers,
                            self.config.wait
                        );
                    } else {
                        log::info!(
                            "{ready} worker(s) ready after {:.0} ms: starting",
                            waited.as_secs_f64() * 1000.0
                        );
                    }
                    self.started = true;
                    self.report.workers = ready;
                    self.report.wait_ms = waited.as_secs_f64() * 1000.0;
                }
            }
            if !self.started && began.elapsed() >= self.config.wait {
                return Err(if self.sink_instance.is_none() {
                    Error::NoSink {
                        endpoint: self.config.feedback_endpoint.to_string(),
                        waited: self.config.wait,
                    }
                } else {
                    Error::NoWorkers {
                        endpoint: self.config.task_endpoint.to_string(),
                        waited: self.config.wait,
                    }
                });
            }
            if self.started && self.synced && !self.go_sent {
                // GO first: the sink starts its clock as the first task leaves.
                sockets::send_frames(
                    self.feedback,
                    &[Header::bare(Kind::Go, self.info.batch).encode()],
                    || !shutdown.is_triggered(),
                )?;
                self.go_sent = true;
                send_began.get_or_insert_with(Instant::now);
            }
            self.send_owed();
            if self.started && self.synced {
                if self.credit {
                    self.deal_credit()?;
                } else {
                    self.deal_push()?;
                }
            }
            if now >= next_tick {
                next_tick = now + Duration::from_millis(100);
                self.tick(now)?;
                if self.started && self.ledger.done() == self.info.tasks {
                    let since = *self.all_acked.get_or_insert(now);
                    if now - since >= DONE_GRACE {
                        // Every result is acknowledged, so the batch is
                        // complete; the sink's DONE was lost (or the sink
                        // has gone, its work done).
                        log::warn!(
                            "batch {}: every result is acknowledged but no DONE came within {DONE_GRACE:?}: finishing",
                            self.hex
                        );
                        let (ok, failed) = self.ledger.outcome_counts();
                        self.report.done = Some(BatchDone {
                            batch: self.info.batch,
                            ok,
                            failed,
                            elapsed_ms: send_began
                                .map_or(0.0, |t: Instant| t.elapsed().as_secs_f64() * 1000.0),
                        });
                    }
                } else {
                    self.all_acked = None;
                }
            }
            if now >= next_log {
                next_log = now + Duration::from_secs(5);
                self.log_progress(began);
            }
            self.wait_and_read()?;
        }
        if let Some(t) = send_began {
            self.report.send_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
        self.report.resent = self.ledger.resent;
        self.report.given_up = self.ledger.given_up;
        self.report.dropped = self
            .drops
            .by_reason()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        Ok(self.report.clone())
    }

    fn ready_workers(&self) -> usize {
        if self.credit {
            self.workers.values().filter(|w| w.hello && !w.dead).count()
        } else {
            self.sink_ready
        }
    }

    fn log_progress(&self, began: Instant) {
        if !self.announced {
            log::info!("waiting for the sink at {}", self.config.feedback_endpoint);
        } else if !self.started {
            log::info!(
                "waiting for workers: {} of {} ready",
                self.ready_workers(),
                self.config.workers
            );
        } else {
            log::info!(
                "batch {}: {} of {} acknowledged, {} out, {} re-sent, after {:.1?}",
                self.hex,
                self.ledger.done(),
                self.info.tasks,
                self.ledger.out(),
                self.ledger.resent,
                began.elapsed()
            );
        }
    }

    /// Polls the sockets for up to 20 ms (less when there is work to deal),
    /// then reads everything that arrived.
    fn wait_and_read(&mut self) -> Result<(), Error> {
        let can_deal = self.started
            && self.synced
            && self.ledger.has_ready()
            && (self.credit || self.ledger.out() < self.config.window);
        let timeout = if can_deal && self.credit && !self.eligible.is_empty() && !self.blocked {
            0
        } else {
            20
        };
        {
            let mut items = [
                self.feedback.as_poll_item(zmq::POLLIN),
                self.tasks.as_poll_item(if self.credit && self.blocked {
                    zmq::POLLIN | zmq::POLLOUT
                } else if self.credit {
                    zmq::POLLIN
                } else if can_deal || self.pending.is_some() {
                    zmq::POLLOUT
                } else {
                    zmq::PollEvents::empty()
                }),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) | Err(zmq::Error::ETERM) => {}
                Err(e) => return Err(common::Error::zmq("polling", e).into()),
            }
        }
        for _ in 0..1000 {
            match sockets::recv_frames_now(self.feedback, &mut self.frames)? {
                Recv::Message(()) => self.on_feedback()?,
                _ => break,
            }
        }
        if self.credit {
            for _ in 0..10_000 {
                match sockets::recv_frames_now(self.tasks, &mut self.frames)? {
                    Recv::Message(()) => self.on_worker_message(),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Tells the sink of the tasks given up (GIVEN_UP), each with why.
    fn send_owed(&mut self) {
        if !self.announced || self.ledger.owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.ledger.owed);
        let mut left = owed.into_iter();
        while let Some((task, attempt, reason)) = left.next() {
            let verdict = protocol::Message::GivenUp {
                batch: self.info.batch,
                task,
                attempt,
                reason: reason.clone(),
            };
            if let Err(zmq::Error::EAGAIN | zmq::Error::EINTR) = self
                .feedback
                .send_multipart(verdict.frames(), zmq::DONTWAIT)
            {
                // The sink is slow or away: the rest go next time round.
                self.ledger.owed.push((task, attempt, reason));
                self.ledger.owed.extend(left);
                return;
            }
        }
    }

    fn next_clock(&mut self) -> u64 {
        // Reading the clock for every task was a visible cost at millions of
        // tasks per second; 32 tasks sent in one go leave within
        // microseconds of each other. Each dealing round reads it afresh.
        if self.clock_left == 0 {
            self.clock_us = common::now_micros();
            self.clock_left = 32;
        }
        self.clock_left -= 1;
        self.clock_us
    }

    fn deal_push(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        self.clock_left = 0;
        for _ in 0..10_000 {
            if self.pending.is_none() && self.ledger.out() >= self.config.window {
                return Ok(());
            }
            let Some(t) = self
                .pending
                .take()
                .filter(|&t| self.ledger.still_taken(t))
                .or_else(|| self.ledger.next_task())
            else {
                return Ok(());
            };
            let head = Header {
                kind: Kind::Task,
                attempt: self.ledger.attempt(t),
                batch: self.info.batch,
                task: t,
            }
            .encode();
            let clock = self.next_clock();
            self.body.clear();
            protocol::encode_task(&mut self.body, clock, &self.plan.works[t as usize]);
            match self
                .tasks
                .send_multipart([&head[..], &self.body[..]], zmq::DONTWAIT)
            {
                Ok(()) => {
                    self.ledger.sent(t, NOBODY, now);
                    self.report.sent += 1;
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                    self.pending = Some(t);
                    return Ok(());
                }
                Err(zmq::Error::ETERM) => return Ok(()),
                Err(e) => return Err(common::Error::zmq("sending a task", e).into()),
            }
        }
        Ok(())
    }

    fn deal_credit(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        self.clock_left = 0;
        self.blocked = false;
        let mut tasks = Vec::with_capacity(MAX_PACK as usize);
        let mut records = Vec::new();
        let mut rounds = 0;
        while let Some(p) = self.eligible.pop_front() {
            rounds += 1;
            if rounds > 10_000 {
                self.eligible.push_front(p);
                break;
            }
            let peer = &mut self.peers[p as usize];
            peer.queued = false;
            if peer.credit == 0 || self.workers.get(&peer.worker).is_some_and(|w| w.dead) {
                continue;
            }
            let want = peer.credit.min(MAX_PACK);
            tasks.clear();
            while tasks.len() < want as usize {
                match self.ledger.next_task() {
                    Some(t) => tasks.push(t),
                    None => break,
                }
            }
            if tasks.is_empty() {
                self.peers[p as usize].queued = true;
                self.eligible.push_front(p);
                break;
            }
            let clock = self.next_clock();
            let head;
            self.body.clear();
            if let [t] = tasks[..] {
                head = Header {
                    kind: Kind::Task,
                    attempt: self.ledger.attempt(t),
                    batch: self.info.batch,
                    task: t,
                };
                protocol::encode_task(&mut self.body, clock, &self.plan.works[t as usize]);
            } else {
                head = Header {
                    kind: Kind::Tasks,
                    attempt: 0,
                    batch: self.info.batch,
                    task: tasks.len() as u64,
                };
                for &t in &tasks {
                    records.clear();
                    protocol::encode_task(&mut records, clock, &self.plan.works[t as usize]);
                    protocol::encode_record(&mut self.body, t, self.ledger.attempt(t), &records);
                }
            }
            let head = head.encode();
            let peer = &self.peers[p as usize];
            let frames =
                peer.route
                    .iter()
                    .map(Vec::as_slice)
                    .chain([&b""[..], &head[..], &self.body[..]]);
            match self.tasks.send_multipart(frames, zmq::DONTWAIT) {
                Ok(()) => {
                    for &t in &tasks {
                        self.ledger.sent(t, p, now);
                    }
                    self.report.sent += tasks.len() as u64;
                    let peer = &mut self.peers[p as usize];
                    peer.credit -= tasks.len() as u32;
                    if peer.credit > 0 {
                        peer.queued = true;
                        self.eligible.push_back(p);
                    }
                }
                Err(e) => {
                    for &t in tasks.iter().rev() {
                        self.ledger.unsend(t);
                    }
                    match e {
                        // The thread is gone: forget its credit; it asks
                        // again if it comes back.
                        zmq::Error::EHOSTUNREACH => self.peers[p as usize].credit = 0,
                        zmq::Error::EAGAIN | zmq::Error::EINTR => {
                            // A full pipe (several threads behind one queue
                            // device share one): wait until it can take more.
                            self.peers[p as usize].queued = true;
                            self.eligible.push_back(p);
                            self.blocked = true;
                            break;
                        }
                        zmq::Error::ETERM => break,
                        e => return Err(common::Error::zmq("sending a task", e).into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Every 100 ms: leases, dead workers, handshakes that never came.
    fn tick(&mut self, now: Instant) -> Result<(), Error> {
        self.ledger.expire(now);
        if self.credit {
            let liveness = self.config.liveness;
            let dead: Vec<u64> = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    !w.dead
                        && now.saturating_duration_since(w.last)
                            > w.heartbeat.max(self.config.heartbeat) * liveness
                })
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                let w = &self.workers[&id];
                let why = format!(
                    "worker {} was silent for {:.1?} ({liveness} heartbeats)",
                    w.name,
                    now.saturating_duration_since(w.last)
                );
                self.worker_dead(id, &why);
            }
        }
        if let Some(watch) = &mut self.watch {
            let stalled = watch.stalled()?;
            if stalled > 0 {
                let (other, flag) = match self.config.dispatch {
                    Dispatch::Credit => (
                        "a PULL (a worker with --dispatch push, or a streamer)",
                        "credit",
                    ),
                    Dispatch::Push => (
                        "a DEALER (a worker with --dispatch credit, or a queue device)",
                        "push",
                    ),
                };
                log::error!(
                    "{stalled} peer(s) connected to the task endpoint {} but never completed the ZMTP handshake: probably {other}, which cannot pair with this ventilator's {}. Start workers and ventilator with the same --dispatch (this one deals by {flag})",
                    self.config.task_endpoint,
                    if self.credit { "ROUTER" } else { "PUSH" },
                );
            }
        }
        Ok(())
    }

    /// Declares a worker dead: the tasks it held go out again.
    fn worker_dead(&mut self, id: u64, why: &str) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.dead {
            return;
        }
        w.dead = true;
        self.report.workers_lost += 1;
        let peers = w.peers.clone();
        let mut held = Vec::new();
        for p in peers {
            self.peers[p as usize].credit = 0;
            held.extend(self.ledger.held_by(Some(p)));
        }
        log::warn!(
            "{why}: declared dead; its {} task(s) go out again",
            held.len()
        );
        for t in held {
            self.ledger.requeue(t, why, true);
        }
    }

    /// A message on the ROUTER from a worker (credit dispatch).
    fn on_worker_message(&mut self) {
        let frames = std::mem::take(&mut self.frames);
        self.worker_message(&frames);
        self.frames = frames;
    }

    fn worker_message(&mut self, frames: &[zmq::Message]) {
        let Some((route, rest)) = protocol::split_envelope(frames) else {
            self.drops.note(
                "tasks",
                "no envelope",
                "a message without an empty delimiter frame",
            );
            return;
        };
        if route.is_empty() {
            self.drops
                .note("tasks", "no envelope", "a message without a route");
            return;
        }
        let (header, payload) = match protocol::split(rest) {
            Ok(x) => x,
            Err(e) => {
                self.drops.note("tasks", e.label(), e);
                return;
            }
        };
        let now = Instant::now();
        let route: Vec<Vec<u8>> = route.iter().map(|f| f.to_vec()).collect();
        match header.kind {
            Kind::Credit => {
                let (worker, thread) = match protocol::decode_credit(payload) {
                    Ok(x) => x,
                    Err(e) => {
                        self.drops.note("tasks", e.label(), e);
                        return;
                    }
                };
                let cap = u32::try_from(self.config.sockets.hwm.max(1)).unwrap_or(1000);
                let n = u32::try_from(header.task).unwrap_or(u32::MAX).min(cap);
                // A thread is known by its worker and index: when it comes
                // back on a new route (it reconnected, so the ROUTER dropped
                // whatever was queued for the old one), what it held goes
                // out again at once rather than at the end of its lease.
                let p = match self.peer_index.get(&(worker, thread)) {
                    Some(&p) => {
                        if self.peers[p as usize].route != route {
                            self.peers[p as usize].route = route;
                            self.peers[p as usize].credit = 0;
                            for t in self.ledger.held_by(Some(p)) {
                                self.ledger
                                    .requeue(t, "its worker thread reconnected", false);
                            }
                        }
                        p
                    }
                    None => {
                        let p = self.peers.len() as u32;
                        self.peers.push(Peer {
                            route,
                            worker,
                            credit: 0,
                            queued: false,
                        });
                        self.peer_index.insert((worker, thread), p);
                        p
                    }
                };
                let seen = self.seen(worker, now);
                if !seen.peers.contains(&p) {
                    seen.peers.push(p);
                }
                let peer = &mut self.peers[p as usize];
                peer.worker = worker;
                peer.credit = if header.attempt == 1 {
                    n
                } else {
                    peer.credit.saturating_add(n).min(cap)
                };
                if peer.credit > 0 && !peer.queued {
                    peer.queued = true;
                    self.eligible.push_back(p);
                }
            }
            Kind::Hello | Kind::Heartbeat | Kind::Bye => {
                let info = match protocol::from_json::<WorkerInfo>(payload, "worker info") {
                    Ok(i) => i,
                    Err(e) => {
                        self.drops.note("tasks", e.label(), e);
                        return;
                    }
                };
                let beat =
                    protocol::json_frames(Header::bare(Kind::Heartbeat, self.info.batch), &());
                let reply =
                    route
                        .iter()
                        .map(Vec::as_slice)
                        .chain([&b""[..], &beat[0][..], &b""[..]]);
                let _ = self.tasks.send_multipart(reply, zmq::DONTWAIT);
                let name = info.name();
                let seen = self.seen(info.id, now);
                seen.name = name;
                seen.heartbeat = Duration::from_millis(info.heartbeat_ms.clamp(10, 60_000));
                seen.route = Some(route);
                if !seen.hello && header.kind != Kind::Bye {
                    seen.hello = true;
                    log::info!("worker {} joined ({} thread(s))", seen.name, info.threads);
                }
                if header.kind == Kind::Bye {
                    let why = format!("worker {} left", info.name());
                    self.worker_dead(info.id, &why);
                    if let Some(w) = self.workers.get_mut(&info.id) {
                        w.hello = false;
                    }
                }
            }
            other => self.drops.note(
                "tasks",
                "unexpected kind",
                format!("{other:?} on the task socket"),
            ),
        }
    }

    /// The worker's entry, marked alive now.
    fn seen(&mut self, id: u64, now: Instant) -> &mut Seen {
        let w = self.workers.entry(id).or_insert_with(|| Seen {
            name: format!("worker-{id:016x}"),
            route: None,
            last: now,
            heartbeat: Duration::from_secs(1),
            dead: false,
            hello: false,
            peers: Vec::new(),
        });
        w.last = now;
        if w.dead {
            w.dead = false;
            log::info!("worker {} is heard from again", w.name);
        }
        w
    }

    fn on_feedback(&mut self) -> Result<(), Error> {
        let frames = std::mem::take(&mut self.frames);
        let r = self.feedback_message(&frames);
        self.frames = frames;
        r
    }

    fn feedback_message(&mut self, frames: &[zmq::Message]) -> Result<(), Error> {
        let (h, p) = match protocol::split(frames) {
            Ok(x) => x,
            Err(e) => {
                self.drops.note("feedback", e.label(), e);
                return Ok(());
            }
        };
        match h.kind {
            Kind::Status => {
                let s = match protocol::from_json::<SinkStatus>(p, "status") {
                    Ok(s) => s,
                    Err(e) => {
                        self.drops.note("feedback", e.label(), e);
                        return Ok(());
                    }
                };
                if self.sink_instance.is_some_and(|i| i != s.instance) {
                    log::warn!(
                        "the sink restarted: announcing batch {} again; what it lost goes out again",
                        self.hex
                    );
                    self.announced = false;
                    self.synced = false;
                    self.go_sent = false;
                    self.snapshot = Acks::default();
                }
                self.sink_instance = Some(s.instance);
                match s.batch {
                    Some(b) if b == self.info.batch => {
                        if let Some(why) = s.refused {
                            return Err(Error::Refused(why));
                        }
                        self.announced = true;
                        self.sink_ready = s.ready.len();
                        if self.synced && s.received > self.ledger.done() {
                            self.behind_since.get_or_insert_with(Instant::now);
                        } else {
                            self.behind_since = None;
                        }
                        if self.credit {
                            for w in &s.ready {
                                if w.dispatch != Dispatch::Credit {
                                    self.drops.note(
                                        "feedback",
                                        "dispatch mismatch",
                                        format!(
                                            "worker {} takes tasks by {}, this ventilator deals by credit: restart it with --dispatch credit",
                                            w.name(),
                                            w.dispatch.as_str()
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    None => {
                        // A sink that knows no batch: it has just started.
                        self.announced = false;
                        self.synced = false;
                        self.go_sent = false;
                    }
                    Some(other) => {
                        if s.refused.is_some() {
                            return Ok(());
                        }
                        return Err(Error::SinkBusy(other));
                    }
                }
            }
            Kind::Ack => {
                let acks = match Acks::decode(p) {
                    Ok(a) if h.batch == self.info.batch => a,
                    Ok(_) => {
                        self.drops
                            .note("feedback", "foreign batch", "ACK of another batch");
                        return Ok(());
                    }
                    Err(e) => {
                        self.drops.note("feedback", e.label(), e);
                        return Ok(());
                    }
                };
                if h.attempt == 1 {
                    // Part of the sink's full account; `task` parts follow.
                    self.snapshot.ok.extend(acks.ok);
                    self.snapshot.failed.extend(acks.failed);
                    if h.task == 0 && !self.synced {
                        self.sync()?;
                    } else if h.task == 0 {
                        // The sink we know told us all again (an ACK of ours
                        // may have been lost): take it as acks.
                        let snapshot = std::mem::take(&mut self.snapshot);
                        self.ledger.ack(&snapshot.ok, &snapshot.failed);
                    }
                } else {
                    let unknown = self.ledger.ack(&acks.ok, &acks.failed);
                    if unknown > 0 {
                        self.drops.note(
                            "feedback",
                            "unknown task",
                            format!("ACK of {unknown} task ids beyond the batch"),
                        );
                    }
                }
            }
            Kind::Done if h.batch == self.info.batch => {
                match protocol::from_json::<BatchDone>(p, "done") {
                    Ok(done) => {
                        log::info!(
                            "batch {} done: {} ok, {} failed in {:.1} ms",
                            self.hex,
                            done.ok,
                            done.failed,
                            done.elapsed_ms
                        );
                        self.report.done = Some(done);
                        // BYE: the sink may stop repeating DONE and exit.
                        let bye = protocol::json_frames(
                            Header::bare(Kind::Bye, self.info.batch),
                            &serde_json::json!({}),
                        );
                        let _ = self.feedback.send_multipart(bye.iter(), zmq::DONTWAIT);
                    }
                    Err(e) => self.drops.note("feedback", e.label(), e),
                }
            }
            Kind::WorkerLost => match protocol::from_json::<WorkerInfo>(p, "worker info") {
                Ok(w) if self.credit => {
                    // Results go to the sink, so its word counts; but not
                    // over our own, fresher news of the worker.
                    let heard = self.workers.get(&w.id).is_some_and(|s| {
                        s.last.elapsed() < s.heartbeat.max(self.config.heartbeat) * 2
                    });
                    if !heard {
                        let why = format!("the sink lost worker {}", w.name());
                        self.worker_dead(w.id, &why);
                    }
                }
                Ok(w) => {
                    let held = self.ledger.held_by(None);
                    self.report.workers_lost += 1;
                    log::warn!(
                        "the sink lost worker {}: push dispatch cannot tell which tasks it held, so all {} unacknowledged tasks go out again",
                        w.name(),
                        held.len()
                    );
                    let why = format!("worker {} was lost", w.name());
                    for t in held {
                        self.ledger.requeue(t, &why, true);
                    }
                }
                Err(e) => self.drops.note("feedback", e.label(), e),
            },
            other => self.drops.note(
                "feedback",
                "unexpected kind",
                format!("{other:?} on the feedback socket"),
            ),
        }
        Ok(())
    }

    /// The sink has told us everything it holds of this batch.
    fn sync(&mut self) -> Result<(), Error> {
        let snapshot = std::mem::take(&mut self.snapshot);
        let held: u64 = snapshot
            .ok
            .iter()
            .chain(&snapshot.failed)
            .map(|r| r.end.min(self.info.tasks).saturating_sub(r.start))
            .sum();
        if !self.started && held > 0 {
            if !self.config.resume {
                return Err(Error::Resume {
                    batch: self.info.batch,
                    held,
                    missing: self.info.tasks.saturating_sub(held),
                });
            }
            log::info!(
                "resuming batch {}: the sink holds {held} results, {} tasks to go",
                self.hex,
                self.info.tasks.saturating_sub(held)
            );
        }
        self.ledger.reconcile(&snapshot.ok, &snapshot.failed);
        self.synced = true;
        Ok(())
    }
}
