//! `--metrics` on a whole pool: a standing sink and a ventilator in this
//! process, a worker binary, each serving Prometheus metrics on a free
//! loopback port. Each role's `/metrics` is read mid-batch (one long task
//! holds the batch open) and after it: the values say what happened, and
//! `promtool check metrics` passes on each. A bad address or one in use
//! stops the worker with exit code 2 before it connects anywhere.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::testing::{
    Lines, SINK_ON_FREE_PORTS, http_get, promtool_check, sample, scrape, time_bomb, wait_exit,
};
use common::work::Work;

/// Fails on what promtool finds wrong; says so where it is missing.
fn check_format(role: &str, text: &str) {
    match promtool_check(text) {
        None => eprintln!(
            "promtool is not installed (Debian's prometheus package): the {role}'s metrics are not checked by it"
        ),
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("the {role}'s metrics: {e}"),
    }
}

/// Scrapes `addr` until `ready` says the text shows what is awaited, at
/// most 20 s.
fn scrape_until(addr: impl std::fmt::Display, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&addr);
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not come within 20 s:\n{text}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `name{labels}`'s value, or -1 when it is not there.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(-1.0)
}

/// A child process killed when dropped: a failed assertion leaves no
/// worker behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address in a "metrics: serving http://ADDR/metrics" line.
fn served_at(line: &str) -> SocketAddr {
    let rest = &line[line.find("http://").expect("an address") + 7..];
    rest[..rest.find("/metrics").expect("the path")]
        .parse()
        .expect("HOST:PORT")
}

