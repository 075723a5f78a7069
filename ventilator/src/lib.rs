//! zpipe's **ventilator**: the stable start of the parallel pipeline.
//!
//! ```text
//!  ventilator PUSH (binds tcp://*:5557) ──▶ PULL worker ×N
//!  ventilator DEALER (connects tcp://localhost:5561) ◀─▶ ROUTER sink
//! ```
//!
//! The ventilator *binds* its PUSH socket: workers come and go and find it.
//! PUSH deals tasks round-robin to the workers connected at the moment it
//! sends, so a worker that connects late (the slow joiner) would miss the
//! first tasks, or the first worker would get them all. The ventilator
//! therefore announces the batch to the sink (START), and waits until the sink,
//! which hears the workers' HELLOs, reports `--workers N` ready; each worker
//! says HELLO only once its task socket has finished the handshake with us.
//! Then it says GO (the sink starts its clock) and sends every task, and waits
//! for the sink's DONE.
//!
//! **High-water mark.** The PUSH queues at most `--hwm` tasks per worker
//! connection; beyond that a send waits (while checking for a stop), so a
//! large batch never sits in memory twice.
//!
//! **Shutdown.** The [`Shutdown`] flag (SIGINT, SIGTERM) stops the wait or the
//! sending within 100 ms; sockets linger at most a second.
//!
//! # Layout
//!
//! - `lib.rs`: flags ([`Config`]) and the batch ([`run`]).
//! - [`input`]: generated batches and input files.
//! - `classic.rs`: the guide's taskvent for `--classic`.
#![forbid(unsafe_code)]

mod classic;
pub mod input;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use common::drops::Drops;
use common::protocol::{
    self, BatchDone, BatchInfo, Dispatch, Header, Kind, SinkStatus, WorkerInfo,
};
use common::sockets::{self, Recv};
use common::work::Work;
use common::{Action, Endpoints, Shutdown};
use serde::Serialize;

/// The ventilator's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ventilator",
    version,
    about = "zpipe ventilator: waits for workers, then deals a batch of tasks (PUSH) and waits for the sink's DONE",
    after_help = "Input lines: blank and # lines are skipped; {\"kind\":...} is a JSON task (sleep, primes, exec, noop, data); any other line is a plain task (--plain). Without --input, --tasks tasks are generated."
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

    /// The batch this configuration describes: the input, or generated tasks.
    pub fn load_tasks(&self) -> Result<Vec<Work>, Error> {
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
                Ok(input::generate(self.tasks, self.kind, self.workload, seed))
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
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::Input(_) | Error::Usage(_) => true,
            _ => false,
        }
    }
}

/// What the ventilator did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub batch: String,
    pub tasks: u64,
    pub sent: u64,
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
    /// PUSH: tasks out to the workers, round-robin.
    push: zmq::Socket,
    /// DEALER: START and GO to the sink; STATUS and DONE back. (Classic mode:
    /// a PUSH to the sink's result socket.)
    feedback: zmq::Socket,
    bound: Vec<String>,
}

impl Ventilator {
    /// Makes the sockets, binds the task endpoint and connects to the sink.
    pub fn bind(config: &Config, ctx: &zmq::Context) -> Result<Ventilator, Error> {
        let mut tuning = config.sockets.tuning();
        if config.classic {
            tuning.linger = config.linger;
            tuning.heartbeat = None;
        }
        let push = sockets::socket(ctx, zmq::PUSH, "tasks", &tuning)?;
        let bound = config.task_endpoint.attach(&push, Action::Bind, "tasks")?;
        let feedback = if config.classic {
            let sink = sockets::socket(ctx, zmq::PUSH, "sink", &tuning)?;
            config
                .result_endpoint
                .attach(&sink, Action::Connect, "sink")?;
            sink
        } else {
            let feedback = sockets::socket(ctx, zmq::DEALER, "feedback", &tuning)?;
            config
                .feedback_endpoint
                .attach(&feedback, Action::Connect, "feedback")?;
            feedback
        };
        Ok(Ventilator {
            config: config.clone(),
            push,
            feedback,
            bound,
        })
    }

