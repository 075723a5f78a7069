//! Hostile input on every endpoint the ventilator and the sink bind: random
//! bytes on a raw TCP connection, empty frames, a 64 MiB frame, 10 000 random
//! multipart messages, frames of another protocol version, a replayed result
//! of an unknown batch, and sockets of types that may not pair. Then a normal
//! batch runs through the same two processes: it completes, every result
//! exactly once, neither process died, their memory stayed small, and the
//! reports count what was dropped.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::protocol::{self, Header, Kind, ResultBody};
use common::testing::{Lines, endpoint_in, wait_exit};
use common::work::Outcome;
use rand::{Rng, RngExt};
use support::*;

/// A sibling binary of this package's (built by `cargo test --workspace`;
/// built here if this package's tests run alone).
fn sibling(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ventilator")).with_file_name(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", name, "--bin", name])
            .status()
            .unwrap()
            .success();
        assert!(ok && path.exists(), "cannot build {name}");
    }
    path
}

fn spawn(cmd: &mut Command) -> (Child, Lines) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    (child, lines)
}

/// Peak resident memory of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn alive(child: &mut Child, what: &str) {
    assert!(
        child.try_wait().unwrap().is_none(),
        "the {what} died under hostile input"
    );
}

fn sock(ctx: &zmq::Context, kind: zmq::SocketType, at: &str) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    s.set_sndtimeo(2000).unwrap();
    s.connect(at).unwrap();
    s
}

