//! A standing pool: `sink --serve` and `worker --serve` stay for batch after
//! batch. Two batches go through the same worker processes; a sink that dies
//! between batches is replaced and the same workers serve the next one; one
//! killed mid-batch is replaced and the batch completes, every result once; a
//! worker stopped mid-task has its task sent again, not reported failed; an
//! idle worker gives up after `--idle-exit`; SIGTERM to the sink ends the
//! pool (KILL: every worker exits 0). All real processes on free loopback
//! ports.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::{Lines, stop_within, time_bomb, wait_exit};
use nix::sys::signal::Signal;
use support::{
    ServeSink, bin, free_endpoint, results_of, serve_sink as sink, submit_in_background,
    wait_for_results, write_input,
};

/// [`support::submit`] to `sink`'s pool.
fn submit(
    sink: &ServeSink,
    tasks: &str,
    input: &std::path::Path,
    workers: usize,
) -> (Option<i32>, String) {
    support::submit(tasks, &sink.feedback, input, workers)
}

/// `worker --serve` for the pool of `sink`, taking tasks at `tasks`.
fn worker(sink: &ServeSink, tasks: &str, extra: &[&str]) -> (Child, Lines) {
    let mut child = Command::new(bin("worker"))
        .args(["--serve", "--heartbeat", "200ms"])
        .args(["--task-endpoint", tasks, "--result-endpoint", &sink.results])
        .args(["--control-endpoint", &sink.control])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    (child, lines)
}

#[test]
fn two_batches_through_the_same_workers_then_sigterm_ends_the_pool() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut sink = sink(&out, None);
        let tasks = free_endpoint();
        let mut workers: Vec<(Child, Lines)> = (0..2)
            .map(|_| worker(&sink, &tasks, &["--threads", "2"]))
            .collect();
        let pids: Vec<u32> = workers.iter().map(|(c, _)| c.id()).collect();

        // Batch A: every task ok; each command says which worker ran it.
        let a: Vec<String> = (0..20).map(|i| format!("echo {i} $PPID")).collect();
        let (code, line) = submit(&sink, &tasks, &write_input(&dir.path().join("a"), &a), 2);
        assert_eq!(code, Some(0), "{line}");
        assert!(line.contains("complete, 20 ok, 0 failed"), "{line}");
        let got = results_of(&line);
        assert_eq!(got.len(), 20);
        for (task, (status, output)) in &got {
            assert_eq!(status, "ok");
            assert!(output.starts_with(&format!("{task} ")), "{output}");
        }
        // Batch B, to the same workers: one task fails, and the exit code
        // says so.
        let b = vec!["echo b".to_string(), "exit 7".into(), "echo c".into()];
        let (code, line) = submit(&sink, &tasks, &write_input(&dir.path().join("b"), &b), 2);
        assert_eq!(code, Some(3), "complete with a failed task: {line}");
        let got = results_of(&line);
        assert_eq!(got.len(), 3);
        assert_eq!(got[&1].0, "failed");
        // Both batches were served by the workers started once.
        for (child, _) in &mut workers {
            assert!(child.try_wait().unwrap().is_none(), "a worker left");
        }
        assert_eq!(
            pids,
            workers.iter().map(|(c, _)| c.id()).collect::<Vec<_>>()
        );
        // Each batch's report is beside its results (written once DONE is
        // out, so it may come a moment after the ventilator returns).
        let reports = || {
            std::fs::read_dir(&out)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().ends_with(".report.json")
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while reports() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(reports(), 2);

        // SIGTERM ends the pool: KILL to the workers, which exit 0.
        let status = stop_within(&mut sink.child, Signal::SIGTERM, Duration::from_secs(3));
        assert!(status.success(), "an idle pool ends with 0: {status:?}");
        for (child, lines) in &mut workers {
            let status = wait_exit(child, Duration::from_secs(5));
            assert!(status.success(), "{status:?}");
            assert!(lines.wait_for("Kill", Duration::from_secs(1)).is_some());
        }
        let log = sink.lines.all(Duration::from_millis(100));
        assert!(log.contains("KILL to every worker"), "{log}");
    });
}

