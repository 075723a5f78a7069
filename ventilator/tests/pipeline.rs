//! Whole batches through real sockets: ventilator, workers and sink in one
//! process, over tcp on loopback.

mod support;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::work::{Outcome, Status, Work};
use support::*;

#[test]
fn workers_started_apart_share_the_batch_evenly() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "4", "--wait", "20s"]);
        let tasks_at = vent.bound()[0].clone();
        let tasks = vec![Work::Sleep { ms: 2 }; 400];
        let v = thread::spawn(move || vent.run(&tasks, &common::Shutdown::new()));
        let mut workers = Vec::new();
        for _ in 0..4 {
            workers.push(spawn_worker(&ctx, worker_config(&tasks_at, &sink, &[])));
            thread::sleep(Duration::from_millis(200));
        }
        let vreport = v.join().unwrap().unwrap();
        assert_eq!(vreport.workers, 4);
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete);
        assert_eq!(report.ok, 400);
        assert_eq!(report.workers.len(), 4, "{:?}", report.workers);
        for w in &report.workers {
            assert!(
                (70..=130).contains(&w.tasks),
                "uneven share: {:?}",
                report.workers
            );
        }
        for (_, h) in workers {
            let r = h.join().unwrap().unwrap();
            assert_eq!(
                r.stopped_by,
                worker::StopReason::End,
                "every worker obeys END"
            );
        }
    });
}

#[test]
fn every_task_kind_runs_and_failures_become_results() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &["--ordered"]);
        let vent = ventilator(&ctx, &sink, &[]);
        let tasks_at = vent.bound()[0].clone();
        let tasks = vec![
            Work::Sleep { ms: 5 },
            Work::Primes { from: 0, to: 1000 },
            Work::Exec {
                command: "echo out; echo err >&2".into(),
                timeout_ms: None,
                stdin: None,
            },
            Work::Exec {
                command: "exit 7".into(),
                timeout_ms: None,
                stdin: None,
            },
            Work::Exec {
                command: "sleep 5".into(),
                timeout_ms: Some(100),
                stdin: None,
            },
            Work::Noop,
            Work::Data {
                data: serde_json::json!("x"),
            },
        ];
        let (_, w) = spawn_worker(&ctx, worker_config(&tasks_at, &sink, &["--threads", "2"]));
        vent.run(&tasks, &common::Shutdown::new()).unwrap();
        let report = sink.handle.join().unwrap().unwrap();
        assert_eq!((report.ok, report.failed), (4, 3));
        assert!(w.join().unwrap().is_ok());
        let lines = read_lines(&sink.output);
        let ids: Vec<u64> = lines.iter().map(|l| l["task"].as_u64().unwrap()).collect();
        assert_eq!(
            ids,
            (0..7).collect::<Vec<_>>(),
            "--ordered keeps input order"
        );
        assert_eq!(lines[1]["output"], "168");
        assert_eq!(lines[2]["output"], "out\n");
        assert_eq!(lines[2]["error"], "err\n");
        assert_eq!(lines[2]["exit_code"], 0);
        assert_eq!(lines[3]["status"], "failed");
        assert_eq!(lines[3]["exit_code"], 7);
        assert_eq!(lines[4]["status"], "timed_out");
        assert_eq!(lines[5]["status"], "ok");
        assert_eq!(lines[6]["status"], "failed");
        assert!(lines[6]["error"].as_str().unwrap().contains("no handler"));
    });
}

#[test]
fn a_custom_handler_runs_and_its_panics_become_error_results() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &[]);
        let config = worker_config(&vent.bound()[0], &sink, &[]);
        let tasks: Vec<Work> = (0..20)
            .map(|i| Work::Data {
                data: serde_json::json!(i),
            })
            .collect();
        let wctx = ctx.clone();
        let w = thread::spawn(move || {
            let handler = |_t: &worker::TaskInfo<'_>, work: &Work| match work {
                Work::Data { data } if data.as_u64() == Some(13) => panic!("unlucky"),
                Work::Data { data } => Outcome::ok(format!("{}", data.as_u64().unwrap() * 2)),
                _ => Outcome::failed(Status::Failed, "data only"),
            };
            worker::run_with(&config, &wctx, &common::Shutdown::new(), handler)
        });
        vent.run(&tasks, &common::Shutdown::new()).unwrap();
        let report = sink.handle.join().unwrap().unwrap();
        assert_eq!((report.ok, report.failed), (19, 1));
        let wr = w.join().unwrap().unwrap();
        assert_eq!(wr.tasks, 20, "the worker lived on after the panic");
        let by_task: HashMap<u64, serde_json::Value> = read_lines(&sink.output)
            .into_iter()
            .map(|l| (l["task"].as_u64().unwrap(), l))
            .collect();
        assert_eq!(by_task[&3]["output"], "6");
        assert_eq!(by_task[&13]["status"], "panicked");
        assert!(by_task[&13]["error"].as_str().unwrap().contains("unlucky"));
    });
}

