//! Your own code at the ventilator's end: a batch made by a source (a
//! producer asked until it has no more, or an iterator) runs through real
//! sockets like a batch read from a file, with the same batch id.

mod support;

use std::thread;

use common::work::Work;
use support::*;
use ventilator::{Source, Task};

/// py-zmq-pipeline's `Task.handle`, the Rust way: each call makes the next
/// task, here ranges of numbers to count primes in; a summing task of a
/// later stage waits for all of them.
struct Ranges {
    next: u64,
    end: u64,
    width: u64,
}

impl Source for Ranges {
    fn next_task(&mut self) -> Option<Task> {
        if self.next >= self.end {
            return None;
        }
        let from = self.next;
        self.next += self.width;
        Some(
            Task::new(Work::Primes {
                from,
                to: self.next.min(self.end),
            })
            .id(format!("range-{from}")),
        )
    }
}

#[test]
fn a_source_makes_a_batch_that_runs_like_an_input_file() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &["--ordered"]);
        let vent = ventilator(&ctx, &sink, &["--workers", "2"]);
        let tasks_at = vent.bound()[0].clone();
        let source = Ranges {
            next: 0,
            end: 100_000,
            width: 10_000,
        };
        // The same tasks from an input file have this batch id.
        let mut file = String::new();
        for from in (0..100_000).step_by(10_000) {
            file.push_str(&format!(
                "{{\"kind\":\"primes\",\"from\":{from},\"to\":{},\"id\":\"range-{from}\"}}\n",
                from + 10_000
            ));
        }
        let from_file =
            ventilator::input::parse(file.as_bytes(), ventilator::input::Plain::Exec, 1 << 20)
                .unwrap();
        let v = thread::spawn(move || vent.run_source(source, &common::Shutdown::new()));
        let workers: Vec<_> = (0..2)
            .map(|_| spawn_worker(&ctx, worker_config(&tasks_at, &sink, &[])))
            .collect();
        let vreport = v.join().unwrap().unwrap();
        assert_eq!(vreport.tasks, 10);
        assert_eq!(
            vreport.batch,
            format!("{:016x}", from_file.fingerprint()),
            "the batch id is the tasks' fingerprint, as for a file"
        );
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete);
        let lines = read_lines(&sink.output);
        let total: u64 = lines
            .iter()
            .map(|l| l["output"].as_str().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 9_592, "the primes below 100 000");
        for (_, h) in workers {
            h.join().unwrap().unwrap();
        }
    });
}

#[test]
fn an_iterator_with_dependencies_is_a_source_and_a_later_stage_waits() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "1"]);
        let tasks_at = vent.bound()[0].clone();
        let tasks = (0..6)
            .map(|i| Task::new(Work::Sleep { ms: 20 }).id(format!("a{i}")))
            .chain(std::iter::once(
                Task::new(Work::Noop).after("a5").stage(1).id("last"),
            ));
        let v = thread::spawn(move || vent.run_source(tasks, &common::Shutdown::new()));
        let (_, w) = spawn_worker(&ctx, worker_config(&tasks_at, &sink, &["--threads", "4"]));
        v.join().unwrap().unwrap();
        sink.handle.join().unwrap().unwrap();
        w.join().unwrap().unwrap();
        let lines = read_lines(&sink.output);
        assert_eq!(lines.len(), 7);
        let end_of_sleeps = lines
            .iter()
            .filter(|l| l["task"] != 6)
            .map(|l| l["end_ms"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let last = lines.iter().find(|l| l["task"] == 6).unwrap();
        assert!(
            last["start_ms"].as_f64().unwrap() >= end_of_sleeps,
            "the later stage started before the earlier ended: {lines:?}"
        );
    });
}

#[test]
fn a_source_that_gives_nothing_or_a_broken_dependency_is_refused_before_anything_is_sent() {
    let ctx = zmq::Context::new();
    let sink = start_sink(&ctx, &[]);
    let vent = ventilator(&ctx, &sink, &[]);
    let e = vent
        .run_source(std::iter::empty::<Work>(), &common::Shutdown::new())
        .unwrap_err();
    assert!(e.to_string().contains("no task"), "{e}");
    let vent = ventilator(&ctx, &sink, &[]);
    let broken = vec![Task::new(Work::Noop).after("nobody")];
    let e = vent
        .run_source(broken.into_iter(), &common::Shutdown::new())
        .unwrap_err();
    assert!(
        e.to_string().contains("task 0 of the source") && e.to_string().contains("nobody"),
        "{e}"
    );
    assert!(common::cli::Usage::is_usage(&e), "exit 2");
    sink.shutdown.trigger();
    let _ = sink.handle.join();
}
