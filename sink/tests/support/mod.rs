//! What the sink's tests share: a batch fed, in this process, to a sink
//! they bound themselves.

use std::thread;

use clap::Parser;
use common::Shutdown;
use common::work::Work;

/// Runs `tasks` from a ventilator (on a free port, waiting for two
/// workers; `vent_flags` added) through two built-in workers of two threads
/// each (`worker_flags` added) to the sink bound at `at`, all in this
/// process; returns once the ventilator and both workers have ended, each
/// having succeeded.
pub fn feed(
    ctx: &zmq::Context,
    at: &sink::Bound,
    tasks: Vec<Work>,
    vent_flags: &[&str],
    worker_flags: &[&str],
) {
    let mut args = vec![
        "ventilator",
        "--task-endpoint",
        "tcp://127.0.0.1:*",
        "--feedback-endpoint",
        &at.feedback[0],
        "--workers",
        "2",
    ];
    args.extend_from_slice(vent_flags);
    let vent = ventilator::Ventilator::bind(&ventilator::Config::parse_from(args), ctx).unwrap();
    let tasks_at = vent.bound()[0].clone();
    let v = thread::spawn(move || vent.run(&tasks, &Shutdown::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut args = vec![
                "worker",
                "--task-endpoint",
                &tasks_at,
                "--result-endpoint",
                &at.results[0],
                "--control-endpoint",
                &at.control[0],
                "--threads",
                "2",
            ];
            args.extend_from_slice(worker_flags);
            let cfg = worker::Config::parse_from(args);
            let ctx = ctx.clone();
            thread::spawn(move || worker::run(&cfg, &ctx, &Shutdown::new()))
        })
        .collect();
    v.join().unwrap().unwrap();
    for w in workers {
        w.join().unwrap().unwrap();
    }
}
