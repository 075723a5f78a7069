//! The worker binary: SIGTERM mid-task ends it and its command within a second.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::protocol::{self, Header, Kind};
use common::testing::{bound, stderr_of, stop_within, wait_exit};
use common::work::Work;

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_worker"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The worker binary pointed at these task, result and control endpoints.
fn worker_at(tasks: &str, results: &str, control: &str) -> Command {
    let mut c = worker();
    c.args([
        "--task-endpoint",
        tasks,
        "--result-endpoint",
        results,
        "--control-endpoint",
        control,
    ]);
    c
}

#[test]
fn sigterm_mid_task_kills_the_command_and_exits_within_a_second() {
    let ctx = zmq::Context::new();
    let (tasks, tasks_at) = bound(&ctx, zmq::PUSH);
    let (results, results_at) = bound(&ctx, zmq::PULL);
    let (_control, control_at) = bound(&ctx, zmq::PUB);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut child = worker_at(&tasks_at, &results_at, &control_at)
        .args(["--dispatch", "push"])
        .spawn()
        .unwrap();
    // HELLO comes once the task socket is connected.
    let hello = results.recv_multipart(0).expect("no HELLO from the worker");
    assert_eq!(protocol::split(&hello).unwrap().0.kind, Kind::Hello);
    let mut body = Vec::new();
    let cmd = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    protocol::encode_task(
        &mut body,
        0,
        &Work::Exec {
            command: cmd,
            timeout_ms: None,
            stdin: None,
        },
    );
    tasks
        .send_multipart(
            [
                &Header {
                    kind: Kind::Task,
                    attempt: 1,
                    batch: 9,
                    task: 0,
                }
                .encode()[..],
                &body[..],
            ],
            0,
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let command_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = stop_within(
        &mut child,
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(1),
    );
    assert!(status.success(), "{status:?}");
    // The command was killed (and reaped: not even a zombie is left).
    assert!(
        !std::path::Path::new(&format!("/proc/{command_pid}")).exists(),
        "the command outlived its worker"
    );
    assert!(stderr_of(&mut child).contains("stopped"));
}

#[test]
fn end_from_the_sink_makes_it_exit_0_and_bad_flags_exit_2() {
    let ctx = zmq::Context::new();
    let (_tasks, tasks_at) = bound(&ctx, zmq::PUSH);
    let (results, results_at) = bound(&ctx, zmq::PULL);
    let (control, control_at) = bound(&ctx, zmq::PUB);
    let mut child = worker_at(&tasks_at, &results_at, &control_at)
        .args(["--threads", "3", "--dispatch", "push"])
        .spawn()
        .unwrap();
    results.recv_multipart(0).expect("no HELLO from the worker");
    let end = Header::bare(Kind::End, 1).encode();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "END was not obeyed");
        control.send(&end[..], 0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wait_exit(&mut child, Duration::from_secs(1)).success());

    let out = worker()
        .args(["--threads", "2", "--task-endpoint", "@tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_worker_in_the_other_dispatch_mode_says_so_within_seconds() {
    // A worker dealing by credit (DEALER) against a push ventilator (PUSH),
    // and one taking pushed tasks (PULL) against a credit ventilator
    // (ROUTER): libzmq drops both without an error; the worker must say it.
    let ctx = zmq::Context::new();
    let (_results, results_at) = bound(&ctx, zmq::PULL);
    let (_control, control_at) = bound(&ctx, zmq::PUB);
    for (stand_in, mode) in [(zmq::PUSH, "credit"), (zmq::ROUTER, "push")] {
        let (_tasks, tasks_at) = bound(&ctx, stand_in);
        let mut child = worker_at(&tasks_at, &results_at, &control_at)
            .args(["--dispatch", mode])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(4500));
        stop_within(
            &mut child,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(1),
        );
        let err = stderr_of(&mut child);
        assert!(
            err.contains("handshake never completed") && err.contains("same --dispatch"),
            "{mode}: {err}"
        );
    }
}

#[test]
fn man_page_and_completions_generate_with_every_flag() {
    common::testing::assert_generates(
        env!("CARGO_BIN_EXE_worker"),
        &[],
        "worker",
        &["--task-endpoint", "--threads", "--serve", "--generate"],
    );
}

/// A stand-in ventilator (ROUTER) with these security flags, in a context
/// of its own as in another process; the worker binary with `worker_flags`
/// connects to it. Returns what the worker logged once `expect` appeared
/// (or after 10 s).
fn refused_by(server_flags: &[&str], worker_flags: &[&str], expect: &str) -> String {
    let vctx = zmq::Context::new();
    let (_router, at) = common::testing::secured_bound(&vctx, zmq::ROUTER, server_flags);
    let ctx = zmq::Context::new();
    let (_results, results_at) = bound(&ctx, zmq::PULL);
    let (_control, control_at) = bound(&ctx, zmq::PUB);
    let mut child = worker_at(&at, &results_at, &control_at)
        .args(worker_flags)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    said_then_stopped(&mut child, expect)
}

/// What the worker `child` logged once `expect` appeared (or after 10 s);
/// then SIGTERM stops it within a second.
fn said_then_stopped(child: &mut std::process::Child, expect: &str) -> String {
    let mut lines = common::testing::Lines::of(child);
    let said = lines.wait_for(expect, Duration::from_secs(10));
    stop_within(
        child,
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(1),
    );
    said.unwrap_or_else(|| lines.all(Duration::from_millis(100)))
}

#[test]
fn a_refused_worker_says_why_in_plain_words() {
    let refused = "the ventilator at tcp://127.0.0.1:";
    // An address outside the ventilator's --allow.
    let said = refused_by(
        &["--allow", "192.0.2.0/24"],
        &[],
        "not in the peer's --allow",
    );
    assert!(said.contains(refused), "{said}");
    assert!(
        said.contains("refused the connection: the peer refused this host's address"),
        "{said}"
    );
    // PLAIN: a wrong password, and no login at all.
    let mut users = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut users, b"alice:s3cret\n").unwrap();
    let auth = ["--auth-file", users.path().to_str().unwrap()];
    let said = refused_by(&auth, &["--login", "alice:wrong"], "in --login");
    assert!(
        said.contains("a wrong user or password in --login"),
        "{said}"
    );
    let said = refused_by(&auth, &[], "requires security");
    assert!(
        said.contains("the peer requires security (CURVE or PLAIN)"),
        "{said}"
    );
    assert!(
        !said.contains("--dispatch"),
        "not a dispatch mismatch: {said}"
    );
}

