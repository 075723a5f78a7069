//! The sink's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use common::Endpoints;

/// The sink's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sink",
    version,
    about = "zpipe sink: collects results (PULL), tells the ventilator who is ready and when the batch is done, publishes END to the workers (PUB)",
    // `sink plot …` draws instead of collecting: the collecting flags are
    // not for it.
    args_conflicts_with_subcommands = true
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
    // Socket settings every role shares (--hwm, --max-msg-size, security);
    // a doc comment here would replace their help heading.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub sockets: common::cli::SocketArgs,
    // --metrics ADDR (Prometheus); a doc comment here would replace its
    // help.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub metrics: common::metrics::MetricsArgs,
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
    /// Stay for batch after batch (a standing pool): each batch's results go
    /// to `--output-dir`/BATCH.jsonl and its report to BATCH.report.json;
    /// END ends a batch, not the pool. A batch announced again whose results
    /// file is there carries on from it (what `--resume` does for one
    /// batch). SIGTERM or Ctrl-C ends the pool: KILL goes to every worker.
    #[arg(long, env = "ZPIPE_SERVE")]
    pub serve: bool,
    /// With `--serve`: the directory for each batch's results and report
    /// (made if missing).
    #[arg(long, env = "ZPIPE_OUTPUT_DIR")]
    pub output_dir: Option<PathBuf>,
    /// Classic mode only: how many results make a batch (the guide's 100).
    #[arg(long, env = "ZPIPE_CLASSIC_TASKS", default_value_t = 100)]
    pub tasks: u64,
    /// Instead of collecting: `sink plot …` draws a picture.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the sink does instead of collecting a batch.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Draw a picture (SVG) from a results file or the benchmark's figures.
    ///
    /// `sink plot timeline RESULTS.jsonl -o timeline.svg` draws a batch as
    /// it ran: one lane per worker thread, one bar per result from its
    /// start to its end, coloured by status; gaps are idle time.
    /// `sink plot scaling scaling.csv -o scaling.svg` draws elapsed time
    /// against workers, one line per dispatch mode, with the ideal (what
    /// `scripts/bench.sh --plot DIR` writes).
    #[command(subcommand)]
    Plot(Plot),
}

/// The pictures `sink plot` draws.
#[derive(Debug, Clone, Subcommand)]
pub enum Plot {
    /// A batch's timeline, from the results file a sink wrote (`--output`,
    /// or BATCH.jsonl under `--output-dir`).
    ///
    /// One lane per worker thread (labelled worker:thread), one bar per
    /// result from `start_ms` to `end_ms` (the sink's view: when the
    /// result came, less the run time its worker measured), coloured by
    /// status; tasks given up by the ventilator go in a lane of their own;
    /// results of a re-sent task (attempt > 1) are outlined. Gaps in a
    /// lane are time its thread was idle. The title gives the batch, the
    /// number of results, the elapsed time and the ideal (the sum of the
    /// run times over the lanes). Hovering a bar in a browser names its
    /// task.
    Timeline(TimelineArgs),
    /// Elapsed time against workers, from a CSV such as `scripts/bench.sh
    /// --plot DIR` writes.
    ///
    /// The CSV has a header `workers,NAME,…` and one row per worker count,
    /// each cell a time in milliseconds (an empty cell: not measured); `#`
    /// starts a comment line. Each NAME is a line; a column named `ideal`
    /// is drawn dashed. Both axes are logarithmic, so the ideal (sum /
    /// workers) is a straight line and a mode's height above it is its
    /// overhead.
    Scaling(ScalingArgs),
}

/// `sink plot timeline`'s arguments. (No `ZPIPE_*` variables: a picture
/// is drawn once, by hand or by a script, never by a deployment.)
#[derive(Debug, Clone, Args)]
pub struct TimelineArgs {
    /// The results (JSON Lines, one batch) a sink wrote.
    pub results: PathBuf,
    /// Write the SVG here; `-` is stdout.
    #[arg(long, short)]
    pub output: PathBuf,
    /// The picture's width in pixels (its height follows the lanes).
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(400..=20_000))]
    pub width: u32,
    /// Run the time axis to at least this many ms, so that timelines of
    /// two batches drawn side by side share one scale.
    #[arg(long, value_name = "MS", value_parser = positive_ms)]
    pub x_max: Option<f64>,
}

/// A time axis's end: milliseconds above 0.
fn positive_ms(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!("{text:?} is not a time in ms above 0")),
    }
}

/// `sink plot scaling`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ScalingArgs {
    /// The figures: `workers,NAME,…` then a row per worker count, in ms.
    pub csv: PathBuf,
    /// Write the SVG here; `-` is stdout.
    #[arg(long, short)]
    pub output: PathBuf,
    /// The picture's title.
    #[arg(long, default_value = "Elapsed against workers")]
    pub title: String,
}

impl Config {
    /// `--serve` with what it needs and nothing that speaks of one batch.
    pub(crate) fn check_serve(&self) -> Result<(), crate::Error> {
        let usage = |m: &str| Err(crate::Error::Usage(m.into()));
        if !self.serve {
            if self.output_dir.is_some() {
                return usage("--output-dir goes with --serve (one batch writes to --output)");
            }
            return Ok(());
        }
        if self.output_dir.is_none() {
            return usage("--serve writes each batch to its own files: give --output-dir DIR");
        }
        if self.classic {
            return usage(
                "--serve collects batch after batch; the guide's wire format (--classic) has one",
            );
        }
        if self.output.as_os_str() != "-" || self.report.is_some() {
            return usage(
                "--serve writes each batch's results and report under --output-dir: drop --output and --report",
            );
        }
        if self.resume || self.ordered {
            return usage(
                "--serve carries on a batch from its results file by itself, appending as results come: drop --resume and --ordered",
            );
        }
        Ok(())
    }
}