#[test]
fn threads_in_one_worker_run_tasks_at_once() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &[]);
        let (_, w) = spawn_worker(
            &ctx,
            worker_config(&vent.bound()[0], &sink, &["--threads", "8"]),
        );
        let tasks = vec![Work::Sleep { ms: 100 }; 16];
        vent.run(&tasks, &common::Shutdown::new()).unwrap();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete);
        assert_eq!(report.threads, 8);
        // Serially this is 1.6 s; eight at a time, two rounds of 100 ms.
        assert!(
            report.elapsed_ms < 1000.0,
            "threads did not overlap: {} ms",
            report.elapsed_ms
        );
        assert_eq!(w.join().unwrap().unwrap().tasks, 16);
    });
}

#[test]
fn garbage_and_other_versions_are_counted_and_dropped() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        // A hostile peer on the result port: random bytes, an empty frame, a
        // classic message, a header of protocol version 2, a truncated result.
        let evil = ctx.socket(zmq::PUSH).unwrap();
        evil.set_linger(1000).unwrap();
        evil.connect(&sink.results).unwrap();
        let mut v2 = common::protocol::Header {
            kind: common::protocol::Kind::Result,
            attempt: 1,
            batch: 1,
            task: 0,
        }
        .encode();
        v2[2] = 2;
        evil.send(&b"\x00\xffgarbage"[..], 0).unwrap();
        evil.send(&b""[..], 0).unwrap();
        evil.send("42", 0).unwrap();
        evil.send_multipart([&v2[..], b"x"], 0).unwrap();
        let r1 = common::protocol::Header {
            kind: common::protocol::Kind::Result,
            attempt: 1,
            batch: 1,
            task: 0,
        }
        .encode();
        evil.send_multipart([&r1[..], b"short"], 0).unwrap();
        // And garbage on the feedback port (ROUTER).
        let evil2 = ctx.socket(zmq::DEALER).unwrap();
        evil2.set_linger(0).unwrap();
        evil2.connect(&sink.feedback).unwrap();
        evil2.send(&b"\x01\x02"[..], 0).unwrap();

        let vent = ventilator(&ctx, &sink, &[]);
        let (_, w) = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        vent.run(&vec![Work::Noop; 50], &common::Shutdown::new())
            .unwrap();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete);
        assert_eq!(report.ok, 50);
        assert!(
            report.dropped.get("wrong version").copied() >= Some(1),
            "{:?}",
            report.dropped
        );
        assert!(
            report.dropped.get("not zpipe").copied() >= Some(2),
            "{:?}",
            report.dropped
        );
        assert!(
            report.dropped.get("empty").copied() >= Some(1),
            "{:?}",
            report.dropped
        );
        assert!(
            report.dropped.values().sum::<u64>() >= 6,
            "{:?}",
            report.dropped
        );
        w.join().unwrap().unwrap();
    });
}

