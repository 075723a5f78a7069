//! Real traffic through real devices, over tcp loopback.

use std::collections::HashMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::testing::time_bomb;
use common::work::Work;
use devices::{Device, DeviceArgs, Kind};

struct Running {
    frontend: String,
    backend: String,
    control: Option<String>,
    capture: Option<String>,
    stop: Shutdown,
    handle: thread::JoinHandle<Result<devices::Stats, devices::Error>>,
}

impl Running {
    fn stop(self) -> devices::Stats {
        self.stop.trigger();
        self.handle.join().unwrap().unwrap()
    }
}

fn start(ctx: &zmq::Context, kind: Kind, args: DeviceArgs) -> Running {
    let device = Device::bind(kind, &args, ctx).unwrap();
    let b = device.bound().clone();
    let stop = Shutdown::new();
    let s = stop.clone();
    Running {
        frontend: b.frontend[0].clone(),
        backend: b.backend[0].clone(),
        control: b.control.first().cloned(),
        capture: b.capture.first().cloned(),
        stop,
        handle: thread::spawn(move || device.run(&s)),
    }
}

fn local(kind: Kind) -> DeviceArgs {
    let _ = kind;
    DeviceArgs::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").unwrap()
}

fn sock(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(5000).unwrap();
    s.set_sndtimeo(5000).unwrap();
    s
}

#[test]
fn a_streamer_neither_loses_nor_reorders_one_senders_messages() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let dev = start(&ctx, Kind::Streamer, local(Kind::Streamer));
        let push = sock(&ctx, zmq::PUSH);
        push.connect(&dev.frontend).unwrap();
        let pull = sock(&ctx, zmq::PULL);
        pull.connect(&dev.backend).unwrap();
        // Far more than the high-water marks: the streamer must push back,
        // not drop.
        let n = 20_000u32;
        let sender = thread::spawn(move || {
            for i in 0..n {
                push.send_multipart([&i.to_le_bytes()[..], b"payload"], 0)
                    .unwrap();
            }
            push
        });
        for i in 0..n {
            let m = pull.recv_multipart(0).expect("a message was lost");
            assert_eq!(m.len(), 2);
            assert_eq!(
                u32::from_le_bytes(m[0][..].try_into().unwrap()),
                i,
                "out of order"
            );
        }
        drop(sender.join().unwrap());
        let stats = dev.stop();
        assert_eq!(stats.frontend.msgs_in, n as u64);
        assert_eq!(stats.backend.msgs_out, n as u64);
        assert_eq!(stats.frontend.bytes_in, n as u64 * 11);
    });
}

#[test]
fn a_zpipe_batch_runs_through_streamers_and_a_forwarder() {
    batch_through_devices("push");
}

#[test]
fn a_credit_batch_runs_through_a_queue_on_the_task_path() {
    batch_through_devices("credit");
}

