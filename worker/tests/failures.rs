//! Tests that kill: worker processes die (SIGKILL), freeze (SIGSTOP), join
//! late, or all die at once, in both dispatch modes, directly and through a
//! device on the task path. Every time, each task's result is in the sink's
//! output exactly once. The sink, the ventilator and any device run on
//! threads of this test; the workers are real processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::testing::time_bomb;
use common::work::Work;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Heartbeats in these tests: the worker's, and how long the sink waits
/// before it calls a worker lost; the ventilator's liveness is 3 of them.
const BEAT: &str = "200ms";
const LOST_AFTER: &str = "700ms";

struct Lab {
    mode: &'static str,
    tasks_at: String,
    results_at: String,
    control_at: String,
    output: PathBuf,
    sink: Option<JoinHandle<Result<sink::Report, sink::Error>>>,
    vent: Option<JoinHandle<Result<ventilator::Report, ventilator::Error>>>,
    device: Option<(Shutdown, JoinHandle<Result<devices::Stats, devices::Error>>)>,
    workers: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// A sink and a ventilator for `tasks` sleeps of `ms` each, the
    /// ventilator starting once `workers` are ready; with `device`, a queue
    /// (credit) or a streamer (push) sits on the task path.
    fn new(mode: &'static str, tasks: u64, ms: u64, workers: usize, device: bool) -> Lab {
        let plan: Vec<Work> = (0..tasks).map(|_| Work::Sleep { ms }).collect();
        Lab::with(mode, plan, workers, device, &["--retries", "10"])
    }

    fn with(
        mode: &'static str,
        plan: Vec<Work>,
        workers: usize,
        device: bool,
        extra: &[&str],
    ) -> Lab {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("results.jsonl");
        let sink_cfg = sink::Config::parse_from(
            std::iter::once("sink")
                .chain(common::testing::SINK_ON_FREE_PORTS)
                .chain(["--worker-timeout", LOST_AFTER]),
        );
        let s = sink::Sink::bind(&sink_cfg, &ctx).unwrap();
        let sb = s.bound().clone();
        let out = sink::open_output(&output).unwrap();
        let sink = std::thread::spawn(move || s.run(&Shutdown::new(), out));

        let (vent_endpoint, device, worker_endpoint) = if device {
            let kind = if mode == "credit" {
                devices::Kind::Queue
            } else {
                devices::Kind::Streamer
            };
            let args = devices::DeviceArgs::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").unwrap();
            let d = devices::Device::bind(kind, &args, &ctx).unwrap();
            let b = d.bound().clone();
            let stop = Shutdown::new();
            let s2 = stop.clone();
            let h = std::thread::spawn(move || d.run(&s2));
            // The ventilator faces a streamer's PULL frontend or a queue's
            // DEALER backend; the workers the other side.
            let (v, w) = if mode == "credit" {
                (b.backend[0].clone(), b.frontend[0].clone())
            } else {
                (b.frontend[0].clone(), b.backend[0].clone())
            };
            (format!(">{v}"), Some((stop, h)), Some(w))
        } else {
            ("tcp://127.0.0.1:*".to_string(), None, None)
        };
        let workers_s = workers.to_string();
        let mut args = vec![
            "ventilator",
            "--task-endpoint",
            &vent_endpoint,
            "--feedback-endpoint",
            &sb.feedback[0],
            "--dispatch",
            mode,
            "--workers",
            &workers_s,
            "--heartbeat",
            BEAT,
            // Push: few enough tasks out at once that a late joiner gets
            // some (the default would deal this whole batch at once).
            "--window",
            "40",
        ];
        // A lease of 4 s, unless the test gives its own.
        if !extra.contains(&"--task-timeout") {
            args.extend_from_slice(&["--task-timeout", "4s"]);
        }
        args.extend_from_slice(extra);
        let vent_cfg = ventilator::Config::parse_from(args);
        let v = ventilator::Ventilator::bind(&vent_cfg, &ctx).unwrap();
        let tasks_at = worker_endpoint.unwrap_or_else(|| v.bound()[0].clone());
        let vent = std::thread::spawn(move || v.run(&plan, &Shutdown::new()));
        Lab {
            mode,
            tasks_at,
            results_at: sb.results[0].clone(),
            control_at: sb.control[0].clone(),
            output,
            sink: Some(sink),
            vent: Some(vent),
            device,
            workers: Vec::new(),
            _dir: dir,
        }
    }

