//! zpipe's **sink**: the stable end of the parallel pipeline.
//!
//! ```text
//!  worker PUSH ──▶ PULL  results   (binds tcp://*:5558)
//!                  PUB   control   (binds tcp://*:5559) ──▶ SUB worker: END
//!                  ROUTER feedback (binds tcp://*:5561) ◀─▶ DEALER ventilator
//! ```
//!
//! The sink *binds* all three sockets: it is a stable part that workers and
//! the ventilator find. It hears the workers (HELLO and HEARTBEAT arrive with
//! the results), so it tells the ventilator who is ready; it counts results by
//! task id, so it decides when the batch is complete. Then it publishes END,
//! which every worker obeys, and tells the ventilator DONE.
//!
//! A result that arrives twice is dropped (the first one wins); a message that
//! cannot be read is counted and dropped; neither stops the sink.
//!
//! **Acknowledgements.** The sink writes each accepted result to its output
//! (handed to the operating system, so it survives the sink being killed)
//! before it acknowledges it to the ventilator (ACK, task ids as ranges,
//! every 10 ms while results flow); the ventilator keeps every task until
//! then. When a ventilator announces its batch, the sink answers with
//! everything it already holds, so a restarted ventilator sends only the
//! rest; a sink restarted with `--resume` reads back its output and carries
//! on, and the ventilator re-sends whatever the old sink had not written.
//!
//! **High-water marks and linger.** The result PULL queues up to `--hwm`
//! messages per worker connection; the PUB drops END for a subscriber that is
//! not connected, so the sink repeats END until every worker said BYE (or a
//! second has passed). Every socket lingers at most a second on close.
//!
//! **Shutdown.** The [`Shutdown`] flag (SIGINT, SIGTERM) ends the loop within
//! 100 ms; [`run`] then returns the report so far, marked incomplete, after
//! writing every result it accepted.
//!
//! # Layout
//!
//! - `lib.rs`: flags ([`Config`]) and the loop ([`run`]).
//! - `output.rs`: JSON Lines, in completion or input order.
//! - [`report`]: the end-of-batch report.
//! - `classic.rs`: the guide's tasksink / tasksink2 for `--classic`.
#![forbid(unsafe_code)]

mod classic;
mod output;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use common::drops::Drops;
use common::protocol::{self, BatchDone, BatchInfo, Header, Kind, SinkStatus, WorkerInfo};
use common::report::Latency;
use common::sockets::{self, Recv};
use common::work::Status;
use common::{Action, Endpoints, Shutdown};

pub use report::Report;

/// The sink's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sink",
    version,
    about = "zpipe sink: collects results (PULL), tells the ventilator who is ready and when the batch is done, publishes END to the workers (PUB)"
)]
pub struct Config {
    /// Where results arrive from workers (or a streamer). `@` binds, `>`
    /// connects, bare binds; comma-separated list.
    #[arg(long, env = "ZPIPE_RESULT_ENDPOINT", default_value = "tcp://*:5558")]
    pub result_endpoint: Endpoints,
    /// The control channel (PUB) on which END and KILL go to the workers.
    #[arg(long, env = "ZPIPE_CONTROL_ENDPOINT", default_value = "tcp://*:5559")]
    pub control_endpoint: Endpoints,
    /// The feedback channel (ROUTER) the ventilator connects to: batch start,
    /// ready workers, completion.
    #[arg(long, env = "ZPIPE_FEEDBACK_ENDPOINT", default_value = "tcp://*:5561")]
    pub feedback_endpoint: Endpoints,
    /// Write results (JSON Lines) here; `-` is stdout.
    #[arg(long, short, env = "ZPIPE_OUTPUT", default_value = "-")]
    pub output: PathBuf,
    /// Write results in input order (like Pool.map), holding early ones back.
    #[arg(long, env = "ZPIPE_ORDERED")]
    pub ordered: bool,
    /// Print the report as one JSON object on stderr instead of a table.
    #[arg(long, env = "ZPIPE_JSON")]
    pub json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "ZPIPE_REPORT")]
    pub report: Option<PathBuf>,
    /// A worker not heard from for this long (or for three of its own
    /// heartbeats, if those are slower) is no longer ready, and is lost.
    #[arg(long, env = "ZPIPE_WORKER_TIMEOUT", default_value = "3s", value_parser = common::cli::duration)]
    pub worker_timeout: Duration,
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    /// Speak the guide's wire format (tasksink2): the first message starts the
    /// clock, then `--tasks` results are counted, then KILL is published.
    #[arg(long, env = "ZPIPE_CLASSIC")]
    pub classic: bool,
    /// Refuse a batch announced with more tasks than this (the sink keeps one
    /// bit per task).
    #[arg(long, env = "ZPIPE_MAX_TASKS", default_value_t = 100_000_000)]
    pub max_tasks: u64,
    /// Carry on after a restart: read the results already in `--output`,
    /// append to it, and collect only the rest of the same batch.
    #[arg(long, env = "ZPIPE_RESUME")]
    pub resume: bool,
    /// Classic mode only: how many results make a batch (the guide's 100).
    #[arg(long, env = "ZPIPE_CLASSIC_TASKS", default_value_t = 100)]
    pub tasks: u64,
}