/// A whole batch with a device on each path: on the task path a streamer
/// (push dispatch: PUSH → PULL|PUSH → PULL) or a queue (credit dispatch:
/// ROUTER ← DEALER|ROUTER ← DEALER).
fn batch_through_devices(dispatch: &'static str) {
    time_bomb(60, move || {
        let ctx = zmq::Context::new();
        // The sink binds as usual.
        let sink_cfg = sink::Config::parse_from(
            std::iter::once("sink").chain(common::testing::SINK_ON_FREE_PORTS),
        );
        let sink = sink::Sink::bind(&sink_cfg, &ctx).unwrap();
        let sb = sink.bound().clone();
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.jsonl");
        let out = sink::open_output(&out_path).unwrap();
        let sink_thread = thread::spawn(move || sink.run(&Shutdown::new(), out));
        // Task path: ventilator → streamer (both bound) ; the ventilator
        // connects its PUSH to the streamer's frontend.
        let task_kind = if dispatch == "push" {
            Kind::Streamer
        } else {
            Kind::Queue
        };
        let tasks_dev = start(&ctx, task_kind, local(task_kind));
        // The ventilator connects to the side that faces it: a streamer's
        // PULL frontend, a queue's DEALER backend; workers to the other.
        let (vent_side, worker_side) = if dispatch == "push" {
            (tasks_dev.frontend.clone(), tasks_dev.backend.clone())
        } else {
            (tasks_dev.backend.clone(), tasks_dev.frontend.clone())
        };
        // Result path: workers → streamer → sink (the streamer connects on).
        let results_dev = start(
            &ctx,
            Kind::Streamer,
            DeviceArgs::new("tcp://127.0.0.1:*", &format!(">{}", sb.results[0])).unwrap(),
        );
        // Control path: sink PUB → forwarder (XSUB connects to it) → workers.
        let control_dev = start(
            &ctx,
            Kind::Forwarder,
            DeviceArgs::new(&format!(">{}", sb.control[0]), "tcp://127.0.0.1:*").unwrap(),
        );

        let vent_cfg = ventilator::Config::parse_from([
            "ventilator",
            "--task-endpoint",
            &format!(">{vent_side}"),
            "--feedback-endpoint",
            &sb.feedback[0],
            "--workers",
            "3",
            "--dispatch",
            dispatch,
        ]);
        let vent = ventilator::Ventilator::bind(&vent_cfg, &ctx).unwrap();
        let tasks: Vec<Work> = (0..300).map(|i| Work::Sleep { ms: i % 3 }).collect();
        let v = thread::spawn(move || vent.run(&tasks, &Shutdown::new()));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let cfg = worker::Config::parse_from([
                    "worker",
                    "--task-endpoint",
                    &worker_side,
                    "--dispatch",
                    dispatch,
                    "--result-endpoint",
                    &results_dev.frontend,
                    "--control-endpoint",
                    &control_dev.backend,
                    "--heartbeat",
                    "200ms",
                    "--threads",
                    "2",
                ]);
                let ctx = ctx.clone();
                thread::spawn(move || worker::run(&cfg, &ctx, &Shutdown::new()))
            })
            .collect();
        let vr = v.join().unwrap().unwrap();
        assert!(vr.done.is_some());
        let report = sink_thread.join().unwrap().unwrap();
        assert!(report.complete);
        assert_eq!(report.ok, 300);
        assert_eq!(report.duplicates, 0);
        for w in workers {
            // END reached every worker through the forwarder.
            assert_eq!(
                w.join().unwrap().unwrap().stopped_by,
                worker::StopReason::End
            );
        }
        let lines = std::fs::read_to_string(&out_path).unwrap();
        assert_eq!(lines.lines().count(), 300);
        let t = tasks_dev.stop();
        if dispatch == "push" {
            assert!(t.frontend.msgs_in >= 300, "{t:?}");
        } else {
            // Credit in through the frontend, tasks (some packed several to
            // a message) in through the backend.
            assert!(t.frontend.msgs_in >= 6 && t.backend.msgs_in >= 6, "{t:?}");
        }
        let r = results_dev.stop();
        assert!(r.backend.msgs_out >= 1, "{r:?}");
        let c = control_dev.stop();
        assert!(c.frontend.msgs_in >= 1, "END crossed the forwarder: {c:?}");
        // XPUB passes a subscription upstream once, however many subscribers
        // share it.
        assert!(
            c.backend.msgs_in >= 1,
            "the workers' subscription went upstream: {c:?}"
        );
    });
}

#[test]
fn request_reply_through_a_queue_with_several_clients_and_services() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let dev = start(&ctx, Kind::Queue, local(Kind::Queue));
        let services: Vec<_> = (0..3)
            .map(|id| {
                let rep = sock(&ctx, zmq::REP);
                rep.set_rcvtimeo(200).unwrap();
                rep.connect(&dev.backend).unwrap();
                thread::spawn(move || {
                    let mut served = 0;
                    let idle = Instant::now();
                    while served == 0 || idle.elapsed() < Duration::from_secs(30) {
                        match rep.recv_string(0) {
                            Ok(Ok(req)) => {
                                rep.send(format!("{req} served by {id}").as_str(), 0)
                                    .unwrap();
                                served += 1;
                            }
                            _ if served > 0 => break,
                            _ => {}
                        }
                    }
                    served
                })
            })
            .collect();
        // Give every service time to connect, so each gets a share.
        thread::sleep(Duration::from_millis(300));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let req = sock(&ctx, zmq::REQ);
                req.connect(&dev.frontend).unwrap();
                thread::spawn(move || {
                    for i in 0..30 {
                        let body = format!("client {c} request {i}");
                        req.send(body.as_str(), 0).unwrap();
                        let reply = req.recv_string(0).expect("no reply").unwrap();
                        assert!(reply.starts_with(&format!("{body} served by ")), "{reply}");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let served: Vec<u32> = services.into_iter().map(|s| s.join().unwrap()).collect();
        assert_eq!(served.iter().sum::<u32>(), 120);
        assert!(
            served.iter().all(|&n| n > 0),
            "every service took requests: {served:?}"
        );
        let stats = dev.stop();
        assert_eq!(stats.frontend.msgs_in, 120);
        assert_eq!(stats.backend.msgs_in, 120);
    });
}

