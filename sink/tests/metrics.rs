//! `--metrics` on the sink, watched by a real Prometheus server: a standing
//! sink, a worker and a ventilator in this process on free loopback ports,
//! Prometheus (Debian's `prometheus`, where installed) scraping the sink
//! every second; its HTTP API shows the batch in progress and then its
//! result count. And the `sink` binary refuses a bad `--metrics` address,
//! or one in use, with exit code 2.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::testing::{SINK_ON_FREE_PORTS, http_get, stderr_of, time_bomb, wait_exit};
use common::work::Work;

/// A Prometheus server of this test's own, stopped when dropped (a failed
/// assertion too leaves nothing running). It runs under a shell that kills
/// it when its stdin closes: when this is dropped, and when the test
/// process dies however it dies (a time bomb's thread is never dropped).
struct Prometheus {
    /// `sh`, holding Prometheus.
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second; `None` where it is
    /// not installed.
    fn scraping(target: SocketAddr) -> Option<Prometheus> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: zpipe-sink\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match Command::new("prometheus").arg("--version").output() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot run prometheus: {e}"),
        }
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("sh")
            .args([
                "-c",
                "prometheus \"$@\" & p=$!; read -r _; kill $p; wait $p",
                "sh",
            ])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sh");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(&format!("{}/-/ready", p.url)), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s: {}",
                std::fs::read_to_string(p._dir.path().join("prometheus.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Some(p)
    }

    /// The value of an instant query that names one series, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) =
            http_get(&format!("{}/api/v1/query?query={encoded}", self.url)).ok()?;
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Queries until `ok` takes the value, at most `secs`.
    fn wait_for(&self, promql: &str, secs: u64, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.query(promql);
            if let Some(v) = got.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {got:?} after {secs} s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn prometheus_scrapes_a_standing_sink_during_a_batch_and_reads_its_results() {
    time_bomb(180, || {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["sink"];
        args.extend_from_slice(&SINK_ON_FREE_PORTS);
        let out = dir.path().to_str().unwrap();
        args.extend(["--serve", "--output-dir", out, "--metrics", "127.0.0.1:0"]);
        let sink = sink::Sink::bind(&sink::Config::parse_from(args), &ctx).unwrap();
        let at = sink.bound().clone();
        let metrics_at = at.metrics.unwrap();
        let Some(prometheus) = Prometheus::scraping(metrics_at) else {
            eprintln!(
                "skipped: no `prometheus` on PATH (Debian's prometheus package; .ci/run installs it)"
            );
            return;
        };
        let sink_stop = Shutdown::new();
        let stop = sink_stop.clone();
        let sink_thread = thread::spawn(move || sink.serve(&stop));
        // Prometheus has the sink before the batch begins.
        prometheus.wait_for("up{job=\"zpipe-sink\"}", 60, |v| v == 1.0);

        let vent = ventilator::Ventilator::bind(
            &ventilator::Config::parse_from([
                "ventilator",
                "--task-endpoint",
                "tcp://127.0.0.1:*",
                "--feedback-endpoint",
                &at.feedback[0],
                "--heartbeat",
                "200ms",
            ]),
            &ctx,
        )
        .unwrap();
        let worker_config = worker::Config::parse_from([
            "worker",
            "--serve",
            "--threads",
            "2",
            "--heartbeat",
            "200ms",
            "--task-endpoint",
            &vent.bound()[0],
            "--result-endpoint",
            &at.results[0],
            "--control-endpoint",
            &at.control[0],
        ]);
        let wctx = ctx.clone();
        let worker = thread::spawn(move || worker::run(&worker_config, &wctx, &Shutdown::new()));
        // 20 tasks of half a second on two threads: about five seconds,
        // five scrapes.
        let n = 20;
        let tasks = vec![Work::Sleep { ms: 500 }; n];
        let batch = thread::spawn(move || vent.run(&tasks, &Shutdown::new()));

        // Seen through Prometheus: the batch part done, then whole.
        let part = prometheus.wait_for("zpipe_sink_batch_results", 60, |v| v > 0.0 && v < n as f64);
        assert!(part > 0.0);
        let report = batch.join().unwrap().unwrap();
        assert_eq!(report.done.expect("DONE").ok, n as u64);
        let ok = prometheus.wait_for("zpipe_sink_results_total{status=\"ok\"}", 30, |v| {
            v == n as f64
        });
        assert_eq!(ok, n as f64);
        assert_eq!(
            prometheus.query("zpipe_sink_batch_tasks"),
            Some(n as f64),
            "the batch's size"
        );
        assert_eq!(
            prometheus.query("sum(zpipe_sink_task_run_seconds_count)"),
            Some(n as f64)
        );

        sink_stop.trigger();
        assert_eq!(sink_thread.join().unwrap().unwrap().batches, 1);
        let r = worker.join().unwrap().unwrap();
        assert_eq!(r.tasks, n as u64);
    });
}

#[test]
fn a_bad_metrics_address_or_one_in_use_exits_2_before_any_work() {
    let said = common::testing::refuses_bad_metrics("nowhere:x", |addr| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sink"));
        c.args(SINK_ON_FREE_PORTS).args(["--metrics", addr]);
        c
    });
    for err in said {
        let lines = err.lines().filter(|l| l.contains("error")).count();
        assert_eq!(lines, 1, "one line: {err}");
    }
    // With the guide's wire format there is nothing to measure.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(SINK_ON_FREE_PORTS)
        .args(["--classic", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("drop --metrics"), "{err}");
}

#[test]
fn help_names_the_metrics_flag_and_its_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_sink"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--metrics <ADDR>"), "{text}");
    assert!(text.contains("ZPIPE_METRICS"), "{text}");
    assert!(text.contains("/metrics"), "{text}");
}

#[test]
fn a_dropped_message_is_counted_by_its_reason() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let mut args = vec!["sink"];
        args.extend_from_slice(&SINK_ON_FREE_PORTS);
        args.extend(["--metrics", "127.0.0.1:0", "--output", "/dev/null"]);
        let sink = sink::Sink::bind(&sink::Config::parse_from(args), &ctx).unwrap();
        let at = sink.bound().clone();
        let metrics_at = at.metrics.unwrap();
        let stop = Shutdown::new();
        let s = stop.clone();
        let running = thread::spawn(move || sink.run(&s, Box::new(std::io::sink())));
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.connect(&at.results[0]).unwrap();
        for _ in 0..3 {
            push.send(&b"junk"[..], 0).unwrap();
        }
        let reason = [("reason", "not zpipe")];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = common::testing::scrape(metrics_at);
            if common::testing::sample(&text, "zpipe_sink_dropped_total", &reason) == Some(3.0) {
                if let Some(verdict) = common::testing::promtool_check(&text) {
                    verdict.unwrap();
                }
                break;
            }
            assert!(Instant::now() < deadline, "no drops counted:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
        stop.trigger();
        let report = running.join().unwrap().unwrap();
        assert_eq!(report.dropped["not zpipe"], 3, "the report counts the same");
    });
}
