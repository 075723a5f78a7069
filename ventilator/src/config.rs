//! The ventilator's flags ([`Config`]), each also a `ZPIPE_*` variable, and
//! the batch they describe.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::Endpoints;
use common::protocol::Dispatch;

use crate::Error;
use crate::input;
use crate::ledger::Order;
use crate::plan::Plan;

/// The ventilator's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ventilator",
    version,
    about = "zpipe ventilator: waits for workers, deals a batch of tasks (by credit, or PUSH round-robin), re-sends what is lost, and waits for the sink's DONE",
    after_help = "Input lines: blank and # lines are skipped; {\"kind\":...} is a JSON task (sleep, primes, exec, noop, data) which may also carry \"id\", \"after\": [ids], \"stage\": N and \"cost\": N; any other line is a plain task (--plain). Without --input, --tasks tasks are generated.\n\nTask kinds: a task's kind is its \"kind\", or for a data task the \"type\" it may give ({\"kind\":\"data\",\"type\":\"resize\",\"data\":...}). In credit dispatch each task goes only to a worker that serves its kind (worker --kinds); a kind no ready worker serves waits, named in the log, and the others go on. In push dispatch a PUSH cannot choose its worker: a batch of more than one kind is refused (exit 2), and a batch of one kind starts only when every ready worker serves it."
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
    /// Task kinds: also wait for this many ready workers that serve KIND
    /// (`KIND=N`, e.g. `primes=2`; repeat the flag or separate with
    /// commas), as each worker's `--kinds` says. Without it a kind no ready
    /// worker serves waits, named in the log, while the others go on.
    #[arg(
        long,
        env = "ZPIPE_WORKERS_FOR",
        value_name = "KIND=N",
        value_delimiter = ','
    )]
    pub workers_for: Vec<KindNeed>,
    /// How long to wait for the sink and the workers before giving up (or, if
    /// some workers are ready, starting with them).
    #[arg(long, env = "ZPIPE_WAIT", default_value = "30s", value_parser = common::cli::duration)]
    pub wait: Duration,
    /// Once every task has gone out, stop waiting for a sink that has said
    /// nothing for this long (exit 4: the batch may be incomplete; its
    /// results so far are in the sink's output, and `--resume` carries on
    /// once the sink is back).
    #[arg(long, env = "ZPIPE_SINK_TIMEOUT", default_value = "60s", value_parser = common::cli::duration)]
    pub sink_timeout: Duration,
    /// Read tasks from this file, one per line; `-` reads stdin.
    #[arg(long, short, env = "ZPIPE_INPUT")]
    pub input: Option<PathBuf>,
    /// What a plain (non-JSON) input line is.
    #[arg(long, env = "ZPIPE_PLAIN", value_enum, default_value = "exec")]
    pub plain: input::Plain,
    /// Fill each plain input line into this shell command, as GNU parallel
    /// does: `{}` the line and `{.}` the line without its extension, each
    /// shell-quoted so that it is one argument whatever it holds; `{#}` the
    /// task's number (from 1). Without `{}` or `{.}` the line goes at the
    /// end. Every line is then a name as it is (a `#` or `{` first, spaces
    /// around, included); only empty lines are skipped. E.g. `--command
    /// 'gzip -9 {}'` with a file name a line.
    #[arg(long, env = "ZPIPE_COMMAND")]
    pub command: Option<input::Template>,
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
    /// What every role's sockets take: high-water mark, message size,
    /// security.
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    // --metrics ADDR (Prometheus); a doc comment here would replace its
    // help.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub metrics: common::metrics::MetricsArgs,
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

/// `--workers-for KIND=N`: how many ready workers serving a task kind the
/// batch waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindNeed {
    /// The kind (see [`common::kinds`]).
    pub kind: String,
    /// How many ready workers must serve it.
    pub workers: usize,
}

impl std::str::FromStr for KindNeed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, n) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected KIND=N, e.g. primes=2"))?;
        let kind = kind.trim();
        common::kinds::check_name(kind)?;
        let workers = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a number of workers"))?;
        Ok(KindNeed {
            kind: kind.to_string(),
            workers,
        })
    }
}

impl Config {
    /// The largest task body that fits a message (workers refuse larger ones
    /// when their `--max-msg-size` is the same as ours).
    pub(crate) fn max_task_bytes(&self) -> usize {
        usize::try_from(self.sockets.max_msg_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(64)
    }

    /// The batch this configuration describes: the input, or generated
    /// tasks. Its dependencies are checked once, by
    /// [`Ventilator::run_plan`](crate::Ventilator::run_plan), before
    /// anything is sent (see there why).
    pub fn load_tasks(&self) -> Result<Plan, Error> {
        let command = self.command.as_ref();
        if command.is_some() && (self.input.is_none() || self.plain != input::Plain::Exec) {
            return Err(Error::Usage(
                "--command fills each line of --input into a shell command: give --input, and no --plain but exec".into(),
            ));
        }
        match &self.input {
            Some(path) if path.as_os_str() == "-" => Ok(input::parse_with(
                std::io::stdin().lock(),
                self.plain,
                command,
                self.max_task_bytes(),
            )?),
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    Error::Usage(format!("cannot open the input {}: {e}", path.display()))
                })?;
                Ok(input::parse_with(
                    std::io::BufReader::new(file),
                    self.plain,
                    command,
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
