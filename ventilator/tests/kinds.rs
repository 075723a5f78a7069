//! Task kinds routed to the workers that serve them: real workers (threads
//! running `worker::run_with` with different handlers, or the binaries'
//! library), a real sink and ventilator, on free loopback ports.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::testing::{Lines, endpoint_in, stderr_of, wait_exit};
use common::work::{Outcome, Status, Work};
use ventilator::Plan;

mod support;
use support::*;

/// What one handler ran: the task's own kind (from its data), when it
/// began and when it ended.
type Ran = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// A handler that serves `kinds`, records what it runs and sleeps `ms`
/// per task, answering with its own name.
struct Recorder {
    name: &'static str,
    kinds: Vec<String>,
    ran: Ran,
    ms: u64,
}

impl worker::Handler for Recorder {
    fn run(&self, _task: &worker::TaskInfo<'_>, work: &Work) -> Outcome {
        let began = Instant::now();
        let Work::Data { data } = work else {
            return Outcome::failed(Status::Failed, "not a data task");
        };
        thread::sleep(Duration::from_millis(self.ms));
        let kind = data["kind"].as_str().unwrap_or("?").to_string();
        self.ran.lock().unwrap().push((kind, began, Instant::now()));
        Outcome::ok(self.name)
    }

    fn kinds(&self) -> Option<Vec<String>> {
        Some(self.kinds.clone())
    }
}

/// Starts a worker with `handler` on its own thread.
fn spawn_with(
    ctx: &zmq::Context,
    config: worker::Config,
    handler: Recorder,
) -> (common::Shutdown, WorkerHandle) {
    let shutdown = common::Shutdown::new();
    let stop = shutdown.clone();
    let ctx = ctx.clone();
    (
        shutdown,
        thread::spawn(move || worker::run_with(&config, &ctx, &stop, handler)),
    )
}

/// A data task of kind `kind` (its data says the kind too, so a handler
/// can tell what it was given).
fn task(kind: &str, n: u64) -> (Work, Option<String>) {
    (
        Work::Data {
            data: serde_json::json!({"kind": kind, "n": n}),
        },
        Some(kind.to_string()),
    )
}

#[test]
fn kind_b_runs_after_kind_a_each_on_its_own_kind_of_worker() {
    // py-zmq-pipeline's example 4: task type A on one kind of worker, task
    // type B on another, and B only once A is done.
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "2"]);
        let at = vent.bound()[0].clone();
        let (ran_a, ran_b): (Ran, Ran) = Default::default();
        let a = Recorder {
            name: "worker-a",
            kinds: vec!["A".into()],
            ran: ran_a.clone(),
            ms: 30,
        };
        let b = Recorder {
            name: "worker-b",
            kinds: vec!["B".into()],
            ran: ran_b.clone(),
            ms: 5,
        };
        let (_, wa) = spawn_with(&ctx, worker_config(&at, &sink, &["--threads", "2"]), a);
        let (_, wb) = spawn_with(&ctx, worker_config(&at, &sink, &["--threads", "2"]), b);
        // Interleaved in the input: A, B, A, B...; B tasks are stage 1.
        let mut plan = Plan::default();
        for i in 0..12u64 {
            let kind = if i % 2 == 0 { "A" } else { "B" };
            let (work, name) = task(kind, i);
            plan.works.push(work);
            plan.kinds.push(name);
            plan.stage.push(u32::from(kind == "B"));
            plan.cost.push(None);
            plan.ids.push(None);
        }
        let report = vent.run_plan(&plan, &common::Shutdown::new()).unwrap();
        assert_eq!(report.done.as_ref().map(|d| d.ok), Some(12), "{report:?}");
        let sreport = sink.handle.join().unwrap().unwrap();
        assert!(sreport.complete);
        wa.join().unwrap().unwrap();
        wb.join().unwrap().unwrap();
        let (ran_a, ran_b) = (ran_a.lock().unwrap(), ran_b.lock().unwrap());
        // Each kind ran on its own kind of worker, and only there.
        assert_eq!(ran_a.len(), 6, "{ran_a:?}");
        assert_eq!(ran_b.len(), 6, "{ran_b:?}");
        assert!(ran_a.iter().all(|r| r.0 == "A"), "{ran_a:?}");
        assert!(ran_b.iter().all(|r| r.0 == "B"), "{ran_b:?}");
        // B only after all of A.
        let last_a = ran_a.iter().map(|r| r.2).max().unwrap();
        let first_b = ran_b.iter().map(|r| r.1).min().unwrap();
        assert!(first_b >= last_a, "a B task began before the last A ended");
        // The sink's output says who answered each task.
        let lines = read_lines(&sink.output);
        assert_eq!(lines.len(), 12);
        for l in &lines {
            let t = l["task"].as_u64().unwrap();
            let want = if t % 2 == 0 { "worker-a" } else { "worker-b" };
            assert_eq!(l["output"], want, "{l}");
        }
    });
}

