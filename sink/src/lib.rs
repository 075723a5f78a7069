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
//! Each conversation is a file of its own that the loop routes messages
//! to; each answers with what the loop must do, and its decisions are
//! tested without sockets.
//!
//! - `lib.rs`: [`Sink::bind`], [`Sink::run`], [`run`], and the collecting
//!   loop: it polls the sockets, decodes each message once
//!   ([`common::protocol::Message`]) and routes it; it makes the batch when
//!   one is announced and the progress bar when GO comes. It also runs the
//!   standing pool (`serve_batches`, `--serve`: [`Sink::serve`], [`serve`],
//!   [`Served`]): one collector a batch, the workers kept from one to the
//!   next.
//! - `results.rs`: the results from the workers, named for what arrives on
//!   the result PULL: each result checked against the batch, deduplicated,
//!   acknowledged, timed, credited to its worker and written (the hot path:
//!   nothing allocated per result), and the HELLO, HEARTBEAT and BYE that
//!   come with them (a push worker leaving is told to the ventilator).
//! - `finish.rs`: the end of a batch and of the pool, named for that end
//!   rather than for a socket, since it speaks on two: END on the control
//!   PUB and DONE on the feedback ROUTER until BYE (a START that comes
//!   meanwhile kept for the next batch), and KILL to a standing pool.
//! - `ventilator_link.rs`: how the sink link is kept in step, seen from the
//!   sink: the feedback conversation with the ventilator (START and its
//!   refusals, STATUS, GO, ACKs within 10 ms, the snapshot in parts,
//!   GIVEN_UP as a verdict, WORKER_LOST, DONE until BYE).
//! - `early.rs`: results that come before any batch is announced (a sink
//!   started again hears the workers before the ventilator's next START):
//!   they wait, bounded, and go in when the batch is announced, before the
//!   ventilator hears what the sink holds.
//! - `collector.rs`: your code at this end ([`Collector`], [`run_with`],
//!   [`Sink::run_with`]): it is handed each result as its line is written
//!   (so in output order, duplicates already dropped, what `--resume` read
//!   back first), and the batch's end; a panic in it is caught and told.
//! - `quiet.rs`: saying what the sink waits for, at a steady rate (no
//!   batch announced; a batch that gets no new result).
//! - `received.rs`: where results are deduplicated: the set of task ids in
//!   (and ok), its ranges for the snapshot, what `--resume` read back.
//! - `batch.rs`: the batch being collected: what START said, the received
//!   set, its clock, and the checks a result passes before it counts. (Not
//!   in the plan: the link, the results and the report all read the batch,
//!   so it is a room of its own rather than a part of any one of them.)
//! - `workers.rs`: who is alive, who is lost (HELLO, HEARTBEAT, BYE, each
//!   worker's cutoff), each worker's share.
//! - `output.rs`: the JSON Lines, written in completion or input order and
//!   read back by `--resume` (one line type both ways); [`open_output`],
//!   [`open_output_for`].
//! - [`report`]: the end-of-batch report, built, printed, and written to
//!   `--report` whole or not at all ([`print_report`]).
//! - [`plot`]: `sink plot`, pictures drawn from what zpipe writes:
//!   `plot/timeline.rs`, a batch's timeline from its results file (one
//!   lane per worker thread, one bar per result), and `plot/scaling.rs`,
//!   elapsed against workers from the benchmark's CSV; `plot/mod.rs`
//!   runs the subcommand and marks the elements a reader looks for.
//! - `metrics.rs`: `--metrics`: the sink's Prometheus metrics (results by
//!   status, latency and run-time histograms, the batch's gauges), told
//!   by the collector as results come; served by [`common::metrics`]
//!   while the [`Sink`] lives.
//! - `config.rs`: the flags ([`Config`], and [`Command`] for `sink
//!   plot`); `error.rs`: [`Error`].
//! - `classic.rs`: the guide's tasksink / tasksink2 for `--classic`.
//! - `main.rs`: the `sink` binary, which parses the flags and calls [`run`]
//!   or [`serve`] (or [`plot::run`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod classic;
mod collector;
mod config;
mod early;
mod error;
mod finish;
mod metrics;
mod output;
pub mod plot;
mod quiet;
mod received;
pub mod report;
mod results;
mod ventilator_link;
mod workers;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::clock::Coarse;
use common::drops::Drops;
use common::protocol::WorkerInfo;
use common::sockets::{self, Recv};
use common::{Action, Shutdown};

