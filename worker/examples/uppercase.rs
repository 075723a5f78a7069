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
    let shutdown = common::Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("uppercase: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = worker::run_with(&config, &zmq::Context::new(), &shutdown, uppercase).map(|_| ());
    common::cli::finish(result, "uppercase")
}