/// The sink's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Setup(#[from] common::Error),
    #[error("cannot open the output {path}")]
    OpenOutput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write results")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot resume from {path}: line {line}: {reason}")]
    Resume {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Setup(e) => e.is_usage(),
            Error::OpenOutput { .. } | Error::Usage(_) | Error::Resume { .. } => true,
            Error::Write(_) => false,
        }
    }
}

/// Opens `--output` as the configuration says: appending with `--resume`
/// (after [`Sink::bind`] has read it back), else from empty.
pub fn open_output_for(config: &Config) -> Result<Box<dyn Write + Send>, Error> {
    if !config.resume {
        return open_output(&config.output);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.output)
        .map_err(|source| Error::OpenOutput {
            path: config.output.clone(),
            source,
        })?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

/// What a sink resuming finds in its output: one batch's results.
#[derive(Debug, Default)]
struct Resumed {
    batch: u64,
    ok: Vec<u64>,
    failed: Vec<u64>,
}

/// Reads back an output for `--resume`. A last line cut short (the sink was
/// killed while writing it) is cut off the file; any other line that is not
/// a result of the same batch is an error.
fn read_back(path: &std::path::Path) -> Result<Option<Resumed>, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::OpenOutput {
                path: path.to_owned(),
                source,
            });
        }
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        log::warn!(
            "{}: cutting off a last line left half-written ({} bytes)",
            path.display(),
            text.len() - whole
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole as u64));
        f.map_err(|source| Error::OpenOutput {
            path: path.to_owned(),
            source,
        })?;
    }
    let mut resumed: Option<Resumed> = None;
    for (i, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::Resume {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            task: u64,
            batch: &'a str,
            status: &'a str,
        }
        let l: Line =
            serde_json::from_slice(line).map_err(|e| bad(format!("not a result: {e}")))?;
        let batch = u64::from_str_radix(l.batch, 16)
            .map_err(|_| bad(format!("batch {:?} is not a batch id", l.batch)))?;
        let r = resumed.get_or_insert_with(|| Resumed {
            batch,
            ..Resumed::default()
        });
        if r.batch != batch {
            return Err(bad(format!(
                "results of two batches ({:016x} and {batch:016x}): resume works on one batch's output",
                r.batch
            )));
        }
        if l.status == "ok" {
            r.ok.push(l.task);
        } else {
            r.failed.push(l.task);
        }
    }
    Ok(resumed)
}

/// Opens `--output`.
pub fn open_output(path: &std::path::Path) -> Result<Box<dyn Write + Send>, Error> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let file = std::fs::File::create(path).map_err(|source| Error::OpenOutput {
        path: path.to_owned(),
        source,
    })?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

/// The most threads a worker may announce (the worker's own limit).
const MAX_THREADS: u32 = 1024;

/// What the sink knows of one worker.
#[derive(Debug)]
struct Seen {
    info: WorkerInfo,
    name: String,
    /// `name` as a JSON string, for the output lines.
    name_json: String,
    last_seen: Instant,
    gone: bool,
    /// Silent for longer than --worker-timeout (and said so).
    lost: bool,
    tasks: u64,
    busy_us: u64,
    /// Ready when the batch started, or did work in it.
    counted: bool,
}

impl Seen {
    /// How long this worker may be silent: `--worker-timeout`, or three of
    /// its own heartbeats if those are slower.
    fn cutoff(&self, worker_timeout: Duration) -> Duration {
        worker_timeout.max(Duration::from_millis(
            self.info.heartbeat_ms.min(3_600_000).saturating_mul(3),
        ))
    }
}

/// The batch being collected.
#[derive(Debug)]
struct Batch {
    info: BatchInfo,
    hex: String,
    /// The ventilator's ROUTER identity, to answer it.
    ventilator: Vec<u8>,
    started: Option<Instant>,
    last_result: Option<Instant>,
    /// One bit per task: its result is in.
    received: Vec<u64>,
    /// One bit per task: its result is ok.
    ok_bits: Vec<u64>,
    count: u64,
    ok: u64,
    failed: u64,
    duplicates: u64,
}

/// Everything the loop keeps.
struct State<'a> {
    config: &'a Config,
    workers: HashMap<u64, Seen>,
    batch: Option<Batch>,
    out: output::Output,
    drops: Drops,
    latency: Latency,
    run_time: Latency,
    progress: Option<indicatif::ProgressBar>,
    /// A worker joined: tell the ventilator now rather than at the next tick.
    status_due: bool,
    /// Random per process, in every STATUS: the ventilator sees a restart.
    instance: u64,
    /// What `--resume` read back, until its batch is announced.
    resumed: Option<Resumed>,
    /// Results written since the last ACK.
    ack_ok: Vec<u64>,
    ack_failed: Vec<u64>,
    /// Microseconds since the epoch, refreshed as results are drained.
    clock_us: u64,
}

