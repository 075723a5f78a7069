//! Your own code at the sink's end: a collector sees each result of a real
//! batch once (duplicates dropped, in input order with `--ordered`, what
//! `--resume` read back first), returns a reduction, and a collector that
//! panics loses no result.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use common::Shutdown;
use common::testing::{SINK_ON_FREE_PORTS, time_bomb};
use common::work::Work;
use sink::{Collected, Collector, Report, TaskResult};

mod support;

/// Runs `tasks` through a sink (flags `sink_flags`, results into
/// `output`), a ventilator (`vent_flags`) and two built-in workers of two
/// threads, all in this process; the sink's results go to `collector`.
fn pipeline<C: Collector>(
    tasks: Vec<Work>,
    sink_flags: &[&str],
    vent_flags: &[&str],
    output: &Path,
    collector: C,
) -> Collected<C::Output> {
    let ctx = zmq::Context::new();
    let mut args = vec!["sink"];
    args.extend_from_slice(&SINK_ON_FREE_PORTS);
    args.extend_from_slice(&["--worker-timeout", "1s"]);
    args.extend_from_slice(sink_flags);
    let config = sink::Config::parse_from(args);
    let s = sink::Sink::bind(&config, &ctx).unwrap();
    let bound = s.bound().clone();
    let out = sink::open_output_for(&sink::Config {
        output: output.to_owned(),
        ..config.clone()
    })
    .unwrap();
    let collecting = std::thread::spawn(move || s.run_with(&Shutdown::new(), out, collector));

    support::feed(&ctx, &bound, tasks, vent_flags, &["--heartbeat", "200ms"]);
    collecting.join().unwrap().unwrap()
}

/// Counts what it sees per task, and adds up the primes counted.
#[derive(Default)]
struct Tally {
    seen: BTreeMap<u64, u32>,
    order: Vec<u64>,
    primes: u64,
}

impl Collector for Tally {
    type Output = Tally;
    fn collect(&mut self, r: &TaskResult<'_>) {
        *self.seen.entry(r.task).or_default() += 1;
        self.order.push(r.task);
        assert!(
            r.worker.contains(':'),
            "a worker named host:pid: {}",
            r.worker
        );
        if r.is_ok() {
            self.primes += r.output_text().parse::<u64>().unwrap_or(0);
        }
    }
    fn finish(self, report: &Report) -> Tally {
        assert!(report.complete);
        self
    }
}

fn primes(tasks: u64, width: u64) -> Vec<Work> {
    (0..tasks)
        .map(|i| Work::Primes {
            from: i * width,
            to: (i + 1) * width,
        })
        .collect()
}

#[test]
fn a_collector_sees_each_result_once_and_returns_its_reduction() {
    time_bomb(60, || {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        // Leases far shorter than the tasks: every task goes out again, and
        // both results come back; the collector must see one.
        let mut tasks = primes(40, 2_500);
        tasks.extend((0..8).map(|_| Work::Sleep { ms: 150 }));
        let got = pipeline(
            tasks,
            &[],
            &["--task-timeout", "60ms", "--retries", "50"],
            &output,
            Tally::default(),
        );
        let tally = got.value.unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(tally.seen.len(), 48);
        assert!(tally.seen.values().all(|&n| n == 1), "{:?}", tally.seen);
        assert_eq!(tally.primes, 9_592, "the primes below 100 000");
        assert!(got.report.duplicates > 0, "the test made duplicates");
        let lines = std::fs::read_to_string(&output).unwrap().lines().count();
        assert_eq!(lines, 48, "the JSON Lines are written beside it");
    });
}

#[test]
fn with_ordered_a_collector_sees_the_results_in_input_order() {
    time_bomb(60, || {
        let dir = tempfile::tempdir().unwrap();
        // Later tasks are quicker, so they come back first.
        let tasks: Vec<Work> = (0..30).map(|i| Work::Sleep { ms: 30 - i }).collect();
        let got = pipeline(
            tasks,
            &["--ordered"],
            &[],
            &dir.path().join("o.jsonl"),
            Tally::default(),
        );
        let tally = got.value.unwrap();
        assert_eq!(tally.order, (0..30).collect::<Vec<u64>>());
    });
}

#[test]
fn a_collector_that_panics_is_told_of_and_no_result_is_lost() {
    time_bomb(60, || {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        let bomb = move |r: &TaskResult<'_>| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            assert!(n < 5, "the fifth result ({}) is one too many", r.task);
        };
        let got = pipeline(primes(20, 100), &[], &[], &output, bomb);
        assert!(got.report.complete, "the batch went on");
        assert_eq!(got.report.ok, 20);
        let p = got.value.unwrap_err();
        assert!(p.task.is_some(), "{p}");
        assert!(p.message.contains("one too many"), "{p}");
        assert_eq!(
            seen.load(Ordering::Relaxed),
            5,
            "given no more after it panicked"
        );
        let lines = std::fs::read_to_string(&output).unwrap().lines().count();
        assert_eq!(lines, 20, "every result is in the output");
    });
}

#[test]
fn a_collector_resuming_is_given_what_was_read_back_then_the_rest() {
    time_bomb(60, || {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let tasks = primes(12, 1_000);
        // An earlier sink wrote tasks 0..5 of this very batch, then died.
        let batch = ventilator::Plan::from(tasks.clone()).fingerprint();
        let mut earlier = String::new();
        for (t, count) in [(0u64, 168), (1, 135), (2, 127), (3, 120), (4, 119)] {
            earlier.push_str(&format!(
                "{{\"task\":{t},\"batch\":\"{batch:016x}\",\"attempt\":1,\"worker\":\"gone:1\",\"thread\":0,\"status\":\"ok\",\"duration_ms\":1.000,\"output\":\"{count}\",\"error\":\"\"}}\n"
            ));
        }
        std::fs::write(&output, earlier).unwrap();
        let out = output.to_str().unwrap();
        let got = pipeline(
            tasks,
            &["--resume", "--output", out],
            &["--resume"],
            &output,
            Tally::default(),
        );
        let tally = got.value.unwrap();
        assert_eq!(got.report.read_back, 5);
        assert_eq!(tally.seen.len(), 12, "{:?}", tally.seen);
        assert!(tally.seen.values().all(|&n| n == 1), "{:?}", tally.seen);
        assert_eq!(&tally.order[..5], &[0, 1, 2, 3, 4], "read back first");
        assert_eq!(tally.primes, 1_438, "the primes below 12 000");
    });
}

#[test]
fn a_classic_sink_refuses_a_collector() {
    let ctx = zmq::Context::new();
    let mut args = vec!["sink", "--classic"];
    args.extend_from_slice(&SINK_ON_FREE_PORTS[..4]);
    let s = sink::Sink::bind(&sink::Config::parse_from(args), &ctx).unwrap();
    let e = s
        .run_with(
            &Shutdown::new(),
            Box::new(std::io::sink()),
            |_: &TaskResult<'_>| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("collector"), "{e}");
}
