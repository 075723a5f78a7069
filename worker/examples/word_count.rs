//! A word count over text files: map and reduce over a pipeline, with
//! your own code at all three ends.
//!
//! - the **ventilator**'s [`ventilator::Source`] lists the files: one task
//!   per file, its path as a `data` task, sorted so that the same files
//!   make the same batch (the batch id is a fingerprint of the tasks);
//! - the **worker**'s [`worker::Handler`] reads one file and counts its
//!   words, sending the counts back as a JSON object (the map step);
//! - the **sink**'s [`sink::Collector`] merges the counts as they come and
//!   returns the totals (the reduce step).
//!
//! ```text
//! cargo run --example word_count                     # the *.md, *.txt and *.rs files under .
//! cargo run --example word_count -- README.md docs --threads 8 --top 20
//! ```
//!
//! Everything runs in this one process: the sink and the ventilator on
//! threads of their own, and one worker with `--threads` task threads,
//! each with its own sockets; they talk over loopback TCP as they would
//! between hosts. Set `RUST_LOG=info` to watch them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use common::Shutdown;
use common::work::{Outcome, Status, Work};
use sink::{Collector, Report, TaskResult};

/// Counts the words of text files on a zpipe pipeline.
#[derive(Parser)]
struct Args {
    /// Files, and directories whose *.md, *.txt and *.rs files are counted
    /// (hidden directories and `target` skipped).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Task threads of the worker.
    #[arg(long, default_value_t = 4)]
    threads: u32,
    /// How many of the most frequent words to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// The source's listing: every file to count, sorted.
fn list(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    walk(&path, found)?;
                }
            } else if ["md", "txt", "rs"]
                .iter()
                .any(|ext| path.extension().is_some_and(|e| e == *ext))
            {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut found)?;
        } else {
            found.push(p.clone());
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The worker's task body: one file's words, counted (lower-cased runs of
/// letters, digits and apostrophes).
fn count_words(_task: &worker::TaskInfo<'_>, work: &Work) -> Outcome {
    let Some(path) = (match work {
        Work::Data { data } => data.as_str(),
        _ => None,
    }) else {
        return Outcome::failed(Status::Rejected, "expected a file's path");
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).to_lowercase(),
        Err(e) => return Outcome::failed(Status::Failed, format!("{path}: {e}")),
    };
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word).or_default() += 1;
    }
    match serde_json::to_vec(&counts) {
        Ok(json) => Outcome::ok(json),
        Err(e) => Outcome::failed(Status::Failed, e.to_string()),
    }
}

/// The sink's side: each file's counts merged into the totals.
#[derive(Default)]
struct Totals {
    words: HashMap<String, u64>,
    files: u64,
    failed: Vec<String>,
}

impl Collector for Totals {
    type Output = Totals;

    fn collect(&mut self, result: &TaskResult<'_>) {
        let counts: Option<HashMap<String, u64>> = result
            .is_ok()
            .then(|| serde_json::from_slice(result.output).ok())
            .flatten();
        match counts {
            Some(counts) => {
                self.files += 1;
                for (word, n) in counts {
                    *self.words.entry(word).or_default() += n;
                }
            }
            None => self
                .failed
                .push(String::from_utf8_lossy(result.error).into_owned()),
        }
    }

    fn finish(self, _report: &Report) -> Totals {
        self
    }
}

fn main() -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        common::cli::init_logging();
    }
    let args = Args::parse();
    let files = list(&args.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no *.md, *.txt or *.rs file in {:?}",
        args.paths
    );
    let ctx = zmq::Context::new();
    let any_port = "tcp://127.0.0.1:*";

    let sink = sink::Sink::bind(
        &sink::Config::parse_from([
            "sink",
            "--result-endpoint",
            any_port,
            "--control-endpoint",
            any_port,
            "--feedback-endpoint",
            any_port,
        ]),
        &ctx,
    )?;
    let at = sink.bound().clone();
    let collecting = std::thread::spawn(move || {
        sink.run_with(
            &Shutdown::new(),
            Box::new(std::io::sink()),
            Totals::default(),
        )
    });

    let vent = ventilator::Ventilator::bind(
        &ventilator::Config::parse_from([
            "ventilator",
            "--task-endpoint",
            any_port,
            "--feedback-endpoint",
            &at.feedback[0],
        ]),
        &ctx,
    )?;
    let tasks_at = vent.bound()[0].clone();
    // The source: one task per file, its path as the data.
    let tasks = files.into_iter().map(|path| Work::Data {
        data: path.to_string_lossy().into_owned().into(),
    });
    let dealing = std::thread::spawn(move || vent.run_source(tasks, &Shutdown::new()));

    let threads = args.threads.to_string();
    let config = worker::Config::parse_from([
        "worker",
        "--task-endpoint",
        &tasks_at,
        "--result-endpoint",
        &at.results[0],
        "--control-endpoint",
        &at.control[0],
        "--threads",
        &threads,
    ]);
    // The worker runs here until the sink says END.
    worker::run_with(&config, &ctx, &Shutdown::new(), count_words)?;

    let collected = collecting.join().expect("the sink thread")?;
    dealing.join().expect("the ventilator thread")?;
    let totals = collected.value?;
    let mut words: Vec<(&String, &u64)> = totals.words.iter().collect();
    words.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (word, n) in words.iter().take(args.top) {
        println!("{n:>8} {word}");
    }
    let all: u64 = totals.words.values().sum();
    println!(
        "{all} words ({} different) in {} files, in {:.1} ms",
        totals.words.len(),
        totals.files,
        collected.report.elapsed_ms
    );
    for why in &totals.failed {
        eprintln!("not counted: {why}");
    }
    Ok(if totals.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