/// Where a bound sink listens, as libzmq resolved it (a `tcp://127.0.0.1:*`
/// endpoint comes back with its real port).
#[derive(Debug, Clone)]
pub struct Bound {
    pub results: Vec<String>,
    pub control: Vec<String>,
    /// Empty in classic mode.
    pub feedback: Vec<String>,
}

/// A sink whose sockets are bound: [`Sink::bind`] fails fast on a bad
/// endpoint or a port in use, before any work; [`Sink::run`] collects.
pub struct Sink {
    config: Config,
    /// PULL: results, HELLO, HEARTBEAT and BYE from the workers.
    results: zmq::Socket,
    /// PUB: END and KILL to the workers.
    control: zmq::Socket,
    /// ROUTER: the ventilator's START and GO in; STATUS, ACK and DONE out.
    feedback: Option<zmq::Socket>,
    bound: Bound,
    resumed: Option<Resumed>,
}

impl Sink {
    /// Makes and binds (or connects) the sink's sockets.
    pub fn bind(config: &Config, ctx: &zmq::Context) -> Result<Sink, Error> {
        let resumed = if config.resume {
            if config.output.as_os_str() == "-" {
                return Err(Error::Usage(
                    "--resume reads back --output: give it a file, not stdout".into(),
                ));
            }
            if config.ordered {
                return Err(Error::Usage(
                    "--resume appends results as they come; it cannot be combined with --ordered"
                        .into(),
                ));
            }
            let r = read_back(&config.output)?;
            if let Some(r) = &r {
                log::info!(
                    "resuming batch {:016x} from {}: {} results already there",
                    r.batch,
                    config.output.display(),
                    r.ok.len() + r.failed.len()
                );
            }
            r
        } else {
            None
        };
        let tuning = config.sockets.tuning()?;
        let results = sockets::socket(ctx, zmq::PULL, "results", &tuning)?;
        let results_at = config.result_endpoint.attach_secured(
            &results,
            Action::Bind,
            "results",
            tuning.security.as_deref(),
        )?;
        let control = sockets::socket(ctx, zmq::PUB, "control", &tuning)?;
        let control_at = config.control_endpoint.attach_secured(
            &control,
            Action::Bind,
            "control",
            tuning.security.as_deref(),
        )?;
        let (feedback, feedback_at) = if config.classic {
            (None, Vec::new())
        } else {
            let feedback = sockets::socket(ctx, zmq::ROUTER, "feedback", &tuning)?;
            // A ventilator that reconnects keeps its routing id: the new
            // connection takes it over, so answers reach it at once.
            feedback
                .set_router_handover(true)
                .map_err(|e| common::Error::zmq("setting up the feedback socket", e))?;
            let at = config.feedback_endpoint.attach_secured(
                &feedback,
                Action::Bind,
                "feedback",
                tuning.security.as_deref(),
            )?;
            (Some(feedback), at)
        };
        let bound = Bound {
            results: results_at,
            control: control_at,
            feedback: feedback_at,
        };
        log::info!(
            "sink listening: results {:?}, control {:?}, feedback {:?}",
            bound.results,
            bound.control,
            bound.feedback
        );
        Ok(Sink {
            config: config.clone(),
            results,
            control,
            feedback,
            bound,
            resumed,
        })
    }

    /// The endpoints as bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Collects one batch: until its results are all in, or `shutdown`.
    /// Results go to `out`.
    pub fn run(self, shutdown: &Shutdown, out: Box<dyn Write + Send>) -> Result<Report, Error> {
        let Some(feedback) = &self.feedback else {
            return classic::run(&self.config, &self.results, &self.control, shutdown, out);
        };
        let report = collect(
            self.resumed,
            &self.config,
            &self.results,
            &self.control,
            feedback,
            shutdown,
            out,
        );
        if !report.as_ref().is_ok_and(|r| r.complete) {
            // Stopped early: nothing queued (STATUS for a ventilator that is
            // gone) is worth waiting for.
            for s in [&self.results, &self.control, feedback] {
                let _ = s.set_linger(0);
            }
        }
        report
    }
}

/// Binds and runs a sink for one batch (see [`Sink`]).
pub fn run(
    config: &Config,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
    out: Box<dyn Write + Send>,
) -> Result<Report, Error> {
    Sink::bind(config, ctx)?.run(shutdown, out)
}