#[test]
fn a_worker_of_another_protocol_version_hears_ours() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--wait", "4s"]);
        let at = vent.bound()[0].clone();
        let v = thread::spawn(move || vent.run(&[Work::Noop], &common::Shutdown::new()));
        // A worker thread of protocol version 2 asks for work.
        let newer = ctx.socket(zmq::DEALER).unwrap();
        newer.set_linger(0).unwrap();
        newer.set_rcvtimeo(3000).unwrap();
        newer.connect(&at).unwrap();
        let mut credit = common::protocol::Header {
            kind: common::protocol::Kind::Credit,
            attempt: 1,
            batch: 0,
            task: 1,
        }
        .encode();
        credit[2] = 2;
        let who = common::protocol::encode_credit(7, 0);
        newer
            .send_multipart([&b""[..], &credit[..], &who[..]], 0)
            .unwrap();
        // The answer's header says which version the ventilator speaks.
        let answer = newer
            .recv_multipart(0)
            .expect("an answer it can read the version of");
        assert_eq!(answer[0], b"");
        let header = common::protocol::Header::decode(&answer[1]).unwrap();
        assert_eq!(header.kind, common::protocol::Kind::Heartbeat);
        let err = v.join().unwrap().unwrap_err();
        assert!(matches!(err, ventilator::Error::NoWorkers { .. }), "{err}");
        sink.shutdown.trigger();
        let _ = sink.handle.join();
    });
}

#[test]
fn a_ventilator_without_a_sink_or_workers_says_so() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        // No sink: nobody answers START.
        let config = <ventilator::Config as clap::Parser>::parse_from([
            "ventilator",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:1",
            "--wait",
            "300ms",
        ]);
        let err =
            ventilator::run(&config, &[Work::Noop], &ctx, &common::Shutdown::new()).unwrap_err();
        assert!(matches!(err, ventilator::Error::NoSink { .. }), "{err}");
        assert!(err.to_string().contains("no sink answered"), "{err}");
        // A sink but no worker.
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--wait", "500ms"]);
        let err = vent
            .run(&[Work::Noop], &common::Shutdown::new())
            .unwrap_err();
        assert!(matches!(err, ventilator::Error::NoWorkers { .. }), "{err}");
        sink.shutdown.trigger();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(!report.complete);
    });
}

#[test]
fn a_stopped_sink_returns_its_report_so_far_at_once() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &[]);
        let (wstop, w) = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        let vstop = common::Shutdown::new();
        let vs = vstop.clone();
        let v = thread::spawn(move || vent.run(&vec![Work::Sleep { ms: 20 }; 1000], &vs));
        thread::sleep(Duration::from_millis(600));
        let t = Instant::now();
        sink.shutdown.trigger();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!report.complete);
        assert!(report.ok > 0 && report.ok < 1000, "{}", report.ok);
        let t = Instant::now();
        wstop.trigger();
        vstop.trigger();
        assert_eq!(
            w.join().unwrap().unwrap().stopped_by,
            worker::StopReason::Signal
        );
        assert!(v.join().unwrap().unwrap().done.is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn classic_roles_speak_the_guides_format_to_each_other() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &["--classic", "--tasks", "30"]);
        let vent = ventilator(
            &ctx,
            &sink,
            &["--classic", "--start-after", "500ms", "--linger", "2s"],
        );
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(spawn_worker(
                &ctx,
                worker_config(&vent.bound()[0], &sink, &["--classic"]),
            ));
        }
        let tasks: Vec<Work> = (0..30).map(|i| Work::Sleep { ms: i % 5 }).collect();
        let vr = vent.run(&tasks, &common::Shutdown::new()).unwrap();
        assert_eq!(vr.sent, 30);
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        assert_eq!(report.ok, 30);
        let out = std::fs::read_to_string(&sink.output).unwrap();
        assert!(out.starts_with(".........:"), "{out}");
        assert!(out.contains("Total elapsed time: "), "{out}");
        for (_, h) in workers {
            // tasksink2's KILL stops taskwork2's workers.
            assert_eq!(
                h.join().unwrap().unwrap().stopped_by,
                worker::StopReason::Kill
            );
        }
    });
}