    /// The task endpoints as bound (a `tcp://127.0.0.1:*` comes back with its
    /// real port).
    pub fn bound(&self) -> &[String] {
        &self.bound
    }

    /// Runs one batch of `tasks`: waits for the sink and the workers, sends
    /// every task, and waits for the sink's DONE (or `shutdown`).
    pub fn run(self, tasks: &[Work], shutdown: &Shutdown) -> Result<Report, Error> {
        if tasks.is_empty() {
            return Err(Error::Usage("the batch is empty".into()));
        }
        if self.config.classic {
            return classic::run(&self.config, tasks, &self.push, &self.feedback, shutdown);
        }
        let report = push_batch(&self.config, tasks, &self.push, &self.feedback, shutdown);
        // Whatever is still queued (START for a sink that never came, tasks
        // after a stop) is moot now: close at once.
        let _ = self.push.set_linger(0);
        let _ = self.feedback.set_linger(0);
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

fn push_batch(
    config: &Config,
    tasks: &[Work],
    push: &zmq::Socket,
    feedback: &zmq::Socket,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    let batch = loop {
        let b: u64 = rand::random();
        if b != 0 {
            break b;
        }
    };
    let hex = format!("{batch:016x}");
    let info = BatchInfo {
        batch,
        tasks: tasks.len() as u64,
        expected_ms: tasks.iter().filter_map(Work::expected_ms).sum(),
        dispatch: Dispatch::Push,
    };
    let mut report = Report {
        batch: hex.clone(),
        tasks: info.tasks,
        sent: 0,
        workers: 0,
        wait_ms: 0.0,
        send_ms: 0.0,
        done: None,
    };
    log::info!(
        "batch {hex}: {} tasks on {}; waiting for {} worker(s)",
        info.tasks,
        config.task_endpoint,
        config.workers
    );

    let mut drops = Drops::default();
    let mut frames = Vec::new();
    let started = Instant::now();
    let Some(ready) = wait_ready(
        config,
        feedback,
        &info,
        &mut drops,
        &mut frames,
        shutdown,
        started,
    )?
    else {
        report.wait_ms = started.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    };
    report.workers = ready;
    report.wait_ms = started.elapsed().as_secs_f64() * 1000.0;

    // GO first: the sink starts its clock as the first task leaves.
    sockets::send_frames(feedback, &[Header::bare(Kind::Go, batch).encode()], || {
        !shutdown.is_triggered()
    })?;
    let send_started = Instant::now();
    let mut body = Vec::with_capacity(64);
    let mut clock_us = 0;
    for (id, work) in tasks.iter().enumerate() {
        let head = Header {
            kind: Kind::Task,
            attempt: 1,
            batch,
            task: id as u64,
        }
        .encode();
        // Reading the clock for every task was a visible cost at millions of
        // tasks per second; 32 tasks leave within microseconds of each other.
        if id % 32 == 0 {
            clock_us = common::now_micros();
        }
        body.clear();
        protocol::encode_task(&mut body, clock_us, work);
        if !sockets::send_frames(push, &[&head[..], &body[..]], || !shutdown.is_triggered())? {
            break;
        }
        report.sent += 1;
    }
    report.send_ms = send_started.elapsed().as_secs_f64() * 1000.0;
    if report.sent == info.tasks {
        log::info!(
            "batch {hex}: all {} tasks sent in {:.1} ms; waiting for the sink",
            report.sent,
            report.send_ms
        );
    }

    // Wait for DONE.
    while !shutdown.is_triggered() {
        match sockets::recv_frames(feedback, &mut frames, Duration::from_millis(100))? {
            Recv::Message(()) => {}
            Recv::Timeout => continue,
            Recv::Stopped => break,
        }
        match protocol::split(&frames) {
            Ok((h, p)) if h.kind == Kind::Done && h.batch == batch => {
                match protocol::from_json::<BatchDone>(p, "done") {
                    Ok(done) => {
                        log::info!(
                            "batch {hex} done: {} ok, {} failed in {:.1} ms",
                            done.ok,
                            done.failed,
                            done.elapsed_ms
                        );
                        report.done = Some(done);
                        break;
                    }
                    Err(e) => drops.note("feedback", e.label(), e),
                }
            }
            Ok((h, _)) if h.kind == Kind::Status => {}
            Ok((h, p)) if h.kind == Kind::WorkerLost => {
                match protocol::from_json::<WorkerInfo>(p, "worker info") {
                    Ok(w) => log::warn!(
                        "the sink lost worker {}: the tasks dealt to it will not come back, and the batch cannot complete without them (push mode does not re-send)",
                        w.name()
                    ),
                    Err(e) => drops.note("feedback", e.label(), e),
                }
            }
            Ok((h, _)) => drops.note(
                "feedback",
                "unexpected kind",
                format!("{:?} while waiting for DONE", h.kind),
            ),
            Err(e) => drops.note("feedback", e.label(), e),
        }
    }
    Ok(report)
}

/// Announces the batch until the sink answers, then waits until enough
/// workers are ready. `Ok(None)` means stopped by `shutdown`.
fn wait_ready(
    config: &Config,
    feedback: &zmq::Socket,
    info: &BatchInfo,
    drops: &mut Drops,
    frames: &mut Vec<zmq::Message>,
    shutdown: &Shutdown,
    started: Instant,
) -> Result<Option<usize>, Error> {
    let start = protocol::json_frames(Header::bare(Kind::Start, info.batch), info);
    let mut heard: Option<SinkStatus> = None;
    let mut next_start = Instant::now();
    let mut next_log = Instant::now() + Duration::from_secs(5);
    loop {
        if shutdown.is_triggered() {
            return Ok(None);
        }
        let now = Instant::now();
        if heard.is_none() && now >= next_start {
            // DEALER queues this until the connection is up; repeated in case
            // the sink restarted meanwhile.
            let _ = feedback.send_multipart(start.iter(), zmq::DONTWAIT);
            next_start = now + Duration::from_millis(500);
        }
        let ready = heard.as_ref().map_or(0, |s| s.ready.len());
        if ready >= config.workers && heard.is_some() {
            log::info!(
                "{ready} worker(s) ready after {:.0} ms: starting",
                started.elapsed().as_secs_f64() * 1000.0
            );
            return Ok(Some(ready));
        }
        if started.elapsed() >= config.wait {
            let endpoint = config.task_endpoint.to_string();
            return match (&heard, ready) {
                (None, _) => Err(Error::NoSink {
                    endpoint: config.feedback_endpoint.to_string(),
                    waited: config.wait,
                }),
                (Some(_), 0) => Err(Error::NoWorkers {
                    endpoint,
                    waited: config.wait,
                }),
                (Some(_), n) => {
                    log::warn!(
                        "only {n} of {} workers ready after {:?}: starting with them",
                        config.workers,
                        config.wait
                    );
                    Ok(Some(n))
                }
            };
        }
        if now >= next_log {
            match &heard {
                None => log::info!("waiting for the sink at {}", config.feedback_endpoint),
                Some(_) => log::info!("waiting for workers: {ready} of {} ready", config.workers),
            }
            next_log = now + Duration::from_secs(5);
        }
        match sockets::recv_frames(feedback, frames, Duration::from_millis(50))? {
            Recv::Message(()) => {}
            Recv::Timeout => continue,
            Recv::Stopped => return Ok(None),
        }
        match protocol::split(frames) {
            Ok((h, p)) if h.kind == Kind::Status => {
                match protocol::from_json::<SinkStatus>(p, "status") {
                    Ok(s) if s.batch == Some(info.batch) => {
                        if let Some(why) = s.refused {
                            return Err(Error::Refused(why));
                        }
                        heard = Some(s);
                    }
                    Ok(s) => return Err(Error::SinkBusy(s.batch.unwrap_or(0))),
                    Err(e) => drops.note("feedback", e.label(), e),
                }
            }
            Ok((h, _)) => drops.note(
                "feedback",
                "unexpected kind",
                format!("{:?} while waiting for workers", h.kind),
            ),
            Err(e) => drops.note("feedback", e.label(), e),
        }
    }
}