use batch::Batch;
use early::Early;
use output::{Output, Resumed};
use report::Timings;
use results::Source;
use ventilator_link::{Event, VentilatorLink, View};
use workers::Workers;

pub use collector::{Collected, Collector, CollectorPanicked, TaskResult};
pub use config::{Command, Config, Plot, ScalingArgs, TimelineArgs};
pub use error::Error;
pub use output::{open_output, open_output_for};
pub use report::{Report, print_report};

/// Where a bound sink listens, as libzmq resolved it (a `tcp://127.0.0.1:*`
/// endpoint comes back with its real port).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The result PULL's endpoints.
    pub results: Vec<String>,
    /// The control PUB's endpoints.
    pub control: Vec<String>,
    /// The feedback ROUTER's endpoints; empty in classic mode.
    pub feedback: Vec<String>,
    /// Where `--metrics` serves (a port 0 comes back as the real one).
    pub metrics: Option<SocketAddr>,
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
    /// `--metrics`: the handles, and the server, stopped when the sink is
    /// dropped (when [`Sink::run`] or [`Sink::serve`] returns).
    metrics: Option<common::metrics::Exported<metrics::Metrics>>,
}

impl Sink {
    /// Makes and binds (or connects) the sink's sockets.
    pub fn bind(config: &Config, ctx: &zmq::Context) -> Result<Sink, Error> {
        config.check_serve()?;
        if let Some(dir) = &config.output_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::OpenOutput {
                path: dir.clone(),
                source,
            })?;
        }
        let resumed = output::read_back_for(config)?;
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
        if config.classic && config.metrics.metrics.is_some() {
            return Err(Error::Usage(
                "--classic speaks the guide's wire format, which has no batches to measure: drop --metrics".into(),
            ));
        }
        let metrics = config.metrics.start("sink", metrics::Metrics::register)?;
        let bound = Bound {
            results: results_at,
            control: control_at,
            feedback: feedback_at,
            metrics: metrics.as_ref().map(|m| m.addr()),
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
            metrics,
        })
    }

    /// The endpoints as bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Collects one batch: until its results are all in, or `shutdown`.
    /// Results go to `out`. (With `--serve`, see [`Sink::serve`].)
    pub fn run(self, shutdown: &Shutdown, out: Box<dyn Write + Send>) -> Result<Report, Error> {
        if self.feedback.is_none() {
            return classic::run(&self.config, &self.results, &self.control, shutdown, out);
        }
        self.run_tapped(shutdown, out, None)
            .map(|(report, _)| report)
    }

    /// [`Sink::run`], with your code at this end: `collector` sees each
    /// result once (as it is written to `out`; first those `--resume` read
    /// back) and the batch's end, and returns what it made of them (see
    /// [`Collector`]).
    pub fn run_with<C: Collector>(
        self,
        shutdown: &Shutdown,
        out: Box<dyn Write + Send>,
        collector: C,
    ) -> Result<Collected<C::Output>, Error> {
        if self.feedback.is_none() {
            return Err(Error::Usage(
                "--classic speaks the guide's wire format, whose results carry nothing to collect: a collector needs zpipe's own".into(),
            ));
        }
        let mut tap = Box::new(collector::Tapped::new(collector));
        if self.resumed.is_some() {
            let told = collector::replay(&mut *tap, &self.config.output)?;
            log::info!("the collector was given the {told} result(s) read back");
        }
        let (report, tap) = self.run_tapped(shutdown, out, Some(tap))?;
        let tapped = tap
            .and_then(|t| t.into_any().downcast::<collector::Tapped<C>>().ok())
            .ok_or_else(|| Error::Usage("the collector was lost on the way".into()))?;
        Ok(tapped.finish(report))
    }

    /// One batch, its results handed to `tap` as they are written.
    fn run_tapped(
        mut self,
        shutdown: &Shutdown,
        out: Box<dyn Write + Send>,
        tap: Option<Box<dyn collector::Tap>>,
    ) -> Result<(Report, Option<Box<dyn collector::Tap>>), Error> {
        let resumed = self.resumed.take();
        let Some(feedback) = &self.feedback else {
            return Err(Error::Usage(
                "a classic sink has no batch to collect".into(),
            ));
        };
        if self.config.serve {
            return Err(Error::Usage(
                "this sink was bound with --serve: call Sink::serve".into(),
            ));
        }
        let report = collect(&self, feedback, resumed, shutdown, out, tap);
        if !report.as_ref().is_ok_and(|(r, _)| r.complete) {
            // Stopped early: nothing queued (STATUS for a ventilator that is
            // gone) is worth waiting for.
            for s in [&self.results, &self.control, feedback] {
                let _ = s.set_linger(0);
            }
        }
        report
    }
}

