//! A worker with its own task body: upper-cases `data` tasks.
//!
//! Run a sink, this worker, and a ventilator fed with plain lines as data:
//!
//! ```text
//! cargo run -p sink &
//! cargo run -p worker --example uppercase &
//! printf 'hello\nworld\n' | cargo run -p ventilator -- --input - --plain data
//! ```
//!
//! It takes the same flags as the `worker` binary (`--threads`, endpoints...).

use std::process::ExitCode;

use clap::Parser;
use common::work::{Outcome, Status, Work};
use worker::TaskInfo;

/// The task body: anything `Fn(&TaskInfo, &Work) -> Outcome + Send + Sync`.
fn uppercase(_task: &TaskInfo<'_>, work: &Work) -> Outcome {
    match work {
        Work::Data { data } => match data.as_str() {
            Some(text) => Outcome::ok(text.to_uppercase()),
            None => Outcome::failed(Status::Failed, format!("expected a string, got {data}")),
        },
        other => Outcome::failed(
            Status::Failed,
            format!("this worker takes data tasks, not {}", other.kind()),
        ),
    }
}

fn main() -> ExitCode {
    let config = worker::Config::parse();
    common::cli::init_logging();
    common::cli::exit::<worker::Error>(run(&config), "uppercase")
}

fn run(config: &worker::Config) -> anyhow::Result<ExitCode> {
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    worker::run_with(config, &zmq::Context::new(), &shutdown, uppercase)?;
    Ok(ExitCode::SUCCESS)
}
