//! A ventilator killed (SIGKILL) mid-batch and started again on the same
//! tasks: without `--resume` it refuses to send the batch again; with it, it
//! sends only what the sink does not hold, and the output has every task
//! exactly once.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::{Lines, endpoint_in, stderr_of, wait_exit};
use support::*;

fn vent_process(feedback: &str, task_endpoint: &str, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ventilator"))
        .args([
            "--task-endpoint",
            task_endpoint,
            "--feedback-endpoint",
            feedback,
            "--tasks",
            "600",
            "--kind",
            "sleep",
            "--workload",
            "4",
            "--seed",
            "1",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_ventilator_killed_mid_batch_resumes_and_nothing_is_done_twice_in_the_output() {
    time_bomb(90, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        // A port the restarted ventilator binds again: not an ephemeral one.
        let mut first = vent_process(&sink.feedback, &common::testing::stable_endpoint(), &[]);
        let mut lines = Lines::of(&mut first);
        let line = lines
            .wait_for("ventilator listening", Duration::from_secs(10))
            .expect("the ventilator says where it listens");
        let tasks_at = endpoint_in(&line, "tasks").unwrap();
        let workers: Vec<_> = (0..2)
            .map(|_| spawn_worker(&ctx, worker_config(&tasks_at, &sink, &["--threads", "2"])))
            .collect();
        let count = || std::fs::read_to_string(&sink.output).map_or(0, |t| t.lines().count());
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < 150 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(count() < 600, "the batch ended before the kill");

        // The same tasks again, without --resume: refused, with the reason.
        let mut again = vent_process(&sink.feedback, &tasks_at, &[]);
        let status = wait_exit(&mut again, Duration::from_secs(20));
        assert_eq!(status.code(), Some(2));
        let err = stderr_of(&mut again);
        assert!(err.contains("pass --resume"), "{err}");

        let mut resumed = vent_process(&sink.feedback, &tasks_at, &["--resume"]);
        let status = wait_exit(&mut resumed, Duration::from_secs(40));
        let err = stderr_of(&mut resumed);
        assert!(status.success(), "{err}");
        assert!(err.contains("resuming batch"), "{err}");
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        for (_, w) in workers {
            w.join().unwrap().unwrap();
        }
        let mut seen = vec![0u32; 600];
        for l in read_lines(&sink.output) {
            seen[l["task"].as_u64().unwrap() as usize] += 1;
        }
        let wrong: Vec<_> = seen.iter().enumerate().filter(|(_, n)| **n != 1).collect();
        assert!(wrong.is_empty(), "not exactly once: {wrong:?}");
    });
}

#[test]
fn a_ventilator_started_again_after_its_last_task_went_out_hears_done() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        // Push dispatch: every task is out at once, so the kill comes after
        // the last one went out, and the batch completes without it.
        let vent = |extra: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_ventilator"))
                .args([
                    "--task-endpoint",
                    "tcp://127.0.0.1:*",
                    "--feedback-endpoint",
                ])
                .arg(&sink.feedback)
                .args(["--dispatch", "push", "--tasks", "6", "--kind", "sleep"])
                .args(["--workload", "250", "--wait", "5s"])
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut first = vent(&[]);
        let mut lines = Lines::of(&mut first);
        let line = lines
            .wait_for("ventilator listening", Duration::from_secs(10))
            .expect("the ventilator says where it listens");
        let tasks_at = endpoint_in(&line, "tasks").unwrap();
        let (_, w) = spawn_worker(
            &ctx,
            worker_config(&tasks_at, &sink, &["--dispatch", "push"]),
        );
        let count = || std::fs::read_to_string(&sink.output).map_or(0, |t| t.lines().count());
        let deadline = Instant::now() + Duration::from_secs(20);
        while count() < 1 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        first.kill().unwrap();
        first.wait().unwrap();
        // The worker runs the rest; the sink completes the batch and
        // repeats DONE for a dead ventilator.
        while count() < 6 {
            assert!(Instant::now() < deadline, "the batch did not complete");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut resumed = vent(&["--resume"]);
        let status = wait_exit(&mut resumed, Duration::from_secs(20));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut resumed.stdout.take().unwrap(), &mut out).unwrap();
        let err = stderr_of(&mut resumed);
        assert!(status.success(), "{status:?}: {err}");
        assert!(out.contains("complete, 6 ok"), "{out}");
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        w.join().unwrap().unwrap();
    });
}
