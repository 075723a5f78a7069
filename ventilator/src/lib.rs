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
//! - **credit** (the default; ROUTER/DEALER): each worker thread's DEALER
//!   tells the ROUTER how many tasks it can take (CREDIT) and asks again as
//!   it finishes; the ventilator gives the next ready task to a thread with
//!   free credit, so the least busy worker gets it, and it records which
//!   thread holds which task. This is the guide's load-balancing broker
//!   with Paranoid Pirate heartbeats: a worker not heard from for
//!   `--liveness` heartbeats is dead, and the tasks it held go out again at
//!   once. Works through a `queue` device (ROUTER/DEALER).
//! - **push** (PUSH/PULL): the guide's way. The PUSH deals round-robin to
//!   the workers connected when it sends, blind to how long tasks take and
//!   to who holds what; when the sink reports a worker lost, every
//!   unacknowledged task goes out again. Works through a `streamer` device
//!   (PULL/PUSH).
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
//! **Task kinds.** Each task has a kind (see [`common::kinds`]), and each
//! worker says which kinds it serves. In credit dispatch a task goes only
//! to a thread whose worker serves its kind ([`credit`]); a kind that no
//! ready worker serves waits, named in the log every few seconds, while
//! the others go on; `--workers-for KIND=N` holds GO until N ready workers
//! serve KIND. A PUSH cannot choose ([`push`]): a batch of more than one
//! kind is refused, and a batch of one kind starts only once every ready
//! worker serves it.
//!
//! **No task lost.** The ventilator keeps every task (see [`ledger`]) until
//! the sink acknowledges its result (ACK, as ranges). A task whose worker
//! died, or whose lease (`--task-timeout`) ran out, goes out again with its
//! attempt raised; after `--retries` re-sends it is given up and the sink is
//! told so, with why (GIVEN_UP). The batch id is a fingerprint of the tasks
//! ([`Plan::fingerprint`]), so a restarted sink (or a restarted
//! ventilator, `--resume`) recognises the batch; whenever the sink is new,
//! it tells us everything it holds and we send the rest.
//!
//! **High-water mark.** A thread's credit never exceeds `--hwm` messages'
//! worth of full packs (and a worker asks for no more than `--hwm` messages
//! of the size it has been sent); a pipe that is full all the same (threads
//! behind one queue device share one, or packs came smaller) is tried again
//! a millisecond later, and a full PUSH when it can take more, while acks
//! and heartbeats keep flowing.
//!
//! **Shutdown.** The [`Shutdown`] flag (SIGINT, SIGTERM) stops the loop
//! within 100 ms; sockets close with linger 0, since nothing queued matters
//! once we stop (only a BYE after DONE gets half a second to leave).
//!
//! # Layout
//!
//! One file per conversation; each keeps its own state in a small type that
//! the poll loop feeds decoded messages and that answers with events, so
//! each is unit-tested without sockets.
//!
//! - `lib.rs`: [`Ventilator`] (the sockets, [`Ventilator::run_plan`]) and
//!   the poll loop, which only routes messages to the conversations below
//!   and applies their events to the ledger and the roster.
//! - [`sink_link`]: how the sink link is kept in step: START and its
//!   repetition, STATUS, the ACK snapshot, GO, ACK updates, WORKER_LOST,
//!   DONE and BYE, sink restarts, the resync when ACKs were lost, GIVEN_UP,
//!   the `--resume` check on a snapshot; its phase is one enum.
//! - [`credit`]: where credit dispatch lives: the roster of worker threads
//!   (what each CREDIT, HELLO, HEARTBEAT or BYE means and whether it is
//!   answered; credit, routes, liveness by heartbeats) and the dealing of
//!   TASK/TASKS to whoever has credit.
//! - [`push`]: push dispatch: the PUSH round-robin and its window, and what
//!   goes out again when the sink loses a worker.
//! - [`ledger`]: the book of tasks: who holds what, leases, re-sends, acks,
//!   given-up tasks.
//! - [`plan`]: dependencies and stages, checked before anything is sent;
//!   the batch's fingerprint.
//! - [`input`]: generated batches and input files.
//! - [`source`]: a batch made by your code ([`Source`], [`Task`],
//!   [`Ventilator::run_source`]): an iterator, or a producer asked until it
//!   has no more; what the batch id and `--resume` mean for it.
//! - `metrics.rs`: `--metrics`: the ventilator's Prometheus metrics,
//!   copied from the ledger's, the roster's and the report's counts every
//!   100 ms (nothing per task); served by [`common::metrics`] while the
//!   [`Ventilator`] lives.
//! - `config.rs`: the flags ([`Config`]); `error.rs`: [`Error`];
//!   `report.rs`: [`Report`].
//! - `live.rs`: the live line on a terminal (sent, acknowledged, in
//!   flight, re-sent, workers ready), the sink's progress bar's
//!   counterpart.
//! - `classic.rs`: the guide's taskvent for `--classic`.
//!
//! (The worker heartbeats live in [`credit`] rather than a file of their
//! own: in credit dispatch they come on the same ROUTER as CREDIT, from the
//! same workers, and liveness only matters for who may hold credit. In push
//! dispatch the sink hears the workers and says who is lost.)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod classic;
mod config;
pub mod credit;
mod error;
pub mod input;
pub mod ledger;
mod live;
mod metrics;
pub mod packer;
pub mod plan;
pub mod push;
mod report;
pub mod sink_link;
pub mod source;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::drops::Drops;
use common::protocol::{self, BatchDone, BatchInfo, Dispatch, WorkerInfo};
use common::sockets::{self, HandshakeWatch, Recv, Refusals};
use common::work::Work;
use common::{Action, Shutdown};