impl Sink {
    /// A standing sink (`--serve`): collects batch after batch, each into
    /// `--output-dir`/BATCH.jsonl with its report beside it, until
    /// `shutdown`; then publishes KILL, so every worker of the pool exits.
    pub fn serve(self, shutdown: &Shutdown) -> Result<Served, Error> {
        let (Some(feedback), Some(dir)) = (&self.feedback, &self.config.output_dir) else {
            return Err(Error::Usage(
                "Sink::serve needs a sink bound with --serve --output-dir".into(),
            ));
        };
        let served = serve_batches(
            &self.config,
            self.metrics.as_ref().map(|m| &m.metrics),
            dir,
            &self.results,
            &self.control,
            feedback,
            shutdown,
        );
        for s in [&self.results, &self.control, feedback] {
            let _ = s.set_linger(0);
        }
        served
    }
}

/// What a standing sink did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Served {
    /// Batches collected whole.
    pub batches: u64,
    /// The report of the batch that was being collected when the sink was
    /// stopped, if one was.
    pub cut_short: Option<Report>,
}

/// Binds and runs a standing sink (see [`Sink::serve`]).
pub fn serve(config: &Config, ctx: &zmq::Context, shutdown: &Shutdown) -> Result<Served, Error> {
    Sink::bind(config, ctx)?.serve(shutdown)
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

/// Binds and runs a sink for one batch whose results `collector` sees
/// (see [`Sink::run_with`] and [`Collector`]).
pub fn run_with<C: Collector>(
    config: &Config,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
    out: Box<dyn Write + Send>,
    collector: C,
) -> Result<Collected<C::Output>, Error> {
    Sink::bind(config, ctx)?.run_with(shutdown, out, collector)
}

/// The collecting loop of `sink` (its `feedback` ROUTER given apart, as
/// there is one): until every result of the batch is in, or `shutdown`.
fn collect(
    sink: &Sink,
    feedback: &zmq::Socket,
    resumed: Option<Resumed>,
    shutdown: &Shutdown,
    out: Box<dyn Write + Send>,
    tap: Option<Box<dyn collector::Tap>>,
) -> Result<(Report, Option<Box<dyn collector::Tap>>), Error> {
    let (config, results, control) = (&sink.config, &sink.results, &sink.control);
    let metrics = sink.metrics.as_ref().map(|m| &m.metrics);
    let resuming = resumed.as_ref().map(|r| (r.batch, config.output.as_path()));
    let link = VentilatorLink::new(rand::random(), config.max_tasks, resuming, Instant::now());
    let workers = Workers::new(config.worker_timeout);
    let mut c = Collecting::new(config, link, workers, None, metrics);
    c.resumed = resumed;
    c.out = Output::new(out, config.ordered);
    c.out.set_tap(tap);
    c.output_name = (config.output.as_os_str() != "-").then(|| where_is(&config.output));
    let mut frames = Vec::new();
    c.collect(results, feedback, &mut frames, shutdown)?;
    if c.is_complete() {
        c.finish(control, results, feedback, &mut frames, shutdown)?;
    }
    let report = c.end_batch()?;
    Ok((report, c.out.take_tap()))
}

/// The standing sink's loop: one collector a batch, the workers kept from
/// one to the next; on `shutdown`, KILL to the pool.
fn serve_batches(
    config: &Config,
    metrics: Option<&metrics::Metrics>,
    dir: &Path,
    results: &zmq::Socket,
    control: &zmq::Socket,
    feedback: &zmq::Socket,
    shutdown: &Shutdown,
) -> Result<Served, Error> {
    // One instance for the sink's whole life: a ventilator takes a new one
    // for a restarted sink, which must be told the batch again.
    let instance: u64 = rand::random();
    let mut workers = Workers::new(config.worker_timeout);
    let mut served = Served::default();
    let mut frames = Vec::new();
    let mut next_start: Option<Vec<Vec<u8>>> = None;
    log::info!(
        "sink serving batch after batch into {} (--serve)",
        dir.display()
    );
    loop {
        workers.new_batch(Instant::now());
        let link = VentilatorLink::new(instance, config.max_tasks, None, Instant::now());
        let mut c = Collecting::new(config, link, workers, Some(dir.to_owned()), metrics);
        if let Some(start) = next_start.take() {
            let start: Vec<zmq::Message> =
                start.iter().map(|f| zmq::Message::from(&f[..])).collect();
            c.on_feedback_socket(feedback, &start)?;
        }
        c.collect(results, feedback, &mut frames, shutdown)?;
        let complete = c.is_complete();
        if complete {
            c.finish(control, results, feedback, &mut frames, shutdown)?;
        }
        let hex = c.batch.as_ref().map(|b| b.hex().to_owned());
        next_start = c.next_start.take();
        let taken = std::mem::replace(&mut c.workers, Workers::new(config.worker_timeout));
        let report = c.end_batch()?;
        workers = taken;
        if let Some(hex) = &hex {
            let path = dir.join(format!("{hex}.report.json"));
            common::report::write_json_file(&path, &report)
                .map_err(|source| Error::OpenOutput { path, source })?;
            log::info!(
                "batch {hex}: {} ok, {} failed of {} in {:.1} ms; report in {}",
                report.ok,
                report.failed,
                report.tasks,
                report.elapsed_ms,
                dir.join(format!("{hex}.report.json")).display()
            );
        }
        if complete {
            served.batches += 1;
        }
        if shutdown.is_triggered() {
            if hex.is_some() && !complete {
                served.cut_short = Some(report);
            }
            finish::kill_pool(control);
            return Ok(served);
        }
    }
}

/// A results file as DONE names it: this host and the absolute path.
fn where_is(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!("{}:{}", common::hostname(), abs.display())
}

/// What the loop keeps: one field per room, and the routes between them.
struct Collecting {
    link: VentilatorLink,
    workers: Workers,
    batch: Option<Batch>,
    /// What `--resume` read back, until its batch is announced.
    resumed: Option<Resumed>,
    /// Results that came before any batch was announced.
    early: Early,
    /// How long nothing has come: said at a steady rate.
    quiet: quiet::Quiet,
    out: Output,
    drops: Drops,
    timings: Timings,
    clock: Coarse,
    /// On a terminal, once GO came.
    progress: Option<indicatif::ProgressBar>,
    /// `--serve`: each batch's results go to a file of its own here.
    serve_dir: Option<PathBuf>,
    /// Where the results are written, as DONE says it.
    output_name: Option<String>,
    /// Push workers that said BYE, for the ventilator to hear of.
    leaving: Vec<WorkerInfo>,
    /// `--serve`: a START that came while the last batch was finishing.
    next_start: Option<Vec<Vec<u8>>>,
    /// `--metrics`: what this collector tells them.
    metrics: Option<metrics::Observer>,
}

/// Builds the link's [`View`] from the collector's fields (a macro, so the
/// link can be borrowed mutably beside them).
macro_rules! view {
    ($c:expr, $now:expr) => {
        View {
            batch: $c.batch.as_ref(),
            workers: &$c.workers,
            now: $now,
        }
    };
}

impl Collecting {
    /// A collector before any batch: results go nowhere until one is
    /// announced (one batch's sink sets its output first).
    fn new(
        config: &Config,
        link: VentilatorLink,
        workers: Workers,
        serve_dir: Option<PathBuf>,
        metrics: Option<&metrics::Metrics>,
    ) -> Collecting {
        let metrics = metrics.map(metrics::Observer::new);
        let mut drops = Drops::default();
        if let Some(m) = &metrics {
            drops.count_into(m.dropped());
        }
        Collecting {
            link,
            workers,
            batch: None,
            resumed: None,
            early: Early::default(),
            quiet: quiet::Quiet::new(Instant::now()),
            out: Output::new(Box::new(std::io::sink()), config.ordered),
            drops,
            timings: Timings::default(),
            // One clock reading serves 16 messages received back to back
            // (and every result packed in each): latency needs no fresher
            // clock.
            clock: Coarse::new(16),
            progress: None,
            serve_dir,
            output_name: None,
            leaving: Vec::new(),
            next_start: None,
            metrics,
        }
    }

    /// Polls and routes until every result of the batch is in, or
    /// `shutdown`; then acknowledges what is written.
    fn collect(
        &mut self,
        results: &zmq::Socket,
        feedback: &zmq::Socket,
        frames: &mut Vec<zmq::Message>,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        while !shutdown.is_triggered() && !self.is_complete() {
            {
                let mut items = [
                    results.as_poll_item(zmq::POLLIN),
                    feedback.as_poll_item(zmq::POLLIN),
                ];
                let wait = self.link.poll_timeout(Instant::now()).as_millis() as i64;
                match zmq::poll(&mut items, wait) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(zmq::Error::ETERM) => break,
                    Err(e) => return Err(common::Error::zmq("polling", e).into()),
                }
            }
            // Drain results in a burst: no poll per message while they flow.
            self.clock.refresh();
            for _ in 0..10_000 {
                match sockets::recv_frames_now(results, frames)? {
                    Recv::Message(()) => self.on_results_socket(frames)?,
                    Recv::Timeout | Recv::Stopped => break,
                }
                if self.is_complete() {
                    break;
                }
            }
            while let Recv::Message(()) = sockets::recv_frames_now(feedback, frames)? {
                self.on_feedback_socket(feedback, frames)?;
            }
            self.tick(feedback, Instant::now())?;
        }
        self.link
            .send_acks(feedback, &mut self.out, self.batch.as_ref())?;
        Ok(())
    }

    /// Writes out what is held back and builds the batch's report.
    fn end_batch(&mut self) -> Result<Report, Error> {
        self.out.finish()?;
        if let Some(p) = &self.progress {
            p.finish_and_clear();
        }
        if let Some(m) = &mut self.metrics {
            m.ended(self.batch.as_ref(), &self.workers);
        }
        Ok(report::build(
            self.batch.as_ref(),
            &self.workers,
            &self.drops,
            &self.timings,
            Instant::now(),
        ))
    }

    /// `--serve`: a batch was announced; its results go to DIR/BATCH.jsonl,
    /// carrying on from what is already there.
    fn open_batch_output(&mut self, dir: &Path, batch: u64) -> Result<(), Error> {
        let path = dir.join(format!("{batch:016x}.jsonl"));
        self.resumed = output::read_back(&path)?;
        if let Some(r) = &self.resumed {
            log::info!(
                "batch {batch:016x}: {} results already in {}: carrying on from them",
                r.len(),
                path.display()
            );
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::OpenOutput {
                path: path.clone(),
                source,
            })?;
        self.out = Output::new(Box::new(std::io::BufWriter::new(file)), false);
        self.output_name = Some(where_is(&path));
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.batch.as_ref().is_some_and(Batch::is_complete)
    }

    /// A message on the feedback ROUTER: the link answers, the loop does
    /// what it is told.
    fn on_feedback_socket(
        &mut self,
        feedback: &zmq::Socket,
        frames: &[zmq::Message],
    ) -> Result<(), Error> {
        // A ROUTER puts the peer's routing id first.
        let Some((identity, rest)) = frames.split_first() else {
            return Ok(());
        };
        let Some(message) = self.drops.decode(rest, "feedback", VentilatorLink::takes) else {
            return Ok(());
        };
        let now = Instant::now();
        let event =
            self.link
                .on_message(feedback, &mut self.out, identity, message, view!(self, now));
        match event {
            None => {}
            Some(Event::Dropped(reason, detail)) => self.drops.note("feedback", reason, detail),
            Some(Event::Announced(info)) => {
                if let Some(dir) = self.serve_dir.clone() {
                    self.open_batch_output(&dir, info.batch)?;
                }
                let mut batch = Batch::new(info, self.resumed.take());
                batch.set_output(self.output_name.clone());
                if let Some(m) = &self.metrics {
                    m.announced(&batch);
                }
                self.batch = Some(batch);
                // Results that came first go in before the ventilator hears
                // what we hold, so that it does not send them again.
                let early = self.early.take();
                if !early.is_empty() {
                    log::info!(
                        "{} result(s) that came before the batch was announced go in now",
                        early.len()
                    );
                }
                for (batch, item, from, at) in early {
                    self.on_result(batch, item, from, at)?;
                }
                self.link
                    .welcome(feedback, &mut self.out, identity, view!(self, now));
            }
            Some(Event::Go) => {
                if let Some(b) = &mut self.batch
                    && b.go(now)
                {
                    self.workers.batch_started(now);
                    self.progress = progress_bar(b);
                }
            }
            Some(Event::Verdict { batch, result }) => {
                // Placed on the timeline when it came (verdicts are rare:
                // a fresh clock reading each).
                self.on_result(batch, result, Source::Ventilator, common::now_micros())?;
            }
        }
        Ok(())
    }

    /// What is due between messages: lost workers said, STATUS and ACKs,
    /// the output flushed.
    fn tick(&mut self, feedback: &zmq::Socket, now: Instant) -> Result<(), Error> {
        for info in self
            .workers
            .newly_lost(now)
            .into_iter()
            .chain(self.leaving.drain(..))
        {
            self.link.worker_lost(feedback, &info, self.batch.as_ref());
        }
        self.link.tick(feedback, &mut self.out, view!(self, now))?;
        self.out.flush_if_due(now)?;
        self.say_what_it_waits_for(now);
        if let Some(m) = &mut self.metrics {
            m.tick(self.batch.as_ref(), &self.workers, now);
        }
        Ok(())
    }

    /// While nothing comes, says at a steady rate what the sink waits for
    /// and how to end the wait.
    fn say_what_it_waits_for(&mut self, now: Instant) {
        let ready = self.workers.alive(now);
        match &self.batch {
            None => {
                if let Some(quiet) = self.quiet.due(0, now, quiet::IDLE_EVERY) {
                    log::info!(
                        "no batch for {:.0?}: waiting for a ventilator to announce one ({ready} worker(s) ready; SIGTERM or Ctrl-C stops the sink)",
                        Duration::from_secs(quiet.as_secs())
                    );
                }
            }
            Some(b) if b.has_started() && !b.is_complete() => {
                let count = b.received().count();
                if let Some(quiet) = self.quiet.due(count, now, quiet::STALL_EVERY) {
                    log::warn!(
                        "batch {}: {count} of {} results, none for {:.0?}: waiting for the rest ({ready} worker(s) ready; a ventilator that stopped can be started again with --resume; Ctrl-C writes what came and stops)",
                        b.hex(),
                        b.info().tasks,
                        Duration::from_secs(quiet.as_secs())
                    );
                }
            }
            Some(_) => {}
        }
    }
}

/// The progress bar, on a terminal only: made when GO starts the clock.
fn progress_bar(batch: &Batch) -> Option<indicatif::ProgressBar> {
    let template = "{bar:40} {pos}/{len} tasks {per_sec} eta {eta}";
    let p = common::cli::progress_bar(batch.info().tasks, template)?;
    p.set_position(batch.received().count());
    Some(p)
}