#[test]
fn classic_wire_format_is_the_guides() {
    time_bomb(30, || {
        // Stand in for the guide's own taskwork2 and tasksink2 with raw sockets.
        let ctx = zmq::Context::new();
        let sink_pull = ctx.socket(zmq::PULL).unwrap();
        sink_pull.set_rcvtimeo(5000).unwrap();
        sink_pull.bind("tcp://127.0.0.1:*").unwrap();
        let sink_at = sink_pull.get_last_endpoint().unwrap().unwrap();
        let config = <ventilator::Config as clap::Parser>::parse_from([
            "ventilator",
            "--classic",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--result-endpoint",
            &sink_at,
            "--start-after",
            "300ms",
        ]);
        let vent = ventilator::Ventilator::bind(&config, &ctx).unwrap();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_rcvtimeo(5000).unwrap();
        pull.connect(&vent.bound()[0]).unwrap();
        let v = thread::spawn(move || {
            vent.run(
                &[Work::Sleep { ms: 12 }, Work::Sleep { ms: 3 }],
                &common::Shutdown::new(),
            )
        });
        assert_eq!(sink_pull.recv_string(0).unwrap().unwrap(), "0");
        assert_eq!(pull.recv_string(0).unwrap().unwrap(), "12");
        assert_eq!(pull.recv_string(0).unwrap().unwrap(), "3");
        v.join().unwrap().unwrap();
        // A classic worker answers a workload with an empty message and stops
        // on any control message.
        let tasks = ctx.socket(zmq::PUSH).unwrap();
        tasks.set_linger(0).unwrap();
        tasks.bind("tcp://127.0.0.1:*").unwrap();
        let tasks_at = tasks.get_last_endpoint().unwrap().unwrap();
        let ctl = ctx.socket(zmq::PUB).unwrap();
        ctl.set_linger(0).unwrap();
        ctl.bind("tcp://127.0.0.1:*").unwrap();
        let ctl_at = ctl.get_last_endpoint().unwrap().unwrap();
        let wconfig = <worker::Config as clap::Parser>::parse_from([
            "worker",
            "--classic",
            "--task-endpoint",
            &tasks_at,
            "--result-endpoint",
            &sink_at,
            "--control-endpoint",
            &ctl_at,
        ]);
        let wctx = ctx.clone();
        let w = thread::spawn(move || worker::run(&wconfig, &wctx, &common::Shutdown::new()));
        tasks.send("7", 0).unwrap();
        tasks.send("not a number", 0).unwrap();
        assert_eq!(sink_pull.recv_bytes(0).unwrap(), b"");
        assert_eq!(
            sink_pull.recv_bytes(0).unwrap(),
            b"",
            "a bad workload is still answered"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !w.is_finished() && Instant::now() < deadline {
            ctl.send("KILL", 0).unwrap();
            thread::sleep(Duration::from_millis(50));
        }
        let r = w.join().unwrap().unwrap();
        assert_eq!(r.stopped_by, worker::StopReason::Kill);
        assert_eq!(r.dropped, 1);
    });
}

#[test]
fn after_wait_it_starts_with_the_workers_that_are_ready() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "3", "--wait", "1s"]);
        let (_, w) = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        let t = Instant::now();
        let r = vent
            .run(&vec![Work::Noop; 10], &common::Shutdown::new())
            .unwrap();
        assert!(t.elapsed() >= Duration::from_secs(1));
        assert_eq!(r.workers, 1);
        assert!(r.done.is_some());
        assert!(sink.handle.join().unwrap().unwrap().complete);
        w.join().unwrap().unwrap();
    });
}

#[test]
fn a_ventilator_stops_within_a_second_while_sending() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        // Small high-water marks: the ventilator blocks in sending.
        let vent = ventilator(&ctx, &sink, &["--hwm", "5"]);
        let (wstop, w) = spawn_worker(
            &ctx,
            worker_config(&vent.bound()[0], &sink, &["--hwm", "5"]),
        );
        let stop = common::Shutdown::new();
        let s = stop.clone();
        // Large tasks, so that the kernel's socket buffers fill as well.
        let task = Work::Exec {
            command: format!("sleep 0.02 # {}", "x".repeat(100_000)),
            timeout_ms: None,
            stdin: None,
        };
        let v = thread::spawn(move || vent.run(&vec![task; 1000], &s));
        thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        stop.trigger();
        let r = v.join().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(r.sent < 1000 && r.done.is_none(), "{} sent", r.sent);
        wstop.trigger();
        sink.shutdown.trigger();
        w.join().unwrap().unwrap();
        sink.handle.join().unwrap().unwrap();
    });
}

