//! Runs whole pipelines in one process: real sockets on free loopback ports,
//! real threads, every wait bounded.
#![allow(dead_code)]

use std::path::PathBuf;
use std::thread::JoinHandle;

use clap::Parser;
use common::Shutdown;
#[allow(unused_imports)]
pub use common::testing::time_bomb;

/// A sink running on its own thread, bound to free loopback ports.
pub struct RunningSink {
    pub results: String,
    pub control: String,
    pub feedback: String,
    pub output: PathBuf,
    pub shutdown: Shutdown,
    pub handle: JoinHandle<Result<sink::Report, sink::Error>>,
    _dir: tempfile::TempDir,
}

pub fn start_sink(ctx: &zmq::Context, extra: &[&str]) -> RunningSink {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("results.jsonl");
    let mut args = vec!["sink"];
    args.extend_from_slice(&common::testing::SINK_ON_FREE_PORTS);
    args.extend_from_slice(extra);
    let config = sink::Config::parse_from(args);
    let s = sink::Sink::bind(&config, ctx).unwrap();
    let bound = s.bound().clone();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let out = sink::open_output(&output).unwrap();
    let handle = std::thread::spawn(move || s.run(&stop, out));
    RunningSink {
        results: bound.results[0].clone(),
        control: bound.control[0].clone(),
        feedback: bound.feedback.first().cloned().unwrap_or_default(),
        output,
        shutdown,
        handle,
        _dir: dir,
    }
}

/// A sink's output, one parsed JSON object per line.
pub fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A ventilator bound to a free loopback port, not yet running.
pub fn ventilator(
    ctx: &zmq::Context,
    sink: &RunningSink,
    extra: &[&str],
) -> ventilator::Ventilator {
    // A classic sink has no feedback socket; a classic ventilator uses none.
    let feedback = if sink.feedback.is_empty() {
        "tcp://127.0.0.1:1"
    } else {
        &sink.feedback
    };
    let mut args = vec![
        "ventilator",
        "--task-endpoint",
        "tcp://127.0.0.1:*",
        "--feedback-endpoint",
        feedback,
        "--result-endpoint",
        &sink.results,
    ];
    args.extend_from_slice(extra);
    ventilator::Ventilator::bind(&ventilator::Config::parse_from(args), ctx).unwrap()
}

/// Worker flags pointing at a ventilator's task endpoint and a sink.
pub fn worker_config(tasks: &str, sink: &RunningSink, extra: &[&str]) -> worker::Config {
    let mut args = vec![
        "worker",
        "--task-endpoint",
        tasks,
        "--result-endpoint",
        &sink.results,
        "--control-endpoint",
        &sink.control,
        "--heartbeat",
        "200ms",
    ];
    args.extend_from_slice(extra);
    worker::Config::parse_from(args)
}

pub type WorkerHandle = JoinHandle<Result<worker::Report, worker::Error>>;

/// Starts a built-in worker on its own thread.
pub fn spawn_worker(ctx: &zmq::Context, config: worker::Config) -> (Shutdown, WorkerHandle) {
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let ctx = ctx.clone();
    (
        shutdown,
        std::thread::spawn(move || worker::run(&config, &ctx, &stop)),
    )
}