pub use config::{Config, KindNeed};
pub use error::Error;
pub use ledger::Order;
pub use plan::Plan;
pub use report::Report;
pub use report::exit;
pub use source::{Source, Task};

use credit::{Dealer, Roster};
use ledger::Ledger;
use live::LiveLine;
use push::Push;
use sink_link::{Feedback, SinkLink};

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
    /// The sink refusing our feedback socket's handshake, in words.
    refusals: Option<Refusals>,
    bound: Vec<String>,
    /// `--metrics`: the handles, and the server, stopped when the
    /// ventilator is dropped (when [`Ventilator::run_plan`] returns).
    metrics: Option<common::metrics::Exported<metrics::Metrics>>,
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
        let mut refusals = None;
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
            let sink = format!("the sink at {}", config.feedback_endpoint);
            refusals = Some(Refusals::new(ctx, &feedback, sink)?);
            feedback
        };
        if config.classic && config.metrics.metrics.is_some() {
            return Err(Error::Usage(
                "--classic speaks the guide's wire format, which has no batches to measure: drop --metrics".into(),
            ));
        }
        let metrics = config
            .metrics
            .start("ventilator", metrics::Metrics::register)?;
        Ok(Ventilator {
            config,
            tasks,
            feedback,
            watch,
            refusals,
            bound,
            metrics,
        })
    }

    /// The task endpoints as bound (a `tcp://127.0.0.1:*` comes back with its
    /// real port).
    pub fn bound(&self) -> &[String] {
        &self.bound
    }

    /// Where `--metrics` serves (a port 0 comes back as the real one).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }

    /// Runs one batch of `tasks` without dependencies (see
    /// [`Ventilator::run_plan`]).
    pub fn run(self, tasks: &[Work], shutdown: &Shutdown) -> Result<Report, Error> {
        self.run_plan(&Plan::from(tasks.to_vec()), shutdown)
    }

    /// Runs one batch whose tasks `source` makes (see [`source`] for when
    /// it is called, and what the batch id and `--resume` mean for it).
    pub fn run_source(self, source: impl Source, shutdown: &Shutdown) -> Result<Report, Error> {
        let plan = source::plan(source, self.config.max_task_bytes())?;
        log::info!(
            "the source gave {} tasks: batch {:016x}",
            plan.len(),
            plan.fingerprint()
        );
        self.run_plan(&plan, shutdown)
    }

    /// Runs one batch: waits for the sink and the workers, deals every task,
    /// sends again what is lost, and waits for the sink's DONE (or
    /// `shutdown`).
    ///
    /// The plan's dependencies are checked here ([`Plan::check`]), once,
    /// before anything is sent: every batch comes through this door, the
    /// binary's ([`Config::load_tasks`], which only reads) and a library
    /// user's plan built by hand alike, so no plan reaches the ledger
    /// unchecked, and none is checked twice.
    pub fn run_plan(mut self, plan: &Plan, shutdown: &Shutdown) -> Result<Report, Error> {
        if plan.is_empty() {
            return Err(Error::Usage("the batch is empty".into()));
        }
        plan.check()?;
        let (kinds, _) = plan.kind_table().map_err(Error::Usage)?;
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
        if self.config.dispatch == Dispatch::Push && kinds.len() > 1 {
            return Err(Error::Usage(format!(
                "push dispatch cannot route task kinds, and this batch has {} ({}): a PUSH deals round-robin to every worker connected, so tasks would reach workers that do not serve them. Use --dispatch credit (the default), which deals each task only to a worker that serves its kind, or send one batch per kind",
                kinds.len(),
                kinds.join(", ")
            )));
        }
        let watch = self.watch.take();
        let metrics = self.metrics.as_ref().map(|m| &m.metrics);
        let mut batch = Batch::new(&self.config, plan, &self.tasks, &self.feedback, watch);
        batch.refusals = self.refusals.take();
        batch.observe(metrics);
        let report = batch.run(shutdown);
        if let Some(w) = batch.watch.take() {
            w.stop(&self.tasks);
        }
        if let Some(r) = batch.refusals.take() {
            r.stop(&self.feedback);
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

/// Binds and runs one batch whose tasks `source` makes (see
/// [`Ventilator::run_source`]).
pub fn run_source(
    config: &Config,
    source: impl Source,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    Ventilator::bind(config, ctx)?.run_source(source, shutdown)
}

/// How long a peer may stay connected without completing the handshake
/// before we say it cannot be a worker of our dispatch mode.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(3);

/// How tasks leave, by `--dispatch`.
enum Dealing {
    /// ROUTER: the roster of worker threads (boxed: the larger part),
    /// and the dealer.
    Credit { roster: Box<Roster>, dealer: Dealer },
    /// PUSH: round-robin within the window.
    Push(Push),
}

/// One batch on its way: the poll loop and what it routes to.
struct Batch<'a> {
    config: &'a Config,
    plan: &'a Plan,
    ledger: Ledger<'a>,
    /// The batch id in hex, for the log.
    hex: String,
    /// ROUTER or PUSH (see [`Ventilator`]).
    tasks: &'a zmq::Socket,
    /// The DEALER to the sink, and what we send on it.
    feedback: Feedback<'a>,
    link: SinkLink,
    dealing: Dealing,
    watch: Option<HandshakeWatch>,
    /// The sink refusing the feedback socket, in words.
    refusals: Option<Refusals>,
    report: Report,
    drops: Drops,
    /// The workers were ready once: dealing may begin.
    started: bool,
    /// When GO first went (the report's send time, a lost DONE's elapsed).
    sending_since: Option<Instant>,
    /// Received frames, reused.
    frames: Vec<zmq::Message>,
    /// On a terminal: where the batch stands, redrawn every tick.
    live: LiveLine,
    /// `--metrics`: what this batch tells them.
    metrics: Option<metrics::Observer>,
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
        let ledger = Ledger::new(plan, config.order, config.task_timeout, config.retries);
        let dealing = match config.dispatch {
            Dispatch::Credit => {
                let mut roster = Roster::new(config.sockets.hwm, config.heartbeat, config.liveness);
                roster.set_kinds(ledger.kind_names());
                let cap = roster.cap();
                Dealing::Credit {
                    roster: Box::new(roster),
                    dealer: Dealer::new(batch, cap),
                }
            }
            Dispatch::Push => Dealing::Push(Push::new(batch, config.window)),
        };
        Batch {
            config,
            plan,
            ledger,
            report: Report::new(hex.clone(), config.dispatch, info.tasks),
            hex,
            tasks,
            feedback: Feedback::new(feedback, batch),
            link: SinkLink::new(info, Instant::now()),
            dealing,
            watch,
            refusals: None,
            drops: Drops::default(),
            started: false,
            sending_since: None,
            frames: Vec::new(),
            live: LiveLine::new(plan.len() as u64),
            metrics: None,
        }
    }

    /// Tells `metrics` (`--metrics`) about this batch from now on.
    fn observe(&mut self, metrics: Option<&metrics::Metrics>) {
        let Some(m) = metrics else { return };
        let observer = metrics::Observer::new(m, &self.hex, self.ledger.tasks());
        self.drops.count_into(observer.dropped());
        self.metrics = Some(observer);
    }

    /// Copies the loop's counts into the metrics (every 100 ms, and at the
    /// end).
    fn update_metrics(&mut self) {
        let (workers_ready, threads_ready) = self.ready();
        let Some(m) = &mut self.metrics else { return };
        m.update(metrics::Counts {
            sent: self.report.sent,
            resent: self.ledger.resent,
            given_up: self.ledger.given_up,
            acknowledged: self.ledger.done(),
            workers_lost: self.report.workers_lost,
            workers_ready: workers_ready as u64,
            threads_ready,
            in_flight: self.ledger.out(),
        });
    }

    fn run(&mut self, shutdown: &Shutdown) -> Result<Report, Error> {
        log::info!(
            "batch {}: {} tasks on {} ({} dispatch); waiting for {} worker(s)",
            self.hex,
            self.ledger.tasks(),
            self.config.task_endpoint,
            self.config.dispatch.as_str(),
            self.config.workers
        );
        let began = Instant::now();
        let mut next_tick = Instant::now();
        let mut next_log = Instant::now() + Duration::from_secs(5);
        while !shutdown.is_triggered()
            && self.report.done.is_none()
            && self.report.sink_silent_ms.is_none()
        {
            let now = Instant::now();
            if let Some(start) = self.link.start_due(now) {
                self.feedback.start(start);
            }
            if !self.started && self.link.in_step() {
                self.start_when_ready(began)?;
            }
            if !self.started && began.elapsed() >= self.config.wait {
                return Err(if self.link.heard() {
                    Error::NoWorkers {
                        endpoint: self.config.task_endpoint.to_string(),
                        waited: self.config.wait,
                    }
                } else {
                    Error::NoSink {
                        endpoint: self.config.feedback_endpoint.to_string(),
                        waited: self.config.wait,
                        refused: self
                            .refusals
                            .as_ref()
                            .and_then(|r| r.last())
                            .map(|why| format!(" (it refused this ventilator: {why})"))
                            .unwrap_or_default(),
                    }
                });
            }
            if self.link.go_due(self.started) {
                // GO first: the sink starts its clock as the first task leaves.
                self.feedback.go(|| !shutdown.is_triggered())?;
                self.link.go_sent();
                self.sending_since.get_or_insert_with(Instant::now);
            }
            if self.link.knows_batch() {
                self.feedback.verdicts(&mut self.ledger.owed);
            }
            if self.started && self.link.in_step() {
                self.deal()?;
            }
            if now >= next_tick {
                next_tick = now + Duration::from_millis(100);
                self.tick(now)?;
                self.live.show(&self.counts(), began.elapsed());
            }
            if now >= next_log {
                next_log = now + Duration::from_secs(5);
                self.log_progress(began);
            }
            self.wait_and_read()?;
        }
        if let Some(t) = self.sending_since {
            self.report.send_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
        self.report.resent = self.ledger.resent;
        self.report.given_up = self.ledger.given_up;
        self.report.count_drops(&self.drops);
        self.update_metrics();
        Ok(self.report.clone())
    }

    /// Starts dealing once `--workers` are ready, and for each
    /// `--workers-for KIND=N` N workers that serve KIND (or some are, after
    /// `--wait`). In push dispatch only workers that serve the batch's kind
    /// count, and none may be ready that does not (a PUSH would deal it
    /// tasks): after `--wait`, that is an error.
    fn start_when_ready(&mut self, began: Instant) -> Result<(), Error> {
        let ready = self.ready_workers();
        let waited = began.elapsed();
        let (short, wrong) = self.kinds_short();
        let held = ready < self.config.workers || !short.is_empty() || !wrong.is_empty();
        if held && (waited < self.config.wait || ready == 0) {
            return Ok(());
        }
        if !wrong.is_empty() {
            return Err(Error::KindUnserved(format!(
                "push dispatch: {} after {:?}; a PUSH would deal them this batch's tasks. Stop them, or use --dispatch credit",
                wrong.join("; "),
                self.config.wait
            )));
        }
        if !short.is_empty() {
            log::warn!(
                "after {:?}, {}: starting all the same; tasks of a kind no ready worker serves wait for one",
                self.config.wait,
                short.join("; ")
            );
        }
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
        self.log_unserved();
        Ok(())
    }

    /// What the task kinds still wait for before GO: `--workers-for` needs
    /// not met ("kind primes: 0 of 1 workers"); and in push dispatch, the
    /// ready workers that do not serve the batch's one kind.
    fn kinds_short(&self) -> (Vec<String>, Vec<String>) {
        let mut short = Vec::new();
        let mut wrong = Vec::new();
        let serving = |kind: &str| match &self.dealing {
            Dealing::Credit { roster, .. } => roster.ready_serving(kind),
            Dealing::Push(_) => push::unserved(kind, self.link.sink_ready_kinds()).1,
        };
        for need in &self.config.workers_for {
            let have = serving(&need.kind);
            if have < need.workers {
                short.push(format!(
                    "kind {}: {have} of {} workers",
                    need.kind, need.workers
                ));
            }
        }
        if let (Dealing::Push(_), [kind]) = (&self.dealing, self.ledger.kind_names()) {
            let (not, _) = push::unserved(kind, self.link.sink_ready_kinds());
            if !not.is_empty() {
                wrong.push(format!(
                    "worker(s) {} do not serve kind {kind}, this batch's",
                    not.join(", ")
                ));
            }
        }
        (short, wrong)
    }

    /// Credit dispatch, once started: names each kind whose tasks are
    /// ready and that no ready worker serves (called every few seconds).
    fn log_unserved(&self) {
        let Dealing::Credit { roster, .. } = &self.dealing else {
            return;
        };
        let names = self.ledger.kind_names();
        let all = if names.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << names.len()) - 1
        };
        let served = roster.served();
        if served & all == all || !self.ledger.has_ready() {
            return;
        }
        let ready = self.ledger.ready_by_kind();
        for (i, kind) in names.iter().enumerate() {
            if served & (1 << i) == 0 && ready[i] > 0 {
                log::warn!(
                    "batch {}: {} task(s) of kind {kind} wait: no ready worker serves {kind} (start one with --kinds {kind}, or a handler whose kinds() names it); the other kinds go on",
                    self.hex,
                    ready[i]
                );
            }
        }
    }

    /// Workers ready and their threads: as we hear them (credit dispatch),
    /// or as the sink does (push).
    fn ready(&self) -> (usize, u64) {
        match &self.dealing {
            Dealing::Credit { roster, .. } => (roster.ready(), roster.ready_threads()),
            Dealing::Push(_) => (self.link.sink_ready(), self.link.sink_ready_threads()),
        }
    }

    fn ready_workers(&self) -> usize {
        self.ready().0
    }

    /// What the live line shows.
    fn counts(&self) -> live::Counts {
        let (workers, threads) = self.ready();
        live::Counts {
            sink_heard: self.link.knows_batch(),
            started: self.started,
            sent: self.report.sent,
            acked: self.ledger.done(),
            in_flight: self.ledger.out(),
            resent: self.ledger.resent,
            workers,
            wanted: self.config.workers,
            threads,
        }
    }

    fn log_progress(&self, began: Instant) {
        let silent = self.link.silent_for(Instant::now()).unwrap_or_default();
        if self.link.knows_batch() && silent >= Duration::from_secs(5) {
            log::warn!(
                "batch {}: the sink at {} has said nothing for {:.0?}: restart it (with --resume for the same output) or stop with Ctrl-C; once every task has gone out, the ventilator stops waiting after --sink-timeout {}",
                self.hex,
                self.config.feedback_endpoint,
                silent,
                humantime::format_duration(self.config.sink_timeout)
            );
        }
        if !self.link.knows_batch() {
            log::info!("waiting for the sink at {}", self.config.feedback_endpoint);
        } else if !self.started {
            let (short, wrong) = self.kinds_short();
            let kinds: String = short
                .iter()
                .chain(&wrong)
                .map(|s| format!("; {s}"))
                .collect();
            log::info!(
                "waiting for workers: {} of {} ready{kinds}",
                self.ready_workers(),
                self.config.workers
            );
        } else {
            self.log_unserved();
            log::info!(
                "batch {}: {} of {} acknowledged, {} out, {} re-sent, after {:.1?}",
                self.hex,
                self.ledger.done(),
                self.ledger.tasks(),
                self.ledger.out(),
                self.ledger.resent,
                began.elapsed()
            );
        }
    }

    fn deal(&mut self) -> Result<(), Error> {
        let plan = self.plan;
        self.report.sent += match &mut self.dealing {
            Dealing::Credit { roster, dealer } => {
                dealer.deal(roster, &mut self.ledger, self.tasks, plan)?
            }
            Dealing::Push(push) => {
                let limit = self.link.smallest_limit();
                let packs = self.link.push_packs();
                push.deal(&mut self.ledger, self.tasks, plan, limit, packs)?
            }
        };
        Ok(())
    }

    /// Every 100 ms: leases, dead workers, handshakes that never came, a
    /// DONE that never came.
    fn tick(&mut self, now: Instant) -> Result<(), Error> {
        self.ledger.expire(now);
        if let Some(r) = &mut self.refusals {
            r.check()?;
        }
        if let Dealing::Credit { roster, .. } = &mut self.dealing {
            for event in roster.expire(now) {
                apply_roster(&mut self.ledger, &mut self.report, event);
            }
        }
        // Stays here: it is about the task socket itself, in either dispatch
        // mode, before any conversation begins.
        if let Some(watch) = &mut self.watch {
            let stalled = watch.stalled()?;
            if stalled > 0 {
                let (other, socket, flag) = match self.config.dispatch {
                    Dispatch::Credit => (
                        "a PULL (a worker with --dispatch push, or a streamer)",
                        "ROUTER",
                        "credit",
                    ),
                    Dispatch::Push => (
                        "a DEALER (a worker with --dispatch credit, or a queue device)",
                        "PUSH",
                        "push",
                    ),
                };
                log::error!(
                    "{stalled} peer(s) connected to the task endpoint {} but never completed the ZMTP handshake: probably {other}, which cannot pair with this ventilator's {socket}. Start workers and ventilator with the same --dispatch (this one deals by {flag})",
                    self.config.task_endpoint,
                );
            }
        }
        let ledger = &self.ledger;
        let all_sent = || self.started && ledger.all_sent_once();
        if let Some(silent) = self.link.given_up(now, self.config.sink_timeout, all_sent) {
            log::error!(
                "batch {}: every task went out, then the sink at {} said nothing for {:.0?} (--sink-timeout): stopping; {} of {} results were acknowledged, and the sink may hold more (its output says; run again with --resume once it is back)",
                self.hex,
                self.config.feedback_endpoint,
                silent,
                self.ledger.done(),
                self.ledger.tasks()
            );
            self.report.sink_silent_ms = Some(silent.as_secs_f64() * 1000.0);
            return Ok(());
        }
        let all_acked = self.started && self.ledger.done() == self.ledger.tasks();
        if let Some(event) = self.link.tick(now, all_acked) {
            self.apply(event)?;
        }
        self.update_metrics();
        Ok(())
    }

    /// Polls the sockets for up to 20 ms (less when there is work to deal),
    /// then reads everything that arrived.
    fn wait_and_read(&mut self) -> Result<(), Error> {
        let ready = self.started && self.link.in_step() && self.ledger.has_ready();
        let (timeout, tasks_events) = match &self.dealing {
            Dealing::Credit { roster, dealer } => {
                let now = ready && roster.has_eligible() && !dealer.blocked() && !dealer.stuck();
                // A full pipe is tried again after a millisecond: POLLOUT
                // would not do, as a ROUTER is writable while any of its
                // pipes has room, and the loop would spin.
                let timeout = if now {
                    0
                } else if dealer.blocked() {
                    1
                } else {
                    20
                };
                (timeout, zmq::POLLIN)
            }
            Dealing::Push(push) => {
                let can_deal = ready && push.window_open(self.ledger.out());
                (
                    20,
                    if can_deal || push.pending() {
                        zmq::POLLOUT
                    } else {
                        zmq::PollEvents::empty()
                    },
                )
            }
        };
        {
            let mut items = [
                self.feedback.socket().as_poll_item(zmq::POLLIN),
                self.tasks.as_poll_item(tasks_events),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) | Err(zmq::Error::ETERM) => {}
                Err(e) => return Err(common::Error::zmq("polling", e).into()),
            }
        }
        let mut frames = std::mem::take(&mut self.frames);
        let r = self.read(&mut frames);
        self.frames = frames;
        r
    }

    /// Reads what has arrived: a bounded number of messages, so that
    /// neither socket starves the other or the dealing.
    fn read(&mut self, frames: &mut Vec<zmq::Message>) -> Result<(), Error> {
        for _ in 0..1000 {
            match sockets::recv_frames_now(self.feedback.socket(), frames)? {
                Recv::Message(()) => self.on_feedback(frames)?,
                _ => break,
            }
        }
        if matches!(self.dealing, Dealing::Credit { .. }) {
            for _ in 0..10_000 {
                match sockets::recv_frames_now(self.tasks, frames)? {
                    Recv::Message(()) => self.on_worker_message(frames),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// A message from the sink: to the link, whose events are applied.
    fn on_feedback(&mut self, frames: &[zmq::Message]) -> Result<(), Error> {
        let Some(msg) = self
            .drops
            .decode(frames, "feedback", |k| sink_link::KINDS.contains(&k))
        else {
            return Ok(());
        };
        let mut events = Vec::new();
        self.link
            .on_message(msg, self.ledger.done(), Instant::now(), &mut events);
        events.into_iter().try_for_each(|e| self.apply(e))
    }

    /// Applies what the sink link says to the ledger, the roster and the
    /// report.
    fn apply(&mut self, event: sink_link::Event) -> Result<(), Error> {
        use sink_link::Event;
        match event {
            Event::Acked(acks) => {
                let unknown = self.ledger.ack(&acks.ok, &acks.failed);
                if unknown > 0 {
                    self.drops.note(
                        "feedback",
                        "unknown task",
                        format!("ACK of {unknown} task ids beyond the batch"),
                    );
                }
            }
            Event::Recounted(acks) => {
                self.ledger.ack(&acks.ok, &acks.failed);
            }
            Event::Snapshot(acks) => {
                self.link
                    .check_resume(&acks, self.started, self.config.resume)?;
                self.ledger.reconcile(&acks.ok, &acks.failed);
            }
            Event::Done(done) => {
                log::info!(
                    "batch {} done: {} ok, {} failed in {:.1} ms",
                    self.hex,
                    done.ok,
                    done.failed,
                    done.elapsed_ms
                );
                self.report.done = Some(done);
                self.feedback.bye();
            }
            Event::DoneLost => {
                log::warn!(
                    "batch {}: every result is acknowledged but no DONE came within {:?}: finishing",
                    self.hex,
                    sink_link::DONE_GRACE
                );
                let (ok, failed) = self.ledger.outcome_counts();
                self.report.done = Some(BatchDone {
                    batch: self.link.batch(),
                    ok,
                    failed,
                    elapsed_ms: self
                        .sending_since
                        .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0),
                    output: None,
                });
            }
            Event::WorkerLost(w) => self.worker_lost(&w),
            Event::Restarted => log::warn!(
                "the sink restarted: announcing batch {} again; what it lost goes out again",
                self.hex
            ),
            Event::Refused(why) => return Err(Error::Refused(why)),
            Event::Busy(other) => return Err(Error::SinkBusy(other)),
            Event::WrongDispatch(w) => self.drops.note(
                "feedback",
                "dispatch mismatch",
                format!(
                    "worker {} takes tasks by {}, this ventilator deals by credit: restart it with --dispatch credit",
                    w.name(),
                    w.dispatch.as_str()
                ),
            ),
            Event::Dropped { reason, detail } => self.drops.note("feedback", reason, detail),
        }
        Ok(())
    }

    /// The sink lost a worker: the roster decides (credit dispatch), or
    /// [`push::worker_lost`] (push dispatch).
    fn worker_lost(&mut self, w: &WorkerInfo) {
        match &mut self.dealing {
            Dealing::Credit { roster, .. } => {
                if let Some(event) = roster.sink_lost(w, Instant::now()) {
                    apply_roster(&mut self.ledger, &mut self.report, event);
                }
            }
            Dealing::Push(_) => {
                push::worker_lost(&mut self.ledger, self.link.batch(), w);
                self.report.workers_lost += 1;
            }
        }
    }

    /// A message on the ROUTER from a worker (credit dispatch): to the
    /// roster ([`Roster::on_message`]), whose answer is sent and whose
    /// events are applied to the ledger.
    fn on_worker_message(&mut self, frames: &[zmq::Message]) {
        let Dealing::Credit { roster, dealer } = &mut self.dealing else {
            return;
        };
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
        let Some(msg) = self
            .drops
            .decode(rest, "tasks", |k| credit::KINDS.contains(&k))
        else {
            // A worker of another protocol version waits for an answer it
            // can read: our HEARTBEAT's header tells it our version.
            let other_version = rest.first().is_some_and(|h| {
                h.starts_with(&protocol::MAGIC) && h.get(2) != Some(&protocol::VERSION)
            });
            if other_version {
                dealer.answer_heartbeat(self.tasks, route);
            }
            return;
        };
        let heard = roster.on_message(msg, route, Instant::now(), &mut self.drops);
        if heard.answer {
            dealer.answer_heartbeat(self.tasks, route);
        }
        if let Some(event) = heard.event {
            apply_roster(&mut self.ledger, &mut self.report, event);
        }
    }
}

/// Applies what the roster says to the ledger and the report.
fn apply_roster(ledger: &mut Ledger<'_>, report: &mut Report, event: credit::Event) {
    match event {
        credit::Event::Rerouted(thread) => {
            for t in ledger.held_by(Some(thread)) {
                ledger.requeue(t, "its worker thread reconnected", false);
            }
        }
        credit::Event::Dead { threads, why } => {
            report.workers_lost += 1;
            let held: Vec<u64> = threads
                .iter()
                .flat_map(|&thread| ledger.held_by(Some(thread)))
                .collect();
            log::warn!(
                "{why}: declared dead; its {} task(s) go out again",
                held.len()
            );
            for t in held {
                ledger.requeue(t, &why, true);
            }
        }
    }
}