#[test]
fn a_result_too_large_for_a_message_is_cut_to_fit_and_says_so() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &[]);
        let (_, w) = spawn_worker(
            &ctx,
            worker_config(
                &vent.bound()[0],
                &sink,
                &["--max-output", "1000000", "--max-msg-size", "100000"],
            ),
        );
        let big = Work::Exec {
            command: "head -c 300000 /dev/zero | tr '\\0' a".into(),
            timeout_ms: None,
            stdin: None,
        };
        vent.run(&[big], &common::Shutdown::new()).unwrap();
        assert!(sink.handle.join().unwrap().unwrap().complete);
        let line = &read_lines(&sink.output)[0];
        let out = line["output"].as_str().unwrap();
        assert!(out.len() < 100_000 && out.len() > 50_000, "{}", out.len());
        assert!(
            line["error"].as_str().unwrap().contains("cut to fit"),
            "{line}"
        );
        w.join().unwrap().unwrap();
    });
}

#[test]
fn a_task_larger_than_a_workers_message_limit_fails_saying_so_and_the_rest_fit() {
    for dispatch in ["credit", "push"] {
        time_bomb(30, move || {
            let ctx = zmq::Context::new();
            let sink = start_sink(&ctx, &[]);
            let flags = ["--dispatch", dispatch];
            let vent = ventilator(&ctx, &sink, &flags);
            let limit = ["--max-msg-size", "1000", "--prefetch", "64"];
            let config = worker_config(&vent.bound()[0], &sink, &[&flags[..], &limit].concat());
            let (_, w) = spawn_worker(&ctx, config);
            // Tasks of ~400 bytes fit a 1000-byte frame two at a time;
            // task 3, of 2000, fits none.
            let sized = |n: usize| Work::Exec {
                command: format!("true {}", "x".repeat(n)),
                timeout_ms: None,
                stdin: None,
            };
            let mut tasks: Vec<Work> = (0..12).map(|_| sized(400)).collect();
            tasks[3] = sized(2000);
            let report = vent.run(&tasks, &common::Shutdown::new()).unwrap();
            assert_eq!(report.given_up, 1, "{dispatch}: {report:?}");
            let sreport = sink.handle.join().unwrap().unwrap();
            assert!(sreport.complete, "{dispatch}");
            assert_eq!((sreport.ok, sreport.failed), (11, 1), "{dispatch}");
            let lines = read_lines(&sink.output);
            let big = lines.iter().find(|l| l["task"] == 3).unwrap();
            assert_eq!(big["status"], "failed", "{dispatch}: {big}");
            let why = big["error"].as_str().unwrap();
            assert!(why.contains("--max-msg-size is 1000"), "{dispatch}: {why}");
            // The worker kept its connection: nothing it was sent was lost.
            assert_eq!(report.resent, 0, "{dispatch}: {report:?}");
            w.join().unwrap().unwrap();
        });
    }
}

#[test]
fn the_sink_refuses_a_batch_too_large_and_bad_announcements() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &["--max-tasks", "10", "--worker-timeout", "300ms"]);
        // Hostile announcements: no task, a trillion tasks, a worker with
        // four billion threads, then a worker that says hello and goes silent.
        let evil = ctx.socket(zmq::DEALER).unwrap();
        evil.set_linger(0).unwrap();
        evil.connect(&sink.feedback).unwrap();
        for tasks in [0u64, 1 << 40] {
            let info = common::protocol::BatchInfo {
                batch: 5,
                tasks,
                expected_ms: 0,
                dispatch: common::protocol::Dispatch::Push,
                resync: false,
            };
            let [h, p] = common::protocol::json_frames(
                common::protocol::Header::bare(common::protocol::Kind::Start, 5),
                &info,
            );
            evil.send_multipart([h, p], 0).unwrap();
        }
        let fake = ctx.socket(zmq::PUSH).unwrap();
        fake.set_linger(1000).unwrap();
        fake.connect(&sink.results).unwrap();
        for (id, threads) in [(1u64, u32::MAX), (2, 1)] {
            let info = common::protocol::WorkerInfo {
                id,
                host: "fake".into(),
                pid: id as u32,
                threads,
                dispatch: common::protocol::Dispatch::Push,
                heartbeat_ms: 100,
                max_msg_size: None,
                held: None,
                kinds: None,
                packs: false,
            };
            let [h, p] = common::protocol::json_frames(
                common::protocol::Header::bare(common::protocol::Kind::Hello, 0),
                &info,
            );
            fake.send_multipart([h, p], 0).unwrap();
        }
        let vent = ventilator(&ctx, &sink, &["--wait", "5s"]);
        let err = vent
            .run(&vec![Work::Noop; 20], &common::Shutdown::new())
            .unwrap_err();
        assert!(matches!(err, ventilator::Error::Refused(_)), "{err}");
        assert!(err.to_string().contains("--max-tasks 10"), "{err}");
        // A batch that fits runs, while the silent fake worker is declared
        // lost. (Push dispatch: the sink's word on who is ready counts.)
        let vent = ventilator(&ctx, &sink, &["--workers", "2", "--dispatch", "push"]);
        let (_, w) = spawn_worker(
            &ctx,
            worker_config(&vent.bound()[0], &sink, &["--dispatch", "push"]),
        );
        vent.run(&vec![Work::Sleep { ms: 100 }; 10], &common::Shutdown::new())
            .unwrap();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        assert!(
            report.dropped.get("refused batch").copied() >= Some(2),
            "{:?}",
            report.dropped
        );
        assert!(
            report.dropped.get("malformed").copied() >= Some(1),
            "{:?}",
            report.dropped
        );
        assert_eq!(report.lost, vec!["fake:2".to_string()]);
        w.join().unwrap().unwrap();
    });
}