fn collect(
    resumed: Option<Resumed>,
    config: &Config,
    results: &zmq::Socket,
    control: &zmq::Socket,
    feedback: &zmq::Socket,
    shutdown: &Shutdown,
    out: Box<dyn Write + Send>,
) -> Result<Report, Error> {
    let mut st = State {
        config,
        workers: HashMap::new(),
        batch: None,
        out: output::Output::new(out, config.ordered),
        drops: Drops::default(),
        latency: Latency::default(),
        run_time: Latency::default(),
        progress: None,
        status_due: false,
        clock_us: common::now_micros(),
        instance: rand::random(),
        resumed,
        ack_ok: Vec::new(),
        ack_failed: Vec::new(),
    };
    let mut frames = Vec::new();
    let mut next_status = Instant::now();
    let mut next_flush = Instant::now();
    let mut next_ack = Instant::now();
    while !shutdown.is_triggered() && !st.complete() {
        {
            let mut items = [
                results.as_poll_item(zmq::POLLIN),
                feedback.as_poll_item(zmq::POLLIN),
            ];
            // Pending acks go out within 10 ms even when nothing else comes:
            // the ventilator may be waiting for them to send more.
            let wait = if st.ack_ok.is_empty() && st.ack_failed.is_empty() {
                100
            } else {
                next_ack
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(100) as i64
            };
            match zmq::poll(&mut items, wait) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(zmq::Error::ETERM) => break,
                Err(e) => return Err(common::Error::zmq("polling", e).into()),
            }
        }
        // Drain results in a burst: no poll per message while they flow.
        for n in 0..10_000 {
            // One clock reading serves a few results received back to back.
            if n % 16 == 0 {
                st.clock_us = common::now_micros();
            }
            match sockets::recv_frames_now(results, &mut frames)? {
                Recv::Message(()) => st.on_result_socket(&frames)?,
                Recv::Timeout | Recv::Stopped => break,
            }
            if st.complete() {
                break;
            }
        }
        while let Recv::Message(()) = sockets::recv_frames_now(feedback, &mut frames)? {
            st.on_feedback(feedback, &frames);
        }
        let now = Instant::now();
        st.check_lost(feedback);
        if now >= next_status || st.status_due {
            st.status_due = false;
            // Acks first: STATUS counts only what the ventilator has been
            // told of, so a count ahead of its own means ACKs were lost.
            st.send_acks(feedback)?;
            st.send_status(feedback);
            next_status = now + Duration::from_millis(200);
        }
        if now >= next_ack || st.ack_ok.len() + st.ack_failed.len() >= 2048 {
            st.send_acks(feedback)?;
            next_ack = now + Duration::from_millis(10);
        }
        if now >= next_flush {
            st.out.flush()?;
            next_flush = now + Duration::from_millis(200);
        }
    }
    st.send_acks(feedback)?;
    if st.complete() {
        st.finish_batch(control, results, feedback, &mut frames, shutdown)?;
    }
    st.out.finish()?;
    if let Some(p) = &st.progress {
        p.finish_and_clear();
    }
    Ok(st.report())
}

