//! A standing pool: `sink --serve` and `worker --serve` stay for batch after
//! batch. Two batches go through the same worker processes; a sink that dies
//! between batches is replaced and the same workers serve the next one; a
//! worker stopped mid-task has its task sent again, not reported failed; an
//! idle worker gives up after `--idle-exit`; SIGTERM to the sink ends the
//! pool (KILL: every worker exits 0). All real processes on free loopback
//! ports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::{Lines, endpoint_in, stop_within, time_bomb, wait_exit};
use nix::sys::signal::Signal;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker")).with_file_name(name)
}

/// A standing sink and the endpoints it bound.
struct Sink {
    child: Child,
    lines: Lines,
    results: String,
    control: String,
    feedback: String,
}

/// `sink --serve` writing into `dir`, on free ports (or on `at`'s, for a
/// sink that replaces one).
fn sink(dir: &Path, at: Option<&Sink>) -> Sink {
    let free = "tcp://127.0.0.1:*".to_string();
    let (r, c, f) = match at {
        Some(s) => (s.results.clone(), s.control.clone(), s.feedback.clone()),
        None => (free.clone(), free.clone(), free),
    };
    let mut child = Command::new(bin("sink"))
        .args(["--serve", "--output-dir"])
        .arg(dir)
        .args(["--result-endpoint", &r, "--control-endpoint", &c])
        .args(["--feedback-endpoint", &f, "--worker-timeout", "1s"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    let line = lines
        .wait_for("sink listening", Duration::from_secs(10))
        .expect("the sink says where it listens");
    Sink {
        results: endpoint_in(&line, "results").unwrap(),
        control: endpoint_in(&line, "control").unwrap(),
        feedback: endpoint_in(&line, "feedback").unwrap(),
        child,
        lines,
    }
}

/// A free loopback port's endpoint, for the ventilator to bind and the
/// workers to find (the next ventilator binds it again).
fn free_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// `worker --serve` for the pool of `sink`, taking tasks at `tasks`.
fn worker(sink: &Sink, tasks: &str, extra: &[&str]) -> (Child, Lines) {
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

/// Submits a batch read from `input` (plain lines are exec commands) and
/// waits for it: the ventilator's exit code and its stdout line.
fn submit(sink: &Sink, tasks: &str, input: &Path, workers: usize) -> (Option<i32>, String) {
    let out = Command::new(bin("ventilator"))
        .args([
            "--task-endpoint",
            tasks,
            "--feedback-endpoint",
            &sink.feedback,
        ])
        .args(["--workers", &workers.to_string(), "--wait", "20s"])
        .args(["--heartbeat", "200ms", "--input"])
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "the ventilator died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// The results file the ventilator's line names, read as task → (status,
/// output), each task at most once.
fn results_of(line: &str) -> HashMap<u64, (String, String)> {
    let path = line
        .rsplit_once("results in ")
        .and_then(|(_, at)| at.split_once(':'))
        .map(|(_, path)| path.to_string())
        .unwrap_or_else(|| panic!("no results path in {line:?}"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seen = HashMap::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let task = v["task"].as_u64().unwrap();
        let got = (
            v["status"].as_str().unwrap().to_string(),
            v["output"].as_str().unwrap().trim().to_string(),
        );
        assert!(seen.insert(task, got).is_none(), "task {task} twice");
    }
    seen
}

fn write_input(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
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
        let (code, line) = submit(&sink, &tasks, &write_input(dir.path(), "a", &a), 2);
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
        let (code, line) = submit(&sink, &tasks, &write_input(dir.path(), "b", &b), 2);
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
        let (code, line) = submit(&first, &tasks, &write_input(dir.path(), "a", &a), 1);
        assert_eq!(code, Some(0), "{line}");

        // The sink dies between batches; a new one binds the same ports.
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        let mut second = sink(&out, Some(&first));
        let b: Vec<String> = (0..5).map(|i| format!("echo b{i}")).collect();
        let (code, line) = submit(&second, &tasks, &write_input(dir.path(), "b", &b), 1);
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
        let input = write_input(dir.path(), "a", &[task]);
        let (mut first, _) = worker(&sink, &tasks, &[]);
        let sink_feedback = sink.feedback.clone();
        let tasks2 = tasks.clone();
        let submitted = std::thread::spawn(move || {
            let out = Command::new(bin("ventilator"))
                .args([
                    "--task-endpoint",
                    &tasks2,
                    "--feedback-endpoint",
                    &sink_feedback,
                ])
                .args(["--workers", "1", "--wait", "20s", "--heartbeat", "200ms"])
                .arg("--input")
                .arg(&input)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        });
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