#[test]
fn dependencies_and_stages_run_in_order_and_a_failed_one_fails_its_dependants() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &["--workers", "2"]);
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(spawn_worker(
                &ctx,
                worker_config(&vent.bound()[0], &sink, &["--threads", "2"]),
            ));
        }
        // build after fetch; two tests after build; stage 1 (report) after
        // all of stage 0; "broken" fails, so "after-broken" never runs.
        let input = r#"{"kind":"sleep","ms":30,"id":"fetch"}
{"kind":"sleep","ms":5,"id":"build","after":["fetch"]}
{"kind":"sleep","ms":5,"after":["build"]}
{"kind":"sleep","ms":5,"after":["build"]}
{"kind":"exec","command":"exit 3","id":"broken"}
{"kind":"noop","id":"after-broken","after":["broken"]}
{"kind":"noop","stage":1,"id":"report"}
"#;
        let plan =
            ventilator::input::parse(input.as_bytes(), ventilator::input::Plain::Exec, usize::MAX)
                .unwrap();
        let vr = vent.run_plan(&plan, &common::Shutdown::new()).unwrap();
        assert!(vr.done.is_some(), "{vr:?}");
        assert!(vr.given_up >= 2, "{vr:?}");
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        let lines = read_lines(&sink.output);
        assert_eq!(lines.len(), 7);
        let pos = |task: u64| {
            lines
                .iter()
                .position(|l| l["task"] == task)
                .unwrap_or_else(|| panic!("task {task} missing"))
        };
        // Completion order follows the dependencies.
        assert!(pos(0) < pos(1) && pos(1) < pos(2) && pos(1) < pos(3));
        let by_task = |t: u64| &lines[pos(t)];
        assert_eq!(by_task(4)["status"], "failed");
        assert_eq!(by_task(5)["status"], "failed");
        assert_eq!(by_task(5)["worker"], "ventilator");
        let why = by_task(5)["error"].as_str().unwrap();
        assert!(
            why.contains("runs after") && why.contains("broken"),
            "{why}"
        );
        // A failure in stage 0 fails stage 1.
        assert_eq!(by_task(6)["status"], "failed");
        assert!(
            by_task(6)["error"]
                .as_str()
                .unwrap()
                .contains("earlier stage"),
            "{lines:?}"
        );
        for (_, w) in workers {
            w.join().unwrap().unwrap();
        }
    });
}

#[test]
fn a_failure_failing_more_dependants_than_a_queue_holds_still_completes() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let vent = ventilator(&ctx, &sink, &[]);
        let w = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        // One stage-0 task fails; its 20 000 stage-1 dependants are reported
        // failed by the ventilator, far more than one send queue holds.
        let mut plan = ventilator::Plan::from(vec![Work::Noop; 20_001]);
        plan.works[0] = Work::Exec {
            command: "exit 1".into(),
            timeout_ms: None,
            stdin: None,
        };
        plan.stage = vec![1; 20_001];
        plan.stage[0] = 0;
        let vr = vent.run_plan(&plan, &common::Shutdown::new()).unwrap();
        assert!(vr.done.is_some());
        assert_eq!(vr.given_up, 20_000);
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "{report:?}");
        assert_eq!(report.failed, 20_001);
        assert_eq!(read_lines(&sink.output).len(), 20_001);
        w.1.join().unwrap().unwrap();
    });
}