#[test]
fn a_forwarder_passes_only_what_subscribers_asked_for() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let dev = start(&ctx, Kind::Forwarder, local(Kind::Forwarder));
        let publisher = sock(&ctx, zmq::PUB);
        publisher.connect(&dev.frontend).unwrap();
        let sub = sock(&ctx, zmq::SUB);
        sub.set_subscribe(b"10001 ").unwrap();
        sub.connect(&dev.backend).unwrap();
        // Publish until the subscription has travelled upstream and a
        // matching update arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            publisher.send("10002 99 1", 0).unwrap();
            publisher.send("10001 20 50", 0).unwrap();
            if sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nothing arrived through the forwarder"
            );
        }
        for _ in 0..50 {
            publisher.send("10002 99 1", 0).unwrap();
            publisher.send("10001 20 50", 0).unwrap();
        }
        let mut got = 0;
        while sub.poll(zmq::POLLIN, 300).unwrap() > 0 {
            let m = sub.recv_string(0).unwrap().unwrap();
            assert!(
                m.starts_with("10001 "),
                "a filtered-out update arrived: {m}"
            );
            got += 1;
        }
        assert!(got >= 50, "{got}");
        let stats = dev.stop();
        // The publisher's own filtering (the subscription reached it) means
        // 10002 never even left it once the subscription was known.
        assert!(stats.backend.msgs_in >= 1, "{stats:?}");
    });
}

#[test]
fn control_commands_and_capture() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let mut args = local(Kind::Streamer);
        args.control = Some("tcp://127.0.0.1:*".parse().unwrap());
        args.capture = Some("tcp://127.0.0.1:*".parse().unwrap());
        let dev = start(&ctx, Kind::Streamer, args);
        let control = dev.control.clone().unwrap();
        let capture = sock(&ctx, zmq::SUB);
        capture.set_subscribe(b"").unwrap();
        capture.connect(dev.capture.as_ref().unwrap()).unwrap();
        let push = sock(&ctx, zmq::PUSH);
        push.connect(&dev.frontend).unwrap();
        let pull = sock(&ctx, zmq::PULL);
        pull.set_rcvtimeo(300).unwrap();
        pull.connect(&dev.backend).unwrap();
        thread::sleep(Duration::from_millis(200));

        push.send("one", 0).unwrap();
        assert_eq!(pull.recv_string(0).unwrap().unwrap(), "one");
        assert_eq!(
            capture.recv_string(0).unwrap().unwrap(),
            "one",
            "capture gets a copy"
        );
        assert_eq!(devices::control(&ctx, &control, "PAUSE").unwrap(), "OK");
        push.send("two", 0).unwrap();
        assert!(pull.recv_string(0).is_err(), "a paused device forwarded");
        // An unknown command is refused in words; the device lives on.
        let refused = devices::control(&ctx, &control, "EXPLODE").unwrap();
        assert!(refused.starts_with("ERROR"), "{refused}");
        assert_eq!(devices::control(&ctx, &control, "RESUME").unwrap(), "OK");
        assert_eq!(
            pull.recv_string(0).unwrap().unwrap(),
            "two",
            "held while paused, sent on RESUME"
        );
        let stats: serde_json::Value =
            serde_json::from_str(&devices::control(&ctx, &control, "STATISTICS").unwrap()).unwrap();
        assert_eq!(stats["frontend"]["msgs_in"], 2);
        assert_eq!(stats["backend"]["msgs_out"], 2);
        assert_eq!(stats["frontend"]["bytes_in"], 6);
        assert_eq!(devices::control(&ctx, &control, "TERMINATE").unwrap(), "OK");
        let done = dev.handle.join().unwrap().unwrap();
        assert_eq!(done.backend.msgs_out, 2);
    });
}