#[test]
fn every_role_counts_a_batch_and_its_metrics_pass_promtool() {
    time_bomb(120, || {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        // A standing sink, so that its counts are still there after the
        // batch.
        let mut args = vec!["sink"];
        args.extend_from_slice(&SINK_ON_FREE_PORTS);
        let out = dir.path().to_str().unwrap();
        args.extend(["--serve", "--output-dir", out, "--metrics", "127.0.0.1:0"]);
        let sink = sink::Sink::bind(&sink::Config::parse_from(args), &ctx).unwrap();
        let at = sink.bound().clone();
        let sink_at = at.metrics.expect("the sink serves metrics");
        let sink_stop = Shutdown::new();
        let stop = sink_stop.clone();
        let sink_thread = thread::spawn(move || sink.serve(&stop));

        let vent = ventilator::Ventilator::bind(
            &ventilator::Config::parse_from([
                "ventilator",
                "--task-endpoint",
                "tcp://127.0.0.1:*",
                "--feedback-endpoint",
                &at.feedback[0],
                "--heartbeat",
                "200ms",
                "--metrics",
                "127.0.0.1:0",
            ]),
            &ctx,
        )
        .unwrap();
        let vent_at = vent.metrics_addr().expect("the ventilator serves metrics");
        let tasks_at = vent.bound()[0].clone();

        let mut worker = Reaped(
            Command::new(env!("CARGO_BIN_EXE_worker"))
                .args(["--serve", "--threads", "2", "--heartbeat", "200ms"])
                // Should this test die without killing it, it leaves.
                .args(["--idle-exit", "60s"])
                .args(["--task-endpoint", &tasks_at])
                .args(["--result-endpoint", &at.results[0]])
                .args(["--control-endpoint", &at.control[0]])
                .args(["--metrics", "127.0.0.1:0"])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = Lines::of(&mut worker.0);
        let line = lines
            .wait_for("metrics: serving http://", Duration::from_secs(10))
            .expect("the worker names where it serves its metrics");
        let worker_at = served_at(&line);

        // Four quick tasks, one that fails, and one that holds the batch
        // open for a few seconds.
        let mut tasks = vec![Work::Noop; 4];
        tasks.push(Work::Exec {
            command: "exit 3".into(),
            timeout_ms: None,
            stdin: None,
        });
        tasks.push(Work::Sleep { ms: 4000 });
        let hex = format!(
            "{:016x}",
            ventilator::Plan::from(tasks.clone()).fingerprint()
        );
        let batch = [("batch", hex.as_str())];
        let v = thread::spawn(move || vent.run(&tasks, &Shutdown::new()));

        // Mid-batch: five results in, the long task out.
        let text = scrape_until(vent_at, "the ventilator's five acks", |t| {
            value(t, "zpipe_ventilator_tasks_acknowledged_total", &[]) == 5.0
        });
        check_format("ventilator", &text);
        let v_ = |name, labels: &[(&str, &str)]| value(&text, name, labels);
        assert_eq!(v_("zpipe_ventilator_tasks_sent_total", &[]), 6.0, "{text}");
        assert_eq!(v_("zpipe_ventilator_tasks_in_flight", &[]), 1.0, "{text}");
        assert_eq!(v_("zpipe_ventilator_batch_tasks", &[]), 6.0);
        assert_eq!(v_("zpipe_ventilator_batch_info", &batch), 1.0, "{text}");
        assert_eq!(v_("zpipe_ventilator_workers_ready", &[]), 1.0, "{text}");
        assert_eq!(v_("zpipe_ventilator_threads_ready", &[]), 2.0, "{text}");
        assert_eq!(v_("zpipe_ventilator_tasks_resent_total", &[]), 0.0);
        assert_eq!(v_("zpipe_ventilator_tasks_given_up_total", &[]), 0.0);
        assert_eq!(v_("zpipe_ventilator_workers_lost_total", &[]), 0.0);

        let text = scrape_until(sink_at, "the sink's five results", |t| {
            value(t, "zpipe_sink_batch_results", &[]) == 5.0
        });
        check_format("sink", &text);
        let s_ = |name, labels: &[(&str, &str)]| value(&text, name, labels);
        assert_eq!(s_("zpipe_sink_results_total", &[("status", "ok")]), 4.0);
        assert_eq!(s_("zpipe_sink_results_total", &[("status", "failed")]), 1.0);
        assert_eq!(
            s_("zpipe_sink_results_total", &[("status", "duplicate")]),
            0.0
        );
        assert_eq!(s_("zpipe_sink_batch_tasks", &[]), 6.0);
        assert_eq!(s_("zpipe_sink_batch_info", &batch), 1.0, "{text}");
        assert_eq!(s_("zpipe_sink_batches_total", &[]), 0.0, "not yet whole");
        assert_eq!(s_("zpipe_sink_task_latency_seconds_count", &[]), 5.0);
        assert_eq!(s_("zpipe_sink_task_run_seconds_count", &[]), 5.0);
        assert_eq!(
            s_("zpipe_sink_task_run_seconds_bucket", &[("le", "+Inf")]),
            5.0,
            "{text}"
        );

        let text = scrape_until(worker_at, "the worker's five tasks", |t| {
            value(t, "zpipe_worker_tasks_total", &[("status", "ok")]) == 4.0
                && value(t, "zpipe_worker_tasks_total", &[("status", "failed")]) == 1.0
        });
        check_format("worker", &text);
        assert_eq!(value(&text, "zpipe_worker_threads", &[]), 2.0);
        assert_eq!(
            value(&text, "zpipe_worker_threads_busy", &[]),
            1.0,
            "one thread runs the long task: {text}"
        );

        // The batch ends: the ventilator's server goes with it; the
        // standing sink and worker keep their totals.
        let report = v.join().unwrap().unwrap();
        let done = report.done.expect("DONE");
        assert_eq!((done.ok, done.failed), (5, 1));
        assert!(
            http_get(&format!("http://{vent_at}/metrics")).is_err(),
            "the ventilator's metrics stop when it returns"
        );
        let text = scrape_until(sink_at, "the batch collected whole", |t| {
            value(t, "zpipe_sink_batches_total", &[]) == 1.0
        });
        check_format("sink", &text);
        let s_ = |name, labels: &[(&str, &str)]| value(&text, name, labels);
        assert_eq!(s_("zpipe_sink_results_total", &[("status", "ok")]), 5.0);
        assert_eq!(s_("zpipe_sink_results_total", &[("status", "failed")]), 1.0);
        assert_eq!(s_("zpipe_sink_batch_results", &[]), 6.0);
        assert_eq!(s_("zpipe_sink_task_latency_seconds_count", &[]), 6.0);
        assert!(
            s_("zpipe_sink_task_run_seconds_sum", &[]) >= 4.0,
            "the long task ran 4 s: {text}"
        );
        let text = scrape_until(worker_at, "the worker's six tasks", |t| {
            value(t, "zpipe_worker_tasks_total", &[("status", "ok")]) == 5.0
        });
        check_format("worker", &text);
        assert_eq!(value(&text, "zpipe_worker_threads_busy", &[]), 0.0);

        // The pool ends (KILL): every server stops with its role.
        sink_stop.trigger();
        let served = sink_thread.join().unwrap().unwrap();
        assert_eq!(served.batches, 1);
        assert!(
            http_get(&format!("http://{sink_at}/metrics")).is_err(),
            "the sink's metrics stop when it returns"
        );
        let status = wait_exit(&mut worker.0, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{}", lines.all(Duration::ZERO));
    });
}

#[test]
fn a_bad_metrics_address_or_one_in_use_exits_2_before_connecting() {
    common::testing::refuses_bad_metrics("nowhere", |addr| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_worker"));
        c.args(["--task-endpoint", "tcp://127.0.0.1:1", "--metrics", addr]);
        c
    });
}