#[test]
fn a_whole_batch_runs_encrypted_with_curve_and_behind_an_allow_list() {
    if zmq::has("curve") != Some(true) {
        eprintln!(
            "skipped: this build's libzmq has no CURVE (CI runs it against the system libzmq)"
        );
        return;
    }
    time_bomb(60, || {
        // Every binding part shares one key pair; every connecting part knows
        // its public key.
        let dir = tempfile::tempdir().unwrap();
        let pair = common::security::KeyPair::generate().unwrap();
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, pair.to_file_text()).unwrap();
        let key = key.to_str().unwrap().to_string();
        let public = zmq::z85_encode(&pair.public).unwrap();
        // Each role in its own context, as in its own process (one ZAP
        // handler per context).
        let sink = start_sink(
            &zmq::Context::new(),
            &["--curve-secret", &key, "--allow", "127.0.0.0/8"],
        );
        let vent = ventilator(
            &zmq::Context::new(),
            &sink,
            &[
                "--curve-secret",
                &key,
                "--curve-server-key",
                &public,
                "--workers",
                "2",
            ],
        );
        let workers: Vec<_> = (0..2)
            .map(|_| {
                spawn_worker(
                    &zmq::Context::new(),
                    worker_config(&vent.bound()[0], &sink, &["--curve-server-key", &public]),
                )
            })
            .collect();
        let vr = vent
            .run(&vec![Work::Sleep { ms: 2 }; 100], &common::Shutdown::new())
            .unwrap();
        assert!(vr.done.is_some());
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete && report.ok == 100, "{report:?}");
        for (_, w) in workers {
            w.join().unwrap().unwrap();
        }
    });
}

#[test]
fn command_fills_each_hostile_file_name_in_as_one_argument() {
    time_bomb(60, || {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "plain.txt",
            "a b.txt",
            "it's.tar.gz",
            "$(touch pwned).txt",
            "q\"x;y|z.txt",
            "{\"kind\":\"exec\",\"command\":\"touch pwned\"}.txt",
        ];
        // The names as `ls` prints them, relative to the directory the
        // command starts in: so one can begin with `{` like a JSON task.
        let mut input = String::new();
        for n in names {
            std::fs::write(dir.path().join(n), format!("<{n}>")).unwrap();
            input.push_str(&format!("{n}\n"));
        }
        let list = dir.path().join("files");
        let template = format!(
            "cd {} && cat {{}}; echo \" #{{#}} $ZPIPE_TASK_ID\" {{.}}",
            ventilator::input::shell_quote(&dir.path().display().to_string())
        );
        std::fs::write(&list, input).unwrap();
        let ctx = zmq::Context::new();
        let sink = start_sink(&ctx, &[]);
        let config = <ventilator::Config as clap::Parser>::parse_from([
            "ventilator",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            &sink.feedback,
            "--input",
            list.to_str().unwrap(),
            "--command",
            &template,
        ]);
        let plan = config.load_tasks().unwrap();
        let vent = ventilator::Ventilator::bind(&config, &ctx).unwrap();
        let (_, w) = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        vent.run_plan(&plan, &common::Shutdown::new()).unwrap();
        assert!(sink.handle.join().unwrap().unwrap().complete);
        w.join().unwrap().unwrap();
        let mut lines = read_lines(&sink.output);
        lines.sort_by_key(|l| l["task"].as_u64());
        for (t, (line, n)) in lines.iter().zip(names).enumerate() {
            assert_eq!(line["status"], "ok", "{line}");
            let stem = n.rsplit_once('.').unwrap().0;
            let want = format!("<{n}> #{} {t} {stem}\n", t + 1);
            assert_eq!(line["output"], want, "{n}");
        }
        assert!(
            !dir.path().join("pwned").exists(),
            "a name ran as a command"
        );
        // --command with generated tasks, or with another --plain: refused.
        let refused =
            <ventilator::Config as clap::Parser>::parse_from(["ventilator", "--command", "cat {}"]);
        let e = refused.load_tasks().unwrap_err();
        assert!(
            matches!(e, ventilator::Error::Usage(_)) && e.to_string().contains("give --input"),
            "{e}"
        );
    });
}