impl State<'_> {
    fn complete(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.count == b.info.tasks)
    }

    fn on_result_socket(&mut self, frames: &[zmq::Message]) -> Result<(), Error> {
        let (header, payload) = match protocol::split(frames) {
            Ok(x) => x,
            Err(e) => {
                self.drops.note("results", e.label(), e);
                return Ok(());
            }
        };
        match header.kind {
            Kind::Result => self.on_result(header.batch, header.task, header.attempt, payload)?,
            Kind::Results => match protocol::split_result_records(payload, header.task) {
                Ok(records) => {
                    for r in records {
                        self.on_result(header.batch, r.task, r.attempt, r.body)?;
                    }
                }
                Err(e) => self.drops.note("results", e.label(), e),
            },
            Kind::Hello | Kind::Heartbeat | Kind::Bye => {
                match protocol::from_json::<WorkerInfo>(payload, "worker info") {
                    Ok(info) if (1..=MAX_THREADS).contains(&info.threads) => {
                        self.on_worker(header.kind, info)
                    }
                    Ok(info) => self.drops.note(
                        "results",
                        "malformed",
                        format!("worker {} claims {} threads", info.name(), info.threads),
                    ),
                    Err(e) => self.drops.note("results", e.label(), e),
                }
            }
            other => self.drops.note(
                "results",
                "unexpected kind",
                format!("{other:?} on the result socket"),
            ),
        }
        Ok(())
    }

    fn on_worker(&mut self, kind: Kind, info: WorkerInfo) {
        let now = Instant::now();
        let counted = self.batch.as_ref().is_some_and(|b| b.started.is_some());
        let status_due = &mut self.status_due;
        let seen = self.workers.entry(info.id).or_insert_with(|| {
            *status_due = true;
            log::info!("worker {} joined ({} thread(s))", info.name(), info.threads);
            Seen {
                name: info.name(),
                name_json: output::json_string(&info.name()),
                info: info.clone(),
                last_seen: now,
                gone: false,
                lost: false,
                tasks: 0,
                busy_us: 0,
                counted,
            }
        });
        seen.last_seen = now;
        seen.gone = kind == Kind::Bye;
        if seen.gone {
            log::info!("worker {} left", seen.name);
        } else if seen.lost {
            seen.lost = false;
            log::info!("worker {} is heard from again", seen.name);
        }
    }

    fn on_result(
        &mut self,
        batch_id: u64,
        task: u64,
        attempt: u32,
        payload: &[u8],
    ) -> Result<(), Error> {
        let Some(batch) = self.batch.as_mut() else {
            self.drops.note(
                "results",
                "no batch",
                "a result arrived before any ventilator announced a batch",
            );
            return Ok(());
        };
        if batch_id != batch.info.batch {
            self.drops.note(
                "results",
                "foreign batch",
                format!("result of batch {batch_id:016x}, collecting {}", batch.hex),
            );
            return Ok(());
        }
        if task >= batch.info.tasks {
            self.drops.note(
                "results",
                "unknown task",
                format!("task {task} of a {}-task batch", batch.info.tasks),
            );
            return Ok(());
        }
        let body = match protocol::decode_result(payload) {
            Ok(b) => b,
            Err(e) => {
                self.drops.note("results", e.label(), e);
                return Ok(());
            }
        };
        let (word, bit) = ((task / 64) as usize, 1u64 << (task % 64));
        if batch.received[word] & bit != 0 {
            batch.duplicates += 1;
            // Acknowledged again: the first ACK may have been lost, and the
            // ventilator sent the task again for want of it.
            if batch.ok_bits[word] & bit != 0 {
                self.ack_ok.push(task);
            } else {
                self.ack_failed.push(task);
            }
            return Ok(());
        }
        batch.received[word] |= bit;
        batch.count += 1;
        if body.outcome.status == Status::Ok {
            batch.ok_bits[word] |= bit;
            batch.ok += 1;
        } else {
            batch.failed += 1;
        }
        if batch.count == batch.info.tasks {
            batch.last_result = Some(Instant::now());
        }
        if body.outcome.status == Status::Ok {
            self.ack_ok.push(task);
        } else {
            self.ack_failed.push(task);
        }
        let now_us = self.clock_us;
        let latency_us =
            (body.sent_us != 0 && now_us >= body.sent_us).then(|| now_us - body.sent_us);
        if let Some(us) = latency_us {
            self.latency.record_us(us);
        }
        self.run_time.record_us(body.duration_us);
        let fallback;
        let worker_json = match self.workers.get_mut(&body.worker) {
            Some(w) => {
                w.tasks += 1;
                w.busy_us += body.duration_us;
                w.counted = true;
                w.name_json.as_str()
            }
            // The ventilator's own word on a task it gave up.
            None if body.worker == 0 => "\"ventilator\"",
            None => {
                fallback = format!("\"worker-{:016x}\"", body.worker);
                fallback.as_str()
            }
        };
        let line = output::Line {
            task,
            batch: &batch.hex,
            attempt,
            worker_json,
            status: body.outcome.status.as_str(),
            exit_code: body.outcome.exit_code,
            duration_us: body.duration_us,
            latency_us,
            output: &body.outcome.output,
            error: &body.outcome.error,
        };
        self.out.write(&line)?;
        if let Some(p) = &self.progress {
            p.inc(1);
        }
        Ok(())
    }

    fn on_feedback(&mut self, feedback: &zmq::Socket, frames: &[zmq::Message]) {
        // A ROUTER puts the peer's identity first.
        let Some((identity, rest)) = frames.split_first() else {
            return;
        };
        let (header, payload) = match protocol::split(rest) {
            Ok(x) => x,
            Err(e) => {
                self.drops.note("feedback", e.label(), e);
                return;
            }
        };
        match header.kind {
            Kind::Start => {
                let info: BatchInfo = match protocol::from_json(payload, "batch info") {
                    Ok(i) => i,
                    Err(e) => {
                        self.drops.note("feedback", e.label(), e);
                        return;
                    }
                };
                let info_batch = info.batch;
                let refused = if info.tasks == 0 {
                    Some("the batch has no task".to_string())
                } else if info.tasks > self.config.max_tasks {
                    Some(format!(
                        "{} tasks is more than this sink's --max-tasks {}",
                        info.tasks, self.config.max_tasks
                    ))
                } else {
                    None
                };
                match refused {
                    Some(why) => {
                        self.drops.note(
                            "feedback",
                            "refused batch",
                            format!("batch {:016x} refused: {why}", info.batch),
                        );
                        let status = SinkStatus {
                            batch: Some(info.batch),
                            ready: Vec::new(),
                            received: 0,
                            refused: Some(why),
                            instance: self.instance,
                        };
                        send_status(feedback, identity, &status);
                    }
                    None => {
                        let known = self.batch.as_ref().is_some_and(|b| {
                            !info.resync
                                && b.info.batch == info.batch
                                && b.ventilator[..] == identity[..]
                        });
                        if let Some(why) = self.on_start(identity.to_vec(), info) {
                            let status = SinkStatus {
                                batch: Some(info_batch),
                                ready: Vec::new(),
                                received: 0,
                                refused: Some(why),
                                instance: self.instance,
                            };
                            send_status(feedback, identity, &status);
                            return;
                        }
                        self.send_status_to(feedback, identity);
                        // A ventilator new to us (or reconnected) learns
                        // everything we hold; the one we know repeats START
                        // only to keep in touch.
                        if !known {
                            self.send_snapshot(feedback, identity);
                        }
                    }
                }
            }
            Kind::Go => match self.batch.as_mut() {
                Some(b) if b.info.batch == header.batch => {
                    if b.started.is_none() {
                        b.started = Some(Instant::now());
                        log::info!("batch {} started: {} tasks", b.hex, b.info.tasks);
                        if std::io::stderr().is_terminal() {
                            let p = indicatif::ProgressBar::new(b.info.tasks);
                            p.set_style(
                                indicatif::ProgressStyle::with_template(
                                    "{bar:40} {pos}/{len} tasks {per_sec} eta {eta}",
                                )
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                            );
                            p.set_position(b.count);
                            self.progress = Some(p);
                        }
                        let cutoff = self.config.worker_timeout;
                        for w in self.workers.values_mut() {
                            w.counted |= !w.gone && w.last_seen.elapsed() < w.cutoff(cutoff);
                        }
                    }
                }
                _ => self.drops.note(
                    "feedback",
                    "foreign batch",
                    format!(
                        "GO for batch {:016x}, which is not the current one",
                        header.batch
                    ),
                ),
            },
            // The ventilator's verdict on a task it gave up: a failed result.
            Kind::GivenUp => {
                let mut body = Vec::new();
                protocol::encode_result(
                    &mut body,
                    &protocol::ResultBody {
                        worker: 0,
                        thread: 0,
                        sent_us: 0,
                        duration_us: 0,
                        outcome: common::work::Outcome::failed(
                            Status::Failed,
                            String::from_utf8_lossy(payload).into_owned(),
                        ),
                    },
                );
                if let Err(e) = self.on_result(header.batch, header.task, header.attempt, &body) {
                    log::error!("cannot write a result: {e}");
                }
            }
            other => self.drops.note(
                "feedback",
                "unexpected kind",
                format!("{other:?} on the feedback socket"),
            ),
        }
    }

    /// Acknowledges the results written since the last ACK, once they are
    /// out of our buffers.
    fn send_acks(&mut self, feedback: &zmq::Socket) -> Result<(), Error> {
        if self.ack_ok.is_empty() && self.ack_failed.is_empty() {
            return Ok(());
        }
        let Some(b) = &self.batch else {
            return Ok(());
        };
        self.out.flush()?;
        let acks = protocol::Acks {
            ok: protocol::Acks::ranges(&mut self.ack_ok),
            failed: protocol::Acks::ranges(&mut self.ack_failed),
        };
        self.ack_ok.clear();
        self.ack_failed.clear();
        let head = Header::bare(Kind::Ack, b.info.batch).encode();
        let _ = feedback.send_multipart(
            [&b.ventilator[..], &head[..], &acks.encode()[..]],
            zmq::DONTWAIT,
        );
        Ok(())
    }

    /// Tells a ventilator everything this sink holds of the batch: ACKs
    /// marked `attempt` 1, the header's `task` saying how many parts follow.
    fn send_snapshot(&mut self, feedback: &zmq::Socket, identity: &[u8]) {
        let Some(b) = &self.batch else { return };
        let _ = self.out.flush();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut open: Option<(u64, bool)> = None;
        let total = b.info.tasks;
        for t in 0..=total {
            let here = t < total && b.received[(t / 64) as usize] & (1 << (t % 64)) != 0;
            let good = here && b.ok_bits[(t / 64) as usize] & (1 << (t % 64)) != 0;
            match open {
                Some((from, g)) if !here || g != good => {
                    if g {
                        ok.push(from..t)
                    } else {
                        failed.push(from..t)
                    }
                    open = here.then_some((t, good));
                }
                None if here => open = Some((t, good)),
                _ => {}
            }
        }
        let per = protocol::Acks::MAX_RANGES / 2;
        let parts = ok
            .len()
            .div_ceil(per)
            .max(failed.len().div_ceil(per))
            .max(1);
        let head_for = |left: usize| {
            Header {
                kind: Kind::Ack,
                attempt: 1,
                batch: b.info.batch,
                task: left as u64,
            }
            .encode()
        };
        for i in 0..parts {
            let part = protocol::Acks {
                ok: ok.iter().skip(i * per).take(per).cloned().collect(),
                failed: failed.iter().skip(i * per).take(per).cloned().collect(),
            };
            let head = head_for(parts - 1 - i);
            let _ =
                feedback.send_multipart([identity, &head[..], &part.encode()[..]], zmq::DONTWAIT);
        }
    }

    /// Takes the batch a ventilator announced; `Some(reason)` refuses it.
    fn on_start(&mut self, identity: Vec<u8>, info: BatchInfo) -> Option<String> {
        match &mut self.batch {
            Some(b) if b.info.batch == info.batch => {
                if b.ventilator != identity {
                    log::info!("batch {}: a ventilator (re)joined", b.hex);
                }
                b.ventilator = identity;
            }
            Some(b) => log::warn!(
                "a ventilator announced batch {:016x} while batch {} is being collected; it is told so",
                info.batch,
                b.hex
            ),
            None => {
                if let Some(r) = &self.resumed
                    && r.batch != info.batch
                {
                    return Some(format!(
                        "this sink resumes batch {:016x} from {}, not batch {:016x} (other tasks?)",
                        r.batch,
                        self.config.output.display(),
                        info.batch
                    ));
                }
                let hex = format!("{:016x}", info.batch);
                log::info!("batch {hex} announced: {} tasks", info.tasks);
                let words = info.tasks.div_ceil(64) as usize;
                let mut b = Batch {
                    hex,
                    ventilator: identity,
                    started: None,
                    last_result: None,
                    received: vec![0; words],
                    ok_bits: vec![0; words],
                    count: 0,
                    ok: 0,
                    failed: 0,
                    duplicates: 0,
                    info,
                };
                if let Some(r) = self.resumed.take() {
                    for (tasks, good) in [(&r.ok, true), (&r.failed, false)] {
                        for &t in tasks.iter().filter(|&&t| t < b.info.tasks) {
                            let (w, bit) = ((t / 64) as usize, 1u64 << (t % 64));
                            if b.received[w] & bit != 0 {
                                continue;
                            }
                            b.received[w] |= bit;
                            b.count += 1;
                            if good {
                                b.ok_bits[w] |= bit;
                                b.ok += 1;
                            } else {
                                b.failed += 1;
                            }
                        }
                    }
                    log::info!(
                        "batch {}: {} of {} results were already in the output",
                        b.hex,
                        b.count,
                        b.info.tasks
                    );
                }
                self.batch = Some(b);
            }
        }
        None
    }

    /// Says so, once, when a worker falls silent: in the log, and to the
    /// ventilator (WORKER_LOST).
    fn check_lost(&mut self, feedback: &zmq::Socket) {
        let cutoff = self.config.worker_timeout;
        let ventilator = self
            .batch
            .as_ref()
            .filter(|b| b.started.is_some() && b.count < b.info.tasks)
            .map(|b| (b.ventilator.clone(), b.info.batch));
        for w in self.workers.values_mut() {
            if w.gone || w.lost || w.last_seen.elapsed() < w.cutoff(cutoff) {
                continue;
            }
            w.lost = true;
            log::warn!(
                "worker {} not heard from for {:.1?}: lost",
                w.name,
                w.last_seen.elapsed()
            );
            if let Some((identity, batch)) = &ventilator {
                let [h, p] = protocol::json_frames(Header::bare(Kind::WorkerLost, *batch), &w.info);
                let _ = feedback.send_multipart([&identity[..], &h[..], &p[..]], zmq::DONTWAIT);
            }
        }
    }

    fn status(&self) -> SinkStatus {
        let cutoff = self.config.worker_timeout;
        let mut ready: Vec<WorkerInfo> = self
            .workers
            .values()
            .filter(|w| !w.gone && w.last_seen.elapsed() < w.cutoff(cutoff))
            .map(|w| w.info.clone())
            .collect();
        ready.sort_by_key(|w| w.id);
        SinkStatus {
            batch: self.batch.as_ref().map(|b| b.info.batch),
            ready,
            received: self.batch.as_ref().map_or(0, |b| b.count),
            refused: None,
            instance: self.instance,
        }
    }

    fn send_status(&self, feedback: &zmq::Socket) {
        if let Some(b) = &self.batch {
            self.send_status_to(feedback, &b.ventilator);
        }
    }

    fn send_status_to(&self, feedback: &zmq::Socket, identity: &[u8]) {
        send_status(feedback, identity, &self.status());
    }

    /// END to the workers and DONE to the ventilator, repeated until every
    /// worker said BYE or a second has passed: PUB drops what a subscriber
    /// that is reconnecting would miss.
    fn finish_batch(
        &mut self,
        control: &zmq::Socket,
        results: &zmq::Socket,
        feedback: &zmq::Socket,
        frames: &mut Vec<zmq::Message>,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let Some(b) = &self.batch else { return Ok(()) };
        let elapsed = b
            .started
            .zip(b.last_result)
            .map(|(s, e)| e - s)
            .unwrap_or_default();
        let done = BatchDone {
            batch: b.info.batch,
            ok: b.ok,
            failed: b.failed,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        };
        let [dh, dp] = protocol::json_frames(Header::bare(Kind::Done, b.info.batch), &done);
        let end = Header::bare(Kind::End, b.info.batch).encode();
        let ventilator = b.ventilator.clone();
        log::info!(
            "batch {} complete: {} ok, {} failed; publishing END",
            b.hex,
            b.ok,
            b.failed
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        // The ventilator says BYE when DONE reached it; without that word,
        // DONE is repeated for a while (a reconnecting ventilator would miss
        // a single one, and then wait).
        let ventilator_deadline = Instant::now() + Duration::from_secs(3);
        let mut ventilator_bye = false;
        loop {
            let _ = control.send(&end[..], zmq::DONTWAIT);
            let _ = feedback.send_multipart([&ventilator[..], &dh[..], &dp[..]], zmq::DONTWAIT);
            let cutoff = self.config.worker_timeout;
            let waiting = self
                .workers
                .values()
                .filter(|w| !w.gone && w.last_seen.elapsed() < w.cutoff(cutoff))
                .count();
            let now = Instant::now();
            if shutdown.is_triggered()
                || ((waiting == 0 || now >= deadline)
                    && (ventilator_bye || now >= ventilator_deadline))
            {
                break;
            }
            let until = Instant::now() + Duration::from_millis(100);
            while Instant::now() < until {
                match sockets::recv_frames(
                    results,
                    frames,
                    until.saturating_duration_since(Instant::now()),
                )? {
                    Recv::Message(()) => self.on_result_socket(frames)?,
                    Recv::Timeout | Recv::Stopped => break,
                }
            }
            while let Recv::Message(()) = sockets::recv_frames_now(feedback, frames)? {
                if let Some((_, rest)) = frames.split_first()
                    && let Ok((h, _)) = protocol::split(rest)
                    && h.kind == Kind::Bye
                {
                    ventilator_bye = true;
                }
            }
        }
        Ok(())
    }

    fn report(&self) -> Report {
        let (tasks, ok, failed, duplicates, elapsed, expected) = match &self.batch {
            Some(b) => {
                let end = if self.complete() {
                    b.last_result
                } else {
                    Some(Instant::now())
                };
                let elapsed = b
                    .started
                    .zip(end)
                    .map(|(s, e)| e.saturating_duration_since(s))
                    .unwrap_or_default();
                (
                    b.info.tasks,
                    b.ok,
                    b.failed,
                    b.duplicates,
                    elapsed,
                    b.info.expected_ms,
                )
            }
            None => (0, 0, 0, 0, Duration::ZERO, 0),
        };
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        let counted: Vec<&Seen> = self.workers.values().filter(|w| w.counted).collect();
        let threads: u64 = counted.iter().map(|w| u64::from(w.info.threads)).sum();
        // Ideal and overhead speak of a whole batch only.
        let ideal_ms = (self.complete() && expected > 0 && threads > 0)
            .then(|| expected as f64 / threads as f64);
        let overhead_pct = ideal_ms
            .filter(|_| elapsed_ms > 0.0)
            .map(|i| (elapsed_ms - i) / i * 100.0);
        let received = (ok + failed).max(1) as f64;
        let mut workers: Vec<report::WorkerRow> = counted
            .iter()
            .map(|w| report::WorkerRow {
                worker: w.name.clone(),
                threads: w.info.threads,
                tasks: w.tasks,
                busy_ms: w.busy_us as f64 / 1000.0,
                share_pct: w.tasks as f64 / received * 100.0,
            })
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        let mut dropped: BTreeMap<String, u64> = self
            .drops
            .by_reason()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        dropped.retain(|_, v| *v > 0);
        Report {
            batch: self.batch.as_ref().map(|b| b.hex.clone()),
            complete: self.complete(),
            tasks,
            ok,
            failed,
            duplicates,
            dropped,
            elapsed_ms,
            expected_ms: expected as f64,
            threads,
            ideal_ms,
            overhead_pct,
            tasks_per_s: if elapsed_ms > 0.0 {
                (ok + failed) as f64 / (elapsed_ms / 1000.0)
            } else {
                0.0
            },
            latency: self.latency.percentiles(),
            run_time: self.run_time.percentiles(),
            workers,
            lost: {
                let mut lost: Vec<String> = self
                    .workers
                    .values()
                    .filter(|w| w.lost)
                    .map(|w| w.name.clone())
                    .collect();
                lost.sort();
                lost
            },
        }
    }
}

/// Sends STATUS to one ventilator. A ROUTER drops a message for a peer that
/// is gone: fine, STATUS is repeated.
fn send_status(feedback: &zmq::Socket, identity: &[u8], status: &SinkStatus) {
    let [h, p] = protocol::json_frames(
        Header::bare(Kind::Status, status.batch.unwrap_or(0)),
        status,
    );
    let _ = feedback.send_multipart([identity, &h[..], &p[..]], zmq::DONTWAIT);
}

/// Prints the report on stderr (a table, or JSON with `--json`) and writes
/// `--report`.
pub fn print_report(config: &Config, report: &Report) -> Result<(), Error> {
    let json = serde_json::to_string(report).map_err(std::io::Error::other)?;
    if config.json {
        eprintln!("{json}");
    } else if !config.classic {
        eprint!("{}", report.table());
    }
    if let Some(path) = &config.report {
        // Written beside, then renamed: whoever waits for the report never
        // reads half of it.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, format!("{json}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| Error::OpenOutput {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}
