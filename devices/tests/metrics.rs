//! `--metrics` on a device: a queue (both ways) and a streamer on free
//! loopback ports, real traffic through them; their `/metrics` count every
//! message and byte by side and direction, say PAUSE, pass `promtool check
//! metrics`, and stop with the device. The `devices` binary refuses a bad
//! address, or one in use, with exit code 2.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Shutdown;
use common::testing::{http_get, promtool_check, sample, scrape, time_bomb};
use devices::{Device, DeviceArgs, Kind};

fn sock(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(5000).unwrap();
    s.set_sndtimeo(5000).unwrap();
    s
}

/// `name{device,side,direction}`'s value in `text`.
fn way(text: &str, name: &str, device: &str, side: &str, direction: &str) -> Option<f64> {
    sample(
        text,
        name,
        &[("device", device), ("side", side), ("direction", direction)],
    )
}

/// Scrapes `addr` until `ready`, at most 10 s.
fn scrape_until(addr: std::net::SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr);
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "not within 10 s:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_queue_counts_both_ways_by_side_and_says_pause() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let mut args = DeviceArgs::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").unwrap();
        args.control = Some("tcp://127.0.0.1:*".parse().unwrap());
        args.metrics.metrics = Some("127.0.0.1:0".into());
        let device = Device::bind(Kind::Queue, &args, &ctx).unwrap();
        let b = device.bound().clone();
        let at = b.metrics.expect("the device serves metrics");
        let stop = Shutdown::new();
        let s = stop.clone();
        let running = thread::spawn(move || device.run(&s));

        // REQ → queue → REP, 100 requests of 10 bytes, answers of 3.
        let req = sock(&ctx, zmq::REQ);
        req.connect(&b.frontend[0]).unwrap();
        let rep = sock(&ctx, zmq::REP);
        rep.connect(&b.backend[0]).unwrap();
        for _ in 0..100 {
            req.send(&b"0123456789"[..], 0).unwrap();
            rep.recv_bytes(0).unwrap();
            rep.send(&b"abc"[..], 0).unwrap();
            req.recv_bytes(0).unwrap();
        }
        let text = scrape_until(at, |t| {
            way(t, "zpipe_device_messages_total", "queue", "frontend", "out") == Some(100.0)
        });
        let m = |side, dir| way(&text, "zpipe_device_messages_total", "queue", side, dir);
        let bytes = |side, dir| way(&text, "zpipe_device_bytes_total", "queue", side, dir);
        assert_eq!(m("frontend", "in"), Some(100.0), "{text}");
        assert_eq!(m("backend", "out"), Some(100.0));
        assert_eq!(m("backend", "in"), Some(100.0));
        // A ROUTER's messages carry the client's routing id and an empty
        // delimiter: more than the body alone, the same both ways.
        let (fin, bout) = (
            bytes("frontend", "in").unwrap(),
            bytes("backend", "out").unwrap(),
        );
        assert_eq!(fin, bout, "{text}");
        assert!(fin > 1000.0, "{text}");
        assert!(
            bytes("backend", "in").unwrap() > 300.0
                && bytes("frontend", "out") == bytes("backend", "in"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "zpipe_device_paused", &[("device", "queue")]),
            Some(0.0)
        );
        match promtool_check(&text) {
            None => eprintln!(
                "promtool is not installed (Debian's prometheus package): the format is not checked"
            ),
            Some(r) => r.unwrap(),
        }

        let control = b.control[0].clone();
        assert_eq!(devices::control(&ctx, &control, "PAUSE").unwrap(), "OK");
        scrape_until(at, |t| {
            sample(t, "zpipe_device_paused", &[("device", "queue")]) == Some(1.0)
        });
        assert_eq!(devices::control(&ctx, &control, "RESUME").unwrap(), "OK");
        scrape_until(at, |t| {
            sample(t, "zpipe_device_paused", &[("device", "queue")]) == Some(0.0)
        });

        stop.trigger();
        let stats = running.join().unwrap().unwrap();
        assert_eq!(stats.frontend.msgs_in, 100);
        assert!(
            http_get(&format!("http://{at}/metrics")).is_err(),
            "the metrics stop with the device"
        );
    });
}

#[test]
fn a_streamer_counts_what_passes_through_it() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let mut args = DeviceArgs::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").unwrap();
        args.metrics.metrics = Some("127.0.0.1:0".into());
        let device = Device::bind(Kind::Streamer, &args, &ctx).unwrap();
        let b = device.bound().clone();
        let at = b.metrics.unwrap();
        let stop = Shutdown::new();
        let s = stop.clone();
        let running = thread::spawn(move || device.run(&s));
        let push = sock(&ctx, zmq::PUSH);
        push.connect(&b.frontend[0]).unwrap();
        let pull = sock(&ctx, zmq::PULL);
        pull.connect(&b.backend[0]).unwrap();
        let n = 5000u64;
        for i in 0..n {
            push.send_multipart([&i.to_le_bytes()[..], b"xy"], 0)
                .unwrap();
        }
        for _ in 0..n {
            pull.recv_multipart(0).unwrap();
        }
        let text = scrape_until(at, |t| {
            way(
                t,
                "zpipe_device_messages_total",
                "streamer",
                "backend",
                "out",
            ) == Some(n as f64)
        });
        let v = |name, side, dir| way(&text, name, "streamer", side, dir);
        assert_eq!(
            v("zpipe_device_messages_total", "frontend", "in"),
            Some(n as f64)
        );
        assert_eq!(
            v("zpipe_device_bytes_total", "frontend", "in"),
            Some(n as f64 * 10.0)
        );
        assert_eq!(
            v("zpipe_device_bytes_total", "backend", "out"),
            Some(n as f64 * 10.0)
        );
        assert_eq!(
            v("zpipe_device_messages_total", "backend", "in"),
            Some(0.0),
            "one way"
        );
        if let Some(r) = promtool_check(&text) {
            r.unwrap();
        }
        stop.trigger();
        running.join().unwrap().unwrap();
    });
}

#[test]
fn a_bad_metrics_address_or_one_in_use_exits_2() {
    common::testing::refuses_bad_metrics("127.0.0.1", |addr| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_devices"));
        c.args(["streamer", "--frontend", "tcp://127.0.0.1:*"])
            .args(["--backend", "tcp://127.0.0.1:*", "--metrics", addr]);
        c
    });
}
