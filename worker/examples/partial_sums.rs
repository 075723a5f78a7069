//! A long list summed by several worker processes, each sending back its
//! partial sums, and the sink combining them: Python multiprocessing's
//! `Pool.map` and a reduce, the ZeroMQ way.
//!
//! ```text
//! with Pool(4) as pool:                    # 4 worker processes
//!     parts = pool.map(sum, chunks)        # each sums its chunks
//! total = sum(parts)                       # the parent combines them
//! ```
//!
//! Here the three parts of that program are zpipe's three ends, each with
//! your own code in it:
//!
//! - the **ventilator** cuts the list into chunks: a [`ventilator::Source`]
//!   (an iterator of tasks, each a chunk of numbers as a `data` task);
//! - each **worker** sums the chunks it is dealt: a [`worker::Handler`],
//!   here a plain function, in a process of its own (this same program,
//!   started again with `worker ENDPOINTS`), as `Pool` starts its own;
//! - the **sink** adds the partial sums up as they come, and keeps each
//!   worker's part: a [`sink::Collector`], whose `finish` returns the total.
//!
//! ```text
//! cargo run --example partial_sums                   # 4 workers, 1 000 000 numbers
//! cargo run --example partial_sums -- --workers 2 --numbers 50000000 --chunk 500000
//! ```
//!
//! Unlike `Pool.map`, nothing waits for the slowest chunk of a fixed share:
//! a worker asks for the next chunk when it has summed the last (credit
//! dispatch), and a worker that dies has its chunks dealt again. Set
//! `RUST_LOG=info` to watch the roles talk.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};

use clap::Parser;
use common::Shutdown;
use common::work::{Outcome, Status, Work};
use sink::{Collector, Report, TaskResult};

/// The course's exercise: sum 1..=NUMBERS on several worker processes.
#[derive(Parser)]
struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// How long the list is: the numbers 1 to this.
    #[arg(long, default_value_t = 1_000_000)]
    numbers: u64,
    /// Numbers per task.
    #[arg(long, default_value_t = 10_000)]
    chunk: u64,
}

/// The worker's task body: the sum of one chunk (a JSON array of numbers).
fn sum_chunk(_task: &worker::TaskInfo<'_>, work: &Work) -> Outcome {
    let Work::Data { data } = work else {
        return Outcome::failed(Status::Rejected, "expected a chunk of numbers");
    };
    let Some(numbers) = data.as_array() else {
        return Outcome::failed(Status::Rejected, "expected a JSON array");
    };
    let sum: u64 = numbers.iter().filter_map(serde_json::Value::as_u64).sum();
    Outcome::ok(sum.to_string())
}

/// The sink's side: every partial sum once, added up, and each worker's
/// part kept (how many chunks it summed, and their sum).
#[derive(Default)]
struct Parts {
    total: u64,
    by_worker: BTreeMap<String, (u64, u64)>,
    failed: u64,
}

impl Collector for Parts {
    type Output = Parts;

    fn collect(&mut self, result: &TaskResult<'_>) {
        match result.output_text().parse::<u64>() {
            Ok(part) if result.is_ok() => {
                self.total += part;
                let mine = self.by_worker.entry(result.worker.to_string()).or_default();
                mine.0 += 1;
                mine.1 += part;
            }
            _ => self.failed += 1,
        }
    }

    fn finish(self, _report: &Report) -> Parts {
        self
    }
}

fn main() -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        common::cli::init_logging();
    }
    // Started again as a worker process: `worker TASKS RESULTS CONTROL`.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("worker") {
        let config = worker::Config::parse_from([
            "worker",
            "--task-endpoint",
            &argv[2],
            "--result-endpoint",
            &argv[3],
            "--control-endpoint",
            &argv[4],
        ]);
        worker::run_with(&config, &zmq::Context::new(), &Shutdown::new(), sum_chunk)?;
        return Ok(ExitCode::SUCCESS);
    }
    let args = Args::parse();
    anyhow::ensure!(
        args.workers > 0 && args.chunk > 0 && args.numbers > 0,
        "--workers, --numbers and --chunk must be more than 0"
    );
    let ctx = zmq::Context::new();

    // The sink binds on free loopback ports, read back once bound.
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
        // The JSON Lines could go to a file as well (sink::open_output).
        sink.run_with(
            &Shutdown::new(),
            Box::new(std::io::sink()),
            Parts::default(),
        )
    });

    // The ventilator waits for every worker before it deals, so that each
    // takes part.
    let workers = args.workers.to_string();
    let vent = ventilator::Ventilator::bind(
        &ventilator::Config::parse_from([
            "ventilator",
            "--task-endpoint",
            any_port,
            "--feedback-endpoint",
            &at.feedback[0],
            "--workers",
            &workers,
        ]),
        &ctx,
    )?;
    let tasks_at = vent.bound()[0].clone();
    let (numbers, chunk) = (args.numbers, args.chunk);
    // The source: the list cut into chunks, made as the ventilator asks.
    let chunks = (0..numbers.div_ceil(chunk)).map(move |i| {
        let first = i * chunk + 1;
        let last = ((i + 1) * chunk).min(numbers);
        Work::Data {
            data: (first..=last).collect::<Vec<u64>>().into(),
        }
    });
    let dealing = std::thread::spawn(move || vent.run_source(chunks, &Shutdown::new()));

    // The worker processes: this program again.
    let me = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..args.workers {
        children.push(
            Command::new(&me)
                .args(["worker", &tasks_at, &at.results[0], &at.control[0]])
                .spawn()?,
        );
    }

    let collected = collecting.join().expect("the sink thread")?;
    dealing.join().expect("the ventilator thread")?;
    for mut child in children {
        child.wait()?;
    }
    let parts = collected.value?;
    for (worker, (chunks, sum)) in &parts.by_worker {
        println!("worker {worker}: {chunks} chunks, partial sum {sum}");
    }
    let expected = u128::from(numbers) * (u128::from(numbers) + 1) / 2;
    println!(
        "total {} (1 + 2 + ... + {numbers} = {expected}), {} failed, in {:.1} ms",
        parts.total, parts.failed, collected.report.elapsed_ms
    );
    Ok(if u128::from(parts.total) == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