#[test]
fn workers_outlive_a_sink_that_dies_and_serve_its_successor() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut first = sink(&out, None);
        let tasks = free_endpoint();
        let (mut w, mut lines) = worker(&first, &tasks, &[]);
        let a: Vec<String> = (0..5).map(|i| format!("echo {i}")).collect();
        let (code, line) = submit(&first, &tasks, &write_input(&dir.path().join("a"), &a), 1);
        assert_eq!(code, Some(0), "{line}");

        // The sink dies between batches; a new one binds the same ports.
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let mut second = sink(&out, Some(&first));
        let b: Vec<String> = (0..5).map(|i| format!("echo b{i}")).collect();
        let (code, line) = submit(&second, &tasks, &write_input(&dir.path().join("b"), &b), 1);
        assert_eq!(code, Some(0), "{line}");
        assert_eq!(results_of(&line).len(), 5);
        assert!(w.try_wait().unwrap().is_none(), "the worker left");
        assert!(
            lines
                .wait_for("waiting for the next", Duration::from_secs(1))
                .is_some()
        );

        stop_within(&mut second.child, Signal::SIGTERM, Duration::from_secs(3));
        assert!(wait_exit(&mut w, Duration::from_secs(5)).success());
    });
}

#[test]
fn a_sink_killed_mid_batch_is_replaced_and_the_batch_completes_on_the_same_workers() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut first = sink(&out, None);
        let tasks = free_endpoint();
        let mut workers: Vec<(Child, Lines)> =
            (0..2).map(|_| worker(&first, &tasks, &[])).collect();
        let batch: Vec<String> = (0..40).map(|i| format!("sleep 0.05; echo {i}")).collect();
        let input = write_input(&dir.path().join("a"), &batch);
        let submitted = submit_in_background(&tasks, &first.feedback, &input, 2);
        // A few results written, then the sink dies without a word.
        wait_for_results(&out, 5);
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        // Its successor carries the batch on from the results file.
        let mut second = sink(&out, Some(&first));
        let (code, line) = submitted.join().unwrap();
        assert_eq!(code, Some(0), "{line}");
        let got = results_of(&line);
        assert_eq!(got.len(), 40, "every task once: {line}");
        for (task, (status, output)) in &got {
            assert_eq!(
                (status.as_str(), output.as_str()),
                ("ok", task.to_string().as_str())
            );
        }
        for (child, _) in &mut workers {
            assert!(child.try_wait().unwrap().is_none(), "a worker left");
        }
        stop_within(&mut second.child, Signal::SIGTERM, Duration::from_secs(3));
        for (child, _) in &mut workers {
            assert!(wait_exit(child, Duration::from_secs(5)).success());
        }
    });
}

#[test]
fn a_worker_stopped_mid_task_does_not_report_it_and_another_runs_it() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir.path().join("out"), None);
        let tasks = free_endpoint();
        let started = dir.path().join("started");
        // The first worker to take the task marks it and sleeps; the second
        // run (elsewhere) finds the mark and finishes at once.
        let task = format!(
            "if [ -e {m} ]; then echo again; else touch {m}; sleep 30; fi",
            m = started.display()
        );
        let input = write_input(&dir.path().join("a"), &[task]);
        let (mut first, _) = worker(&sink, &tasks, &[]);
        let submitted = submit_in_background(&tasks, &sink.feedback, &input, 1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.exists() {
            assert!(Instant::now() < deadline, "the task never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut second, _) = worker(&sink, &tasks, &[]);
        std::thread::sleep(Duration::from_millis(500));
        let status = stop_within(&mut first, Signal::SIGTERM, Duration::from_secs(2));
        assert!(status.success(), "{status:?}");
        let (code, line) = submitted.join().unwrap();
        assert_eq!(code, Some(0), "the task ran again, ok: {line}");
        let got = results_of(&line);
        assert_eq!(got[&0], ("ok".to_string(), "again".to_string()));

        stop_within(&mut sink.child, Signal::SIGTERM, Duration::from_secs(3));
        assert!(wait_exit(&mut second, Duration::from_secs(5)).success());
    });
}

#[test]
fn an_idle_worker_leaves_after_idle_exit() {
    time_bomb(30, || {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(&dir.path().join("out"), None);
        let t = Instant::now();
        let (mut w, mut lines) = worker(&sink, &free_endpoint(), &["--idle-exit", "500ms"]);
        let status = wait_exit(&mut w, Duration::from_secs(10));
        assert!(status.success(), "{status:?}");
        assert!(t.elapsed() >= Duration::from_millis(500));
        assert!(
            lines
                .wait_for("--idle-exit", Duration::from_secs(1))
                .is_some()
        );
        stop_within(&mut sink.child, Signal::SIGTERM, Duration::from_secs(3));
    });
}