#[test]
fn a_task_never_goes_to_a_worker_that_does_not_serve_its_kind() {
    // Two built-in workers, one for exec and one for primes, and a batch
    // that mixes them with a data kind of its own served by a third.
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "3"]);
        let at = vent.bound()[0].clone();
        let (_, we) = spawn_worker(&ctx, worker_config(&at, &sink, &["--kinds", "exec"]));
        let (_, wp) = spawn_worker(&ctx, worker_config(&at, &sink, &["--kinds", "primes"]));
        let ran_c = Ran::default();
        let c = Recorder {
            name: "worker-c",
            kinds: vec!["C".into()],
            ran: ran_c.clone(),
            ms: 1,
        };
        let (_, wc) = spawn_with(&ctx, worker_config(&at, &sink, &[]), c);
        let mut plan = Plan::default();
        for i in 0..30u64 {
            let (work, name) = match i % 3 {
                0 => (
                    Work::Exec {
                        command: "echo ran".into(),
                        timeout_ms: None,
                        stdin: None,
                    },
                    None,
                ),
                1 => (Work::Primes { from: 0, to: 100 }, None),
                _ => task("C", i),
            };
            plan.works.push(work);
            plan.kinds.push(name);
        }
        plan.cost = vec![None; 30];
        plan.ids = vec![None; 30];
        let report = vent.run_plan(&plan, &common::Shutdown::new()).unwrap();
        let done = report.done.clone().unwrap();
        assert_eq!((done.ok, done.failed), (30, 0), "{report:?}");
        sink.handle.join().unwrap().unwrap();
        // Each worker ran exactly its kind: a task on the wrong worker would
        // fail (`rejected`, or the built-in handler's "no handler for data
        // tasks"), and the counts would not be ten each.
        let (e, p, c) = (
            we.join().unwrap().unwrap(),
            wp.join().unwrap().unwrap(),
            wc.join().unwrap().unwrap(),
        );
        assert_eq!((e.tasks, e.failed), (10, 0));
        assert_eq!((p.tasks, p.failed), (10, 0));
        assert_eq!((c.tasks, c.failed), (10, 0));
        assert!(ran_c.lock().unwrap().iter().all(|r| r.0 == "C"));
        for l in read_lines(&sink.output) {
            let want = match l["task"].as_u64().unwrap() % 3 {
                0 => "ran\n",
                1 => "25",
                _ => "worker-c",
            };
            assert_eq!(l["output"], want, "{l}");
        }
    });
}

#[test]
fn workers_for_a_kind_hold_go_until_one_serving_it_is_ready() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(
            &ctx,
            &sink,
            &["--workers", "1", "--workers-for", "C=1", "--wait", "30s"],
        );
        let at = vent.bound()[0].clone();
        let (_, we) = spawn_worker(&ctx, worker_config(&at, &sink, &[]));
        let mut plan = Plan::from(vec![Work::Noop; 4]);
        let (work, name) = task("C", 4);
        plan.works.push(work);
        plan.kinds = vec![None, None, None, None, name];
        plan.cost.push(None);
        let began = Instant::now();
        let v = thread::spawn(move || vent.run_plan(&plan, &common::Shutdown::new()));
        // One worker is ready, as --workers 1 asks, but none serves C yet.
        thread::sleep(Duration::from_millis(1500));
        assert!(
            read_lines(&sink.output).is_empty(),
            "the batch started before a worker of kind C was ready"
        );
        let c = Recorder {
            name: "worker-c",
            kinds: vec!["C".into()],
            ran: Ran::default(),
            ms: 1,
        };
        let (_, wc) = spawn_with(&ctx, worker_config(&at, &sink, &[]), c);
        let report = v.join().unwrap().unwrap();
        assert_eq!(report.done.as_ref().map(|d| d.ok), Some(5), "{report:?}");
        assert!(
            report.wait_ms >= 1400.0 && report.wait_ms < began.elapsed().as_secs_f64() * 1000.0,
            "GO after {} ms",
            report.wait_ms
        );
        assert_eq!(report.workers, 2);
        sink.handle.join().unwrap().unwrap();
        we.join().unwrap().unwrap();
        wc.join().unwrap().unwrap();
    });
}

