//! Two task kinds, on two kinds of workers, the second kind after the first
//! (py-zmq-pipeline's example 4, the ZeroMQ way).
//!
//! ```text
//! cargo run --example two_kinds
//! ```
//!
//! One process plays every part of the guide's parallel pipeline, each on
//! its own thread and its own sockets, talking over loopback TCP exactly
//! as separate programs on separate hosts would:
//!
//! ```text
//!                      ┌─▶ DEALER worker-a (serves kind A) ─┐
//!  ventilator ROUTER ──┤                                    ├─ PUSH ─▶ PULL sink
//!                      └─▶ DEALER worker-b (serves kind B) ─┘
//! ```
//!
//! The guide's ventilator PUSHes each task to whichever worker comes next
//! (round-robin): it cannot choose. Here the workers ask for work (credit,
//! the guide's load-balancing pattern: each worker's DEALER tells the
//! ventilator's ROUTER it is ready), and each says in its HELLO which task
//! kinds it serves; so the ventilator can give each task to a worker that
//! serves its kind. Kind B tasks are *stage 1*: they wait until every
//! stage-0 task (kind A) has been acknowledged by the sink.
//!
//! What it prints: each task, its kind, which worker ran it and when.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use common::work::{Outcome, Status, Work};
use worker::{Handler, TaskInfo};

/// A worker's task body: it serves one kind, and answers with its own name
/// and when it ran (ms since the start of the program).
struct Stage {
    /// The worker's name, in its answers.
    name: &'static str,
    /// The one kind it serves.
    kind: &'static str,
    /// Work to pretend to do.
    ms: u64,
    /// When the program started, to time the tasks from.
    t0: Instant,
}

impl Handler for Stage {
    fn run(&self, _task: &TaskInfo<'_>, work: &Work) -> Outcome {
        let Work::Data { data } = work else {
            return Outcome::failed(Status::Failed, "expected a data task");
        };
        let began = self.t0.elapsed().as_millis();
        thread::sleep(Duration::from_millis(self.ms));
        let ended = self.t0.elapsed().as_millis();
        Outcome::ok(format!("{} {} {began} {ended}", self.name, data))
    }

    /// What the worker says in its HELLO: the ventilator deals it these
    /// kinds only. (The same as `worker --kinds A` on the command line.)
    fn kinds(&self) -> Option<Vec<String>> {
        Some(vec![self.kind.to_string()])
    }
}

/// The sink's JSON Lines output, kept in memory to print at the end.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tasks in the batch: A and B in turn.
const TASKS: u64 = 8;

fn main() -> anyhow::Result<()> {
    common::cli::init_logging();
    let t0 = Instant::now();
    // One context for the whole process: sockets of all parts share its
    // I/O threads.
    let ctx = zmq::Context::new();

    // The sink binds (it is a stable part), on free loopback ports.
    let sink_config = sink::Config::parse_from([
        "sink",
        "--result-endpoint",
        "tcp://127.0.0.1:*",
        "--control-endpoint",
        "tcp://127.0.0.1:*",
        "--feedback-endpoint",
        "tcp://127.0.0.1:*",
    ]);
    let sink = sink::Sink::bind(&sink_config, &ctx)?;
    let at = sink.bound().clone();
    let output = Collected::default();
    let out = output.clone();
    let stop = common::Shutdown::new();
    let sink_thread = {
        let stop = stop.clone();
        thread::spawn(move || sink.run(&stop, Box::new(out)))
    };

    // The ventilator binds its task socket too, and starts the batch once
    // both workers have said HELLO (--workers 2), one of each kind.
    let vent_config = ventilator::Config::parse_from([
        "ventilator",
        "--task-endpoint",
        "tcp://127.0.0.1:*",
        "--feedback-endpoint",
        &at.feedback[0],
        "--workers",
        "2",
        "--workers-for",
        "A=1,B=1",
    ]);
    let vent = ventilator::Ventilator::bind(&vent_config, &ctx)?;
    let tasks_at = vent.bound()[0].clone();

    // The workers connect (they are the dynamic parts): two threads each.
    let worker_config = worker::Config::parse_from([
        "worker",
        "--task-endpoint",
        &tasks_at,
        "--result-endpoint",
        &at.results[0],
        "--control-endpoint",
        &at.control[0],
        "--threads",
        "2",
    ]);
    let mut workers = Vec::new();
    for (name, kind, ms) in [("worker-a", "A", 40), ("worker-b", "B", 10)] {
        let handler = Stage { name, kind, ms, t0 };
        let (config, ctx, stop) = (worker_config.clone(), ctx.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            worker::run_with(&config, &ctx, &stop, handler)
        }));
    }

    // The batch, as an input file would give it:
    //   {"kind":"data","type":"A","data":0}
    //   {"kind":"data","type":"B","data":1,"stage":1}  ...
    // Kinds interleaved on purpose: B tasks still wait for every A. The
    // tasks come from a source, here an iterator (see ventilator::Source).
    let kind_of = |task: u64| if task % 2 == 0 { "A" } else { "B" };
    let tasks = (0..TASKS).map(|i| {
        ventilator::Task::new(Work::Data { data: i.into() })
            .kind(kind_of(i))
            .stage(u32::from(kind_of(i) == "B"))
    });
    let report = vent.run_source(tasks, &stop)?;

    // The sink said DONE; it and the workers (told END) stop by themselves.
    sink_thread.join().expect("the sink thread")?;
    for w in workers {
        w.join().expect("a worker thread")?;
    }

    println!("task  kind  ran on    began  ended (ms after start)");
    let text = String::from_utf8(output.0.lock().unwrap().clone())?;
    let mut rows: Vec<(u64, String)> = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let task = v["task"].as_u64().unwrap_or(0);
        rows.push((task, v["output"].as_str().unwrap_or("").to_string()));
    }
    rows.sort();
    let (mut last_a, mut first_b) = (0u128, u128::MAX);
    for (task, output) in &rows {
        let f: Vec<&str> = output.split(' ').collect();
        let [name, _data, began, ended] = f[..] else {
            println!("{task:>4}  ?     {output}");
            continue;
        };
        let kind = kind_of(*task);
        let (began, ended): (u128, u128) = (began.parse()?, ended.parse()?);
        if kind == "A" {
            last_a = last_a.max(ended);
        } else {
            first_b = first_b.min(began);
        }
        println!("{task:>4}  {kind:<4}  {name:<8}  {began:>5}  {ended:>5}");
    }
    let done = report.done.map_or(0, |d| d.ok);
    println!("{done} of {TASKS} tasks ok");
    println!(
        "every B began after the last A ended: {}",
        if first_b >= last_a { "yes" } else { "no" }
    );
    Ok(())
}