    /// Starts a worker process; returns its index.
    fn worker(&mut self) -> usize {
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args([
                "--task-endpoint",
                &self.tasks_at,
                "--result-endpoint",
                &self.results_at,
                "--control-endpoint",
                &self.control_at,
                "--dispatch",
                self.mode,
                "--heartbeat",
                BEAT,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.workers.push(child);
        self.workers.len() - 1
    }

    fn signal(&self, i: usize, signal: Signal) {
        kill(Pid::from_raw(self.workers[i].id() as i32), signal).unwrap();
    }

    /// Results in the output so far (the sink writes a result out before it
    /// acknowledges it).
    fn results(&self) -> usize {
        std::fs::read_to_string(&self.output)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn wait_results(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.results() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} results",
                self.results()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the batch to end; checks that every task is in the output
    /// exactly once. Returns the reports and the tasks each worker process
    /// (by pid) did.
    fn finish(self, tasks: u64) -> (sink::Report, ventilator::Report, HashMap<String, u64>) {
        let (s, v, by, failed) = self.finish_with_failures(tasks);
        assert!(failed.is_empty(), "{failed:?}");
        (s, v, by)
    }

    /// As [`Lab::finish`], and returns the results that were not ok.
    fn finish_with_failures(
        mut self,
        tasks: u64,
    ) -> (
        sink::Report,
        ventilator::Report,
        HashMap<String, u64>,
        Vec<serde_json::Value>,
    ) {
        let mut failed = Vec::new();
        let sink = self.sink.take().unwrap().join().unwrap().unwrap();
        let vent = self.vent.take().unwrap().join().unwrap().unwrap();
        assert!(sink.complete, "{sink:?}");
        assert!(vent.done.is_some(), "{vent:?}");
        let text = std::fs::read_to_string(&self.output).unwrap();
        let mut seen = vec![0u32; tasks as usize];
        let mut by_worker = HashMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = v["task"].as_u64().unwrap();
            seen[t as usize] += 1;
            if v["status"] != "ok" {
                failed.push(v.clone());
            }
            *by_worker
                .entry(v["worker"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        let wrong: Vec<(usize, u32)> = seen
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 1)
            .map(|(t, n)| (t, *n))
            .collect();
        assert!(wrong.is_empty(), "tasks not exactly once: {wrong:?}");
        (sink, vent, by_worker, failed)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = kill(Pid::from_raw(w.id() as i32), Signal::SIGCONT);
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some((stop, h)) = self.device.take() {
            stop.trigger();
            let _ = h.join();
        }
    }
}

/// (a) SIGKILL one of four workers mid-batch: nothing is lost.
fn sigkill_one_of_four(mode: &'static str, device: bool) {
    time_bomb(60, move || {
        let mut lab = Lab::new(mode, 1000, 8, 4, device);
        for _ in 0..4 {
            lab.worker();
        }
        lab.wait_results(250);
        let killed = Instant::now();
        lab.signal(0, Signal::SIGKILL);
        let (sink, vent, _) = lab.finish(1000);
        // Three workers had at most 750 × 8 ms = 2 s of work left; a dead
        // worker is noticed within a few heartbeats (the sink's or the
        // ventilator's), or at worst the task timeout.
        let after = killed.elapsed();
        assert!(after < Duration::from_secs(9), "{after:?}");
        assert!(vent.workers_lost >= 1, "{vent:?}");
        assert_eq!(sink.ok, 1000);
    });
}

#[test]
fn credit_sigkill_one_of_four_workers_loses_nothing() {
    sigkill_one_of_four("credit", false);
}

#[test]
fn push_sigkill_one_of_four_workers_loses_nothing() {
    sigkill_one_of_four("push", false);
}

#[test]
fn credit_through_a_queue_sigkill_one_of_four_workers_loses_nothing() {
    sigkill_one_of_four("credit", true);
}

#[test]
fn push_through_a_streamer_sigkill_one_of_four_workers_loses_nothing() {
    sigkill_one_of_four("push", true);
}

/// (b) SIGSTOP a worker, SIGCONT it once it has been given up for dead: its
/// late results are duplicates, and the output has none.
fn sigstop_then_sigcont(mode: &'static str) {
    time_bomb(60, move || {
        let mut lab = Lab::new(mode, 600, 10, 3, false);
        for _ in 0..3 {
            lab.worker();
        }
        lab.wait_results(100);
        lab.signal(1, Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(1500));
        lab.signal(1, Signal::SIGCONT);
        let (sink, vent, _) = lab.finish(600);
        assert_eq!(sink.ok, 600);
        assert!(vent.resent >= 1, "{vent:?}");
    });
}

#[test]
fn credit_sigstop_then_sigcont_duplicates_nothing() {
    sigstop_then_sigcont("credit");
}

#[test]
fn push_sigstop_then_sigcont_duplicates_nothing() {
    sigstop_then_sigcont("push");
}

/// (c) A worker that joins mid-batch gets work.
fn join_mid_batch(mode: &'static str) {
    time_bomb(60, move || {
        let mut lab = Lab::new(mode, 400, 10, 1, false);
        lab.worker();
        lab.wait_results(50);
        lab.worker();
        let (sink, _, by_worker) = lab.finish(400);
        assert_eq!(sink.ok, 400);
        assert_eq!(by_worker.len(), 2, "{by_worker:?}");
        assert!(by_worker.values().all(|&n| n >= 20), "{by_worker:?}");
    });
}

#[test]
fn credit_a_worker_joining_mid_batch_gets_work() {
    join_mid_batch("credit");
}

#[test]
fn push_a_worker_joining_mid_batch_gets_work() {
    join_mid_batch("push");
}

/// (d) Every worker dies; new ones start; the batch completes.
fn all_die_then_new_ones(mode: &'static str) {
    time_bomb(60, move || {
        let mut lab = Lab::new(mode, 400, 5, 2, false);
        lab.worker();
        lab.worker();
        lab.wait_results(100);
        lab.signal(0, Signal::SIGKILL);
        lab.signal(1, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(1200));
        let before = lab.results();
        assert!(before < 400, "the batch ended without workers");
        lab.worker();
        lab.worker();
        let (sink, _, by_worker) = lab.finish(400);
        assert_eq!(sink.ok, 400);
        assert!(by_worker.len() >= 3, "{by_worker:?}");
    });
}

#[test]
fn credit_all_workers_die_then_new_ones_finish_the_batch() {
    all_die_then_new_ones("credit");
}

#[test]
fn push_all_workers_die_then_new_ones_finish_the_batch() {
    all_die_then_new_ones("push");
}

/// A task that kills whichever worker runs it (SIGKILL to its parent) is
/// sent again to the next worker, then given up after `--retries`; it is
/// reported failed with the reason, and the batch completes on the worker
/// left.
///
/// Credit dispatch only: in push dispatch a worker names what it holds
/// only in its heartbeats, and this poison kills it before the next one,
/// so the poison is charged only once it has gone out more often than
/// `--retries` allows (see `ventilator::push::worker_lost`): it takes down
/// more workers than three before it is given up.
fn a_poison_task_is_given_up(mode: &'static str) {
    time_bomb(60, move || {
        let mut plan: Vec<Work> = (0..200).map(|_| Work::Sleep { ms: 5 }).collect();
        plan[20] = Work::Exec {
            command: "kill -9 $PPID; sleep 5".into(),
            timeout_ms: None,
            stdin: None,
        };
        let mut lab = Lab::with(mode, plan, 3, false, &["--retries", "1"]);
        for _ in 0..3 {
            lab.worker();
        }
        let (sink, vent, _, failed) = lab.finish_with_failures(200);
        // A task queued behind the poison on a worker it killed shares its
        // fate (it lost two workers too); the rest are ok.
        assert!(sink.ok >= 195, "{sink:?}");
        assert!(failed.iter().any(|f| f["task"] == 20), "{failed:?}");
        for f in &failed {
            assert_eq!(f["worker"], "ventilator");
            let why = f["error"].as_str().unwrap();
            assert!(why.contains("given up after 2 attempt(s)"), "{why}");
        }
        assert_eq!(vent.given_up as usize, failed.len(), "{vent:?}");
    });
}

#[test]
fn credit_a_task_that_kills_its_workers_is_given_up_and_the_batch_completes() {
    a_poison_task_is_given_up("credit");
}

/// Push dispatch, two of four workers killed one after the other with
/// `--retries 1`: every task out goes out again each time (a PUSH cannot
/// tell who holds what), but only what a dead worker said it held is
/// charged, so no task is given up that did not start on both dead
/// workers. Each task writes its id and its worker's pid to a log as it
/// starts.
#[test]
fn push_two_of_four_workers_killed_charge_only_what_they_held() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("started");
        // Long enough that what goes out again after the first loss is
        // still out at the second.
        let plan: Vec<Work> = (0..120)
            .map(|t| Work::Exec {
                command: format!("echo {t} $PPID >> {}; sleep 0.15", log.display()),
                timeout_ms: None,
                stdin: None,
            })
            .collect();
        // Leases long enough that no task runs out of its own merely by
        // waiting in a live worker's queue (the window's 40 tasks over the
        // two left are 3 s of work, more on a loaded machine): what is
        // charged here is only what the lost workers held.
        let mut lab = Lab::with(
            "push",
            plan,
            4,
            false,
            &["--retries", "1", "--task-timeout", "15s"],
        );
        for _ in 0..4 {
            lab.worker();
        }
        let pids: Vec<u32> = lab.workers.iter().map(Child::id).collect();
        lab.wait_results(20);
        lab.signal(0, Signal::SIGKILL);
        // Once the sink has called it lost and its tasks went out again
        // (attempt 2), the second dies: what is out now was re-sent once.
        std::thread::sleep(Duration::from_millis(1100));
        lab.signal(1, Signal::SIGKILL);
        let (sink, vent, _, failed) = lab.finish_with_failures(120);
        assert_eq!(vent.workers_lost, 2, "{vent:?}");
        assert!(vent.resent > 0, "{vent:?}");
        let started = std::fs::read_to_string(&log).unwrap();
        let on = |task: u64, pid: u32| started.lines().any(|l| l == format!("{task} {pid}"));
        for f in &failed {
            let t = f["task"].as_u64().unwrap();
            assert!(
                on(t, pids[0]) && on(t, pids[1]),
                "task {t} was given up though it did not start on both dead workers: {f}"
            );
        }
        assert_eq!(sink.ok as usize + failed.len(), 120);
    });
}