/// Everything hostile, to one endpoint whose proper peer is `peer`.
fn attack(ctx: &zmq::Context, at: &str, peer: zmq::SocketType, wrong: zmq::SocketType) {
    let mut rng = rand::rng();
    // Random bytes on a raw connection: not even a ZMTP greeting.
    let addr = at.trim_start_matches("tcp://");
    if let Ok(mut raw) = std::net::TcpStream::connect(addr) {
        let mut junk = vec![0u8; 64 * 1024];
        rng.fill_bytes(&mut junk);
        let _ = raw.write_all(&junk);
    }
    // A socket of a type that may not pair: libzmq drops it in the handshake.
    let w = sock(ctx, wrong, at);
    let _ = w.send(&b"wrong socket type"[..], zmq::DONTWAIT);
    let s = sock(ctx, peer, at);
    if peer == zmq::SUB {
        // A SUB can only subscribe: an XSUB sends a 64 MiB message (not
        // marked as a subscription, which our own XSUB would keep in its
        // trie), and many random ones.
        let x = sock(ctx, zmq::XSUB, at);
        let mut big = vec![1u8; 64 << 20];
        big[0] = 2;
        let _ = x.send(big, 0);
        for _ in 0..10_000 {
            let n = rng.random_range(0..64);
            let mut v = vec![0u8; n];
            rng.fill_bytes(&mut v);
            let _ = x.send(v, 0);
        }
        return;
    }
    let dealer = peer == zmq::DEALER;
    let send = |frames: Vec<Vec<u8>>| {
        let _ = s.send_multipart(frames, 0);
    };
    // Empty frames, alone and in numbers.
    send(vec![vec![]]);
    send(vec![vec![], vec![], vec![]]);
    // 64 MiB: over every role's --max-msg-size, so the connection goes.
    let huge = sock(ctx, peer, at);
    let _ = huge.send(vec![0u8; 64 << 20], 0);
    // 10 000 random multipart messages.
    for _ in 0..10_000 {
        let parts = rng.random_range(1..5);
        let frames: Vec<Vec<u8>> = (0..parts)
            .map(|_| {
                let mut v = vec![0u8; rng.random_range(0..48)];
                rng.fill_bytes(&mut v);
                v
            })
            .collect();
        send(frames);
    }
    // Another protocol version, and a replayed result of an unknown batch.
    let mut v2 = Header::bare(Kind::Hello, 0).encode();
    v2[2] = 2;
    let mut body = Vec::new();
    protocol::encode_result(
        &mut body,
        &ResultBody {
            worker: 7,
            thread: 0,
            sent_us: 0,
            duration_us: 1,
            outcome: Outcome::ok(b"replayed".to_vec()),
        },
    );
    let replay = Header {
        kind: Kind::Result,
        attempt: 1,
        batch: 0xdead_beef,
        task: 3,
    }
    .encode();
    let env = |f: Vec<Vec<u8>>| {
        if dealer {
            let mut e = vec![vec![]];
            e.extend(f);
            e
        } else {
            f
        }
    };
    for _ in 0..100 {
        send(env(vec![v2.to_vec(), b"{}".to_vec()]));
        send(env(vec![replay.to_vec(), body.clone()]));
    }
    // Wait until all of it is out.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn hostile_input_on_every_bound_endpoint_then_a_normal_batch_completes() {
    time_bomb(120, || {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("results.jsonl");
        let sink_report = dir.path().join("sink.json");
        let vent_report = dir.path().join("vent.json");
        let (mut sink, mut sink_lines) = spawn(
            Command::new(sibling("sink"))
                .args(common::testing::SINK_ON_FREE_PORTS)
                .arg("--output")
                .arg(&output)
                .arg("--report")
                .arg(&sink_report),
        );
        let l = sink_lines
            .wait_for("sink listening", Duration::from_secs(10))
            .unwrap();
        let (results, control, feedback) = (
            endpoint_in(&l, "results").unwrap(),
            endpoint_in(&l, "control").unwrap(),
            endpoint_in(&l, "feedback").unwrap(),
        );
        let (mut vent, mut vent_lines) = spawn(
            Command::new(env!("CARGO_BIN_EXE_ventilator"))
                .args([
                    "--task-endpoint",
                    "tcp://127.0.0.1:*",
                    "--feedback-endpoint",
                    &feedback,
                    "--workers",
                    "2",
                    "--wait",
                    "100s",
                    "--tasks",
                    "500",
                    "--kind",
                    "noop",
                    "--report",
                ])
                .arg(&vent_report),
        );
        let l = vent_lines
            .wait_for("ventilator listening", Duration::from_secs(10))
            .unwrap();
        let tasks = endpoint_in(&l, "tasks").unwrap();

        let ctx = zmq::Context::new();
        attack(&ctx, &tasks, zmq::DEALER, zmq::SUB);
        attack(&ctx, &results, zmq::PUSH, zmq::PUB);
        attack(&ctx, &feedback, zmq::DEALER, zmq::PULL);
        attack(&ctx, &control, zmq::SUB, zmq::PUSH);
        alive(&mut sink, "sink");
        alive(&mut vent, "ventilator");
        let (sink_kib, vent_kib) = (peak_rss_kib(sink.id()), peak_rss_kib(vent.id()));
        // Neither took the 64 MiB frame in.
        assert!(sink_kib < 48 << 10, "sink peak {sink_kib} KiB");
        assert!(vent_kib < 48 << 10, "ventilator peak {vent_kib} KiB");

        // Now a normal batch through the same processes.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let cfg = clap::Parser::parse_from([
                    "worker",
                    "--task-endpoint",
                    &tasks,
                    "--result-endpoint",
                    &results,
                    "--control-endpoint",
                    &control,
                ]);
                spawn_worker(&ctx, cfg)
            })
            .collect();
        let status = wait_exit(&mut vent, Duration::from_secs(60));
        assert!(
            status.success(),
            "{}",
            vent_lines.all(Duration::from_millis(100))
        );
        let status = wait_exit(&mut sink, Duration::from_secs(30));
        assert!(
            status.success(),
            "{}",
            sink_lines.all(Duration::from_millis(100))
        );
        for (_, w) in workers {
            w.join().unwrap().unwrap();
        }
        let mut seen = vec![0u32; 500];
        for l in read_lines(&output) {
            seen[l["task"].as_u64().unwrap() as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n == 1), "not exactly once");
        let sr: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sink_report).unwrap()).unwrap();
        assert_eq!(sr["complete"], true);
        let dropped = sr["dropped"].as_object().unwrap();
        let total: u64 = dropped.values().map(|v| v.as_u64().unwrap()).sum();
        assert!(total >= 10_000, "sink drops: {dropped:?}");
        assert!(dropped.contains_key("wrong version"), "{dropped:?}");
        assert!(dropped.contains_key("foreign batch"), "{dropped:?}");
        let vr: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&vent_report).unwrap()).unwrap();
        let vdrops = vr["dropped"].as_object().unwrap();
        let vtotal: u64 = vdrops.values().map(|v| v.as_u64().unwrap()).sum();
        assert!(vtotal >= 5_000, "ventilator drops: {vdrops:?}");
    });
}