/// A stand-in push worker that says in its HELLO whether it takes packs,
/// answers every task it is sent with a RESULT, and tells how many tasks
/// the largest message it was sent carried.
fn stand_in_push_worker(
    ctx: &zmq::Context,
    tasks_at: &str,
    sink: &RunningSink,
    packs: bool,
    stop: common::Shutdown,
) -> thread::JoinHandle<(u64, usize)> {
    use common::protocol::{self, Header, Kind, Message, ResultBody, WorkerInfo};
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_linger(0).unwrap();
    pull.connect(tasks_at).unwrap();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(1000).unwrap();
    push.connect(&sink.results).unwrap();
    let info = WorkerInfo {
        id: 77,
        host: "stand-in".into(),
        pid: 1,
        threads: 1,
        dispatch: protocol::Dispatch::Push,
        heartbeat_ms: 100,
        max_msg_size: None,
        held: None,
        kinds: None,
        packs,
    };
    thread::spawn(move || {
        let say = |kind| {
            let [h, p] = protocol::json_frames(Header::bare(kind, 0), &info);
            push.send_multipart([h, p], 0).unwrap();
        };
        say(Kind::Hello);
        let mut beat = Instant::now();
        let (mut answered, mut largest) = (0u64, 0usize);
        let mut body = Vec::new();
        while !stop.is_triggered() {
            if beat.elapsed() > Duration::from_millis(100) {
                say(Kind::Heartbeat);
                beat = Instant::now();
            }
            if pull.poll(zmq::POLLIN, 20).unwrap() == 0 {
                continue;
            }
            let frames = pull.recv_multipart(0).unwrap();
            let frames: Vec<zmq::Message> = frames.into_iter().map(zmq::Message::from).collect();
            let (batch, items) = match Message::decode(&frames).unwrap() {
                Message::Tasks { batch, tasks } => (batch, tasks),
                other => panic!("not a task: {other:?}"),
            };
            largest = largest.max(items.len());
            for item in items {
                body.clear();
                protocol::encode_result(
                    &mut body,
                    &ResultBody {
                        worker: 77,
                        thread: 0,
                        sent_us: 0,
                        duration_us: 0,
                        outcome: Outcome::ok(Vec::new()),
                    },
                );
                let head = Header {
                    kind: Kind::Result,
                    attempt: item.attempt,
                    batch,
                    task: item.task,
                }
                .encode();
                push.send_multipart([&head[..], &body[..]], 0).unwrap();
                answered += 1;
            }
        }
        (answered, largest)
    })
}

#[test]
fn push_packs_quick_tasks_only_for_workers_that_say_they_take_packs() {
    time_bomb(60, || {
        for packs in [false, true] {
            let ctx = zmq::Context::new();
            let sink = start_sink(&ctx, &[]);
            let vent = ventilator(&ctx, &sink, &["--dispatch", "push", "--workers", "1"]);
            let stop = common::Shutdown::new();
            let worker = stand_in_push_worker(&ctx, &vent.bound()[0], &sink, packs, stop.clone());
            let report = vent
                .run(&vec![Work::Noop; 50_000], &common::Shutdown::new())
                .unwrap();
            assert!(report.done.is_some(), "packs {packs}: {report:?}");
            let sreport = sink.handle.join().unwrap().unwrap();
            assert!(sreport.complete, "packs {packs}: {sreport:?}");
            assert_eq!(sreport.ok, 50_000, "packs {packs}");
            stop.trigger();
            let (answered, largest) = worker.join().unwrap();
            assert_eq!(answered, 50_000, "every task once: nothing lost");
            if packs {
                // No-op tasks are acknowledged at hundreds of thousands a
                // second: a millisecond of them is many.
                assert!(largest > 1, "never packed");
            } else {
                assert_eq!(
                    largest, 1,
                    "a worker that does not say so gets one a message"
                );
            }
        }
    });
}