#[test]
fn a_worker_with_a_missing_or_wrong_curve_key_says_so() {
    if zmq::has("curve") != Some(true) {
        eprintln!("skipped: this build's libzmq has no CURVE (the system libzmq pass runs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = common::security::KeyPair::generate().unwrap();
    let secret = dir.path().join("server.key");
    std::fs::write(&secret, pair.to_file_text()).unwrap();
    let server = ["--curve-secret", secret.to_str().unwrap()];
    let said = refused_by(&server, &[], "requires security");
    assert!(
        said.contains("the peer requires security (CURVE or PLAIN)"),
        "{said}"
    );
    assert!(
        !said.contains("--dispatch"),
        "not a dispatch mismatch: {said}"
    );
    let other = zmq::z85_encode(&common::security::KeyPair::generate().unwrap().public).unwrap();
    // Both the ventilator and the sink (a plain socket here) refuse; the
    // sink's words name --curve-secret too, so wait for the ventilator's.
    let said = refused_by(
        &server,
        &["--curve-server-key", &other],
        "is probably not the public half",
    );
    assert!(
        said.contains("--curve-server-key is probably not the public half"),
        "{said}"
    );
}

#[test]
fn a_ventilator_of_another_protocol_version_is_named() {
    // A stand-in ventilator that answers in version 2 of the protocol.
    let ctx = zmq::Context::new();
    let (router, tasks_at) = bound(&ctx, zmq::ROUTER);
    let (_results, results_at) = bound(&ctx, zmq::PULL);
    let (_control, control_at) = bound(&ctx, zmq::PUB);
    let mut child = worker_at(&tasks_at, &results_at, &control_at)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let mut frames = router
        .recv_multipart(0)
        .expect("the worker says HELLO or CREDIT");
    let header = frames
        .iter()
        .position(|f| f.len() == protocol::HEADER_LEN && f.starts_with(&protocol::MAGIC))
        .expect("a zpipe header");
    frames[header][2] = 2;
    router.send_multipart(&frames, 0).unwrap();
    let said = said_then_stopped(&mut child, "protocol version 2");
    assert!(said.contains("protocol version 2 from the peer"), "{said}");
}