#[test]
fn devices_survive_hostile_peers_and_keep_forwarding() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        // Default caps: 16 MiB messages, 1 KiB subscriptions.
        let args = local(Kind::Forwarder);
        let fwd = start(&ctx, Kind::Forwarder, args);
        let mut sargs = local(Kind::Streamer);
        sargs.max_msg_size = 64 * 1024;
        let streamer = start(&ctx, Kind::Streamer, sargs);
        let tcp_port = |ep: &str| ep.rsplit(':').next().unwrap().parse::<u16>().unwrap();

        for ep in [
            &fwd.frontend,
            &fwd.backend,
            &streamer.frontend,
            &streamer.backend,
        ] {
            // Random bytes, then a half ZMTP greeting, over plain TCP.
            let mut raw = std::net::TcpStream::connect(("127.0.0.1", tcp_port(ep))).unwrap();
            let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
            let _ = raw.write_all(&noise);
            let mut half = std::net::TcpStream::connect(("127.0.0.1", tcp_port(ep))).unwrap();
            let _ = half.write_all(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3]);
            // A peer of the wrong socket type.
            let wrong = sock(&ctx, zmq::REQ);
            wrong.connect(ep).unwrap();
            let _ = wrong.send("hello", zmq::DONTWAIT);
        }
        // Empty frames and oversized frames into the streamer.
        let push = sock(&ctx, zmq::PUSH);
        push.connect(&streamer.frontend).unwrap();
        push.send_multipart([&b""[..], b"", b"empty frames"], 0)
            .unwrap();
        let huge = sock(&ctx, zmq::PUSH);
        huge.connect(&streamer.frontend).unwrap();
        huge.send(vec![0u8; 1 << 20], 0).unwrap();
        // An oversized subscription into the forwarder, from a hand-made ZMTP
        // SUB peer that then leaves (libzmq's own SUB would keep the 100 kB
        // topic in a trie of its own, as deep as the topic is long).
        zmtp_subscribe(tcp_port(&fwd.backend), &vec![b'x'; 100_000]);
        thread::sleep(Duration::from_millis(300));

        // Normal traffic still flows through both. (Random bytes that do not
        // start like a ZMTP 3 greeting are read as ZMTP 1.0 frames, which
        // libzmq still accepts, so some noise may pass as messages: a device
        // forwards whatever is a message. The roles drop it as garbage.)
        let pull = sock(&ctx, zmq::PULL);
        pull.connect(&streamer.backend).unwrap();
        push.send("after", 0).unwrap();
        let mut seen = Vec::new();
        loop {
            let m = pull
                .recv_multipart(0)
                .expect("the streamer stopped forwarding");
            assert!(
                m.iter().map(Vec::len).sum::<usize>() < 64 * 1024,
                "an oversized message passed"
            );
            if m == [b"after".to_vec()] {
                break;
            }
            seen.push(m);
        }
        assert!(
            seen.contains(&vec![Vec::new(), Vec::new(), b"empty frames".to_vec()]),
            "{seen:?}"
        );

        let publisher = sock(&ctx, zmq::PUB);
        publisher.connect(&fwd.frontend).unwrap();
        let sub = sock(&ctx, zmq::SUB);
        sub.set_subscribe(b"").unwrap();
        sub.connect(&fwd.backend).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            publisher.send("still here", 0).unwrap();
            if sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the forwarder stopped forwarding"
            );
        }
        assert_eq!(sub.recv_string(0).unwrap().unwrap(), "still here");
        let s = streamer.stop();
        assert!(s.frontend.msgs_in >= 2, "{s:?}");
        let counts: HashMap<&str, u64> = [("fwd", fwd.stop().frontend.msgs_in)].into();
        assert!(counts["fwd"] >= 1);
    });
}

/// Speaks just enough ZMTP 3.0 as a SUB to send one subscription, then
/// hangs up.
fn zmtp_subscribe(port: u16, topic: &[u8]) {
    use std::io::Read;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
    let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    greeting.extend_from_slice(b"NULL");
    greeting.resize(64, 0);
    tcp.write_all(&greeting).unwrap();
    let mut theirs = [0u8; 64];
    tcp.read_exact(&mut theirs).unwrap();
    // READY with Socket-Type SUB.
    let mut ready = b"\x05READY\x0bSocket-Type".to_vec();
    ready.extend_from_slice(&3u32.to_be_bytes());
    ready.extend_from_slice(b"SUB");
    tcp.write_all(&[0x04, ready.len() as u8]).unwrap();
    tcp.write_all(&ready).unwrap();
    // The subscription: a long frame, body 0x01 + topic.
    tcp.write_all(&[0x02]).unwrap();
    tcp.write_all(&((topic.len() + 1) as u64).to_be_bytes())
        .unwrap();
    tcp.write_all(&[0x01]).unwrap();
    let _ = tcp.write_all(topic);
}
