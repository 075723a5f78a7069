//! Crash-safe output: the sink is killed (SIGKILL) mid-batch and started
//! again with `--resume` on the same output; the ventilator notices the new
//! sink, learns what it holds, and sends the rest. The output ends with
//! every task exactly once.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::testing::{SinkProcess, time_bomb};
use common::work::Work;

/// The sink binary resuming `output`, on free ports or on `at`'s (the
/// sink it replaces).
fn sink_process(output: &std::path::Path, at: Option<&SinkProcess>) -> SinkProcess {
    let flags = ["--resume", "--worker-timeout", "1s", "--output"].map(std::ffi::OsStr::new);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sink"));
    common::testing::sink_process(bin, &[&flags[..], &[output.as_os_str()]].concat(), at)
}

type WorkerThread = std::thread::JoinHandle<Result<worker::Report, worker::Error>>;

/// Two workers of two threads on threads of this test, taking tasks at
/// `tasks_at` by `dispatch` and sending results to `sink`.
fn two_workers(
    ctx: &zmq::Context,
    tasks_at: &str,
    sink: &SinkProcess,
    dispatch: &str,
) -> Vec<WorkerThread> {
    (0..2)
        .map(|_| {
            let cfg = worker::Config::parse_from([
                "worker",
                "--task-endpoint",
                tasks_at,
                "--result-endpoint",
                &sink.results,
                "--control-endpoint",
                &sink.control,
                "--threads",
                "2",
                "--heartbeat",
                "200ms",
                "--dispatch",
                dispatch,
            ]);
            let ctx = ctx.clone();
            std::thread::spawn(move || worker::run(&cfg, &ctx, &Shutdown::new()))
        })
        .collect()
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_sink_killed_mid_batch_resumes_and_every_task_is_in_the_output_once() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("results.jsonl");
        let mut first = sink_process(&output, None);
        let ctx = zmq::Context::new();
        let vent_cfg = ventilator::Config::parse_from([
            "ventilator",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            &first.feedback,
            "--workers",
            "2",
        ]);
        let vent = ventilator::Ventilator::bind(&vent_cfg, &ctx).unwrap();
        let tasks_at = vent.bound()[0].clone();
        let tasks: Vec<Work> = (0..800).map(|_| Work::Sleep { ms: 4 }).collect();
        let v = std::thread::spawn(move || vent.run(&tasks, &Shutdown::new()));
        let workers = two_workers(&ctx, &tasks_at, &first, "credit");
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_lines(&output) < 200 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let written = count_lines(&output);
        assert!(written < 800, "the batch ended before the kill");
        // The same endpoints, the same output: it carries on.
        let mut second = sink_process(&output, Some(&first));
        let vr = v.join().unwrap().unwrap();
        assert!(vr.done.is_some(), "{vr:?}");
        assert!(vr.resent > 0, "{vr:?}");
        for w in workers {
            w.join().unwrap().unwrap();
        }
        let status = common::testing::wait_exit(&mut second.child, Duration::from_secs(10));
        assert!(status.success(), "{status:?}");
        let said = second.lines.all(Duration::from_millis(200));
        assert!(said.contains("already in the output"), "{said}");
        let text = std::fs::read_to_string(&output).unwrap();
        let mut seen = vec![0u32; 800];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("whole lines only");
            seen[v["task"].as_u64().unwrap() as usize] += 1;
        }
        let wrong: Vec<_> = seen.iter().enumerate().filter(|(_, n)| **n != 1).collect();
        assert!(wrong.is_empty(), "not exactly once: {wrong:?}");
    });
}

#[test]
fn resume_refuses_another_batchs_output_and_ordered_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("results.jsonl");
    std::fs::write(
        &output,
        "{\"task\":0,\"batch\":\"00000000000000aa\",\"status\":\"ok\"}\n{\"task\":1,\"batch\":\"00000000000000bb\",\"status\":\"ok\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args([
            "--resume",
            "--feedback-endpoint",
            "tcp://127.0.0.1:*",
            "--output",
        ])
        .arg(&output)
        .args([
            "--result-endpoint",
            "tcp://127.0.0.1:*",
            "--control-endpoint",
            "tcp://127.0.0.1:*",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("two batches"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(["--resume", "--ordered", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ordered"));
}

/// A sink killed at a third of a batch and started again with `--resume`
/// a second later takes the results that were on their way to it from the
/// moment it starts (before the ventilator has announced the batch again),
/// so the ventilator sends again only what it lacks: every task runs once,
/// but for what was out when the sink died. Each exec task writes its id
/// to a log as it runs.
fn resumed_sink_reruns_only_what_was_out(dispatch: &'static str) {
    time_bomb(90, move || {
        const TASKS: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("results.jsonl");
        let ran = dir.path().join("ran");
        let mut first = sink_process(&output, None);
        let ctx = zmq::Context::new();
        let vent_cfg = ventilator::Config::parse_from([
            "ventilator",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            &first.feedback,
            "--workers",
            "2",
            "--dispatch",
            dispatch,
            // What is out (sent, not acknowledged) is read off its metrics.
            "--metrics",
            "127.0.0.1:0",
        ]);
        let vent = ventilator::Ventilator::bind(&vent_cfg, &ctx).unwrap();
        let tasks_at = vent.bound()[0].clone();
        let metrics = vent.metrics_addr().expect("--metrics is served");
        let tasks: Vec<Work> = (0..TASKS)
            .map(|t| Work::Exec {
                command: format!("echo {t} >> {}; sleep 0.01", ran.display()),
                timeout_ms: None,
                stdin: None,
            })
            .collect();
        let v = std::thread::spawn(move || vent.run(&tasks, &Shutdown::new()));
        let workers = two_workers(&ctx, &tasks_at, &first, dispatch);
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_lines(&output) < TASKS / 3 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let written = count_lines(&output);
        std::thread::sleep(Duration::from_secs(1));
        // What is out as the sink comes back (sent, not acknowledged: in
        // push dispatch the whole rest of the batch, in credit dispatch a
        // few a thread): its results are on their way, or were lost with
        // the sink. Only those may run again.
        let text = common::testing::scrape(metrics);
        let out = common::testing::sample(&text, "zpipe_ventilator_tasks_in_flight", &[])
            .expect("the ventilator's tasks in flight") as usize;
        let mut second = sink_process(&output, Some(&first));
        let vr = v.join().unwrap().unwrap();
        assert!(vr.done.is_some(), "{vr:?}");
        for w in workers {
            w.join().unwrap().unwrap();
        }
        let status = common::testing::wait_exit(&mut second.child, Duration::from_secs(10));
        assert!(status.success(), "{status:?}");
        let runs = count_lines(&ran);
        assert!(
            runs <= TASKS + out,
            "{dispatch}: {runs} runs of {TASKS} tasks, with {out} out when the sink died ({written} written)"
        );
        let said = second.lines.all(Duration::from_millis(200));
        assert!(!said.contains("before any ventilator announced"), "{said}");
    });
}

#[test]
fn a_resumed_sink_takes_results_at_once_and_push_reruns_only_what_was_out() {
    resumed_sink_reruns_only_what_was_out("push");
}

#[test]
fn a_resumed_sink_takes_results_at_once_and_credit_reruns_only_what_was_out() {
    resumed_sink_reruns_only_what_was_out("credit");
}