fn ventilator_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ventilator"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn a_kind_no_worker_serves_is_named_in_the_log_while_the_others_go_on() {
    time_bomb(90, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Z first in the input: it must not hold up the exec tasks.
        writeln!(
            file,
            "{{\"kind\":\"data\",\"type\":\"Z\",\"data\":1}}\n{{\"kind\":\"data\",\"type\":\"Z\",\"data\":2}}\necho one\necho two\necho three"
        )
        .unwrap();
        let mut child = ventilator_bin()
            .args([
                "--task-endpoint",
                "tcp://127.0.0.1:*",
                "--feedback-endpoint",
                &sink.feedback,
                "--input",
            ])
            .arg(file.path())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        let mut lines = Lines::of(&mut child);
        let line = lines
            .wait_for("listening", Duration::from_secs(10))
            .expect("the ventilator says where it listens");
        let at = endpoint_in(&line, "tasks").expect("an endpoint");
        let (_, we) = spawn_worker(&ctx, worker_config(&at, &sink, &[]));
        let waits = lines.wait_for("kind Z wait", Duration::from_secs(20));
        let waits = waits.unwrap_or_else(|| lines.all(Duration::from_millis(100)));
        assert!(waits.contains("2 task(s) of kind Z wait"), "{waits}");
        assert!(waits.contains("--kinds Z"), "{waits}");
        // Meanwhile the exec tasks were done.
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_lines(&sink.output).len() < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let done = read_lines(&sink.output);
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(done.iter().all(|l| l["status"] == "ok"), "{done:?}");
        // Said again while it waits, at a steady rate.
        let before = lines
            .all(Duration::from_millis(10))
            .matches("kind Z wait")
            .count();
        let again = lines.wait_for("__never__", Duration::from_secs(6));
        assert!(again.is_none());
        let after = lines
            .all(Duration::from_millis(10))
            .matches("kind Z wait")
            .count();
        assert!(after > before, "said {before} times, then {after}");
        // A worker of kind Z comes: the batch completes.
        let z = Recorder {
            name: "worker-z",
            kinds: vec!["Z".into()],
            ran: Ran::default(),
            ms: 1,
        };
        let (_, wz) = spawn_with(&ctx, worker_config(&at, &sink, &[]), z);
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert!(
            status.success(),
            "{}",
            lines.all(Duration::from_millis(100))
        );
        sink.handle.join().unwrap().unwrap();
        we.join().unwrap().unwrap();
        wz.join().unwrap().unwrap();
        let out = read_lines(&sink.output);
        assert_eq!(out.len(), 5);
        assert!(out.iter().filter(|l| l["output"] == "worker-z").count() == 2);
    });
}

#[test]
fn push_dispatch_refuses_a_batch_of_several_kinds() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "echo one\n{{\"kind\":\"primes\",\"from\":0,\"to\":9}}"
    )
    .unwrap();
    let mut child = ventilator_bin()
        .args([
            "--dispatch",
            "push",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:9",
            "--input",
        ])
        .arg(file.path())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("push dispatch cannot route task kinds")
            && err.contains("2 (exec, primes)")
            && err.contains("--dispatch credit"),
        "{err}"
    );
    // One kind is fine in push dispatch (it waits for a sink here).
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "echo one\necho two").unwrap();
    let mut child = ventilator_bin()
        .args([
            "--dispatch",
            "push",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:9",
            "--wait",
            "300ms",
            "--input",
        ])
        .arg(file.path())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert_ne!(status.code(), Some(2), "{err}");
    assert!(err.contains("no sink answered"), "{err}");
}

#[test]
fn push_dispatch_waits_while_a_ready_worker_does_not_serve_the_batchs_kind() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(
            &ctx,
            &sink,
            &["--dispatch", "push", "--workers", "1", "--wait", "2s"],
        );
        let at = vent.bound()[0].clone();
        // A push worker that serves primes only, for a batch of exec tasks.
        let (stop, w) = spawn_worker(
            &ctx,
            worker_config(&at, &sink, &["--dispatch", "push", "--kinds", "primes"]),
        );
        let err = vent
            .run(
                &[Work::Exec {
                    command: "echo hi".into(),
                    timeout_ms: None,
                    stdin: None,
                }],
                &common::Shutdown::new(),
            )
            .unwrap_err();
        assert!(matches!(err, ventilator::Error::KindUnserved(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("do not serve kind exec") && text.contains("--dispatch credit"),
            "{text}"
        );
        assert!(read_lines(&sink.output).is_empty(), "a task was dealt");
        stop.trigger();
        sink.shutdown.trigger();
        let _ = w.join();
        let _ = sink.handle.join();
    });
}
