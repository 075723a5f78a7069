//! The ventilator binary: input errors refuse the run before anything is sent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::{stderr_of, stop_within, wait_exit};

mod support;

fn ventilator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ventilator"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn a_malformed_input_line_is_named_and_nothing_is_sent() {
    // A worker stand-in: if anything were sent, it would arrive here.
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_linger(0).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let at = pull.get_last_endpoint().unwrap().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "echo one\n# a comment\n{{\"kind\":\"sleep\",\"ms\":\"ten\"}}"
    )
    .unwrap();
    let mut child = ventilator()
        .args(["--task-endpoint", &format!(">{at}"), "--input"])
        .arg(file.path())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let err = stderr_of(&mut child);
    assert!(err.contains("input line 3"), "{err}");
    assert_eq!(pull.poll(zmq::POLLIN, 300).unwrap(), 0, "a task was sent");
}

#[test]
fn stdin_input_and_usage_errors() {
    let mut child = ventilator()
        .args([
            "--input",
            "-",
            "--plain",
            "sleep",
            "--task-endpoint",
            "udp://x:1",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"5\n").unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    assert!(stderr_of(&mut child).contains("unknown transport"));
    let out = ventilator()
        .args(["--workload", "random:9-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_stops_a_waiting_ventilator_within_a_second() {
    let mut child = ventilator()
        .args([
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:1",
            "--tasks",
            "5",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let status = stop_within(
        &mut child,
        nix::sys::signal::Signal::SIGINT,
        Duration::from_secs(1),
    );
    assert_eq!(status.code(), Some(130));
}

#[test]
fn stdin_is_read_and_its_bad_line_named() {
    let mut child = ventilator()
        .args([
            "--input",
            "-",
            "--plain",
            "sleep",
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:1",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"5\n# note\nsoon\n")
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let err = stderr_of(&mut child);
    assert!(
        err.contains("input line 3") && err.contains("\"soon\""),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_one_line_and_exit_code_2() {
    let ctx = zmq::Context::new();
    let (_taken, at) = common::testing::taken_port(&ctx);
    let out = ventilator()
        .args([
            "--task-endpoint",
            &at,
            "--feedback-endpoint",
            "tcp://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_ventilator_names_workers_of_the_other_dispatch_mode() {
    // A push-mode worker (PULL) connects to a credit ventilator (ROUTER):
    // no error anywhere in libzmq, so the ventilator must say it.
    let mut child = ventilator()
        .args([
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:9",
            "--wait",
            "30s",
        ])
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let mut lines = common::testing::Lines::of(&mut child);
    let line = lines
        .wait_for("listening", Duration::from_secs(10))
        .expect("the ventilator says where it listens");
    let at = common::testing::endpoint_in(&line, "tasks").expect("an endpoint");
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_linger(0).unwrap();
    pull.connect(&at).unwrap();
    let said = lines.wait_for("same --dispatch", Duration::from_secs(8));
    stop_within(
        &mut child,
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(1),
    );
    let said = said.unwrap_or_else(|| lines.all(Duration::from_millis(100)));
    assert!(
        said.contains("never completed the ZMTP handshake"),
        "{said}"
    );
}

#[test]
fn a_cycle_or_an_unknown_dependency_is_refused_before_anything_is_sent() {
    for (input, says) in [
        (
            "{\"kind\":\"noop\",\"id\":\"a\",\"after\":[\"b\"]}\n{\"kind\":\"noop\",\"id\":\"b\",\"after\":[\"a\"]}\n",
            "cycle",
        ),
        ("{\"kind\":\"noop\",\"after\":[\"nobody\"]}\n", "\"nobody\""),
    ] {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(input.as_bytes()).unwrap();
        let mut child = ventilator()
            .args(["--task-endpoint", "tcp://127.0.0.1:*", "--input"])
            .arg(file.path())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(2));
        let err = stderr_of(&mut child);
        assert!(err.contains(says), "{err}");
        if says == "cycle" {
            assert!(err.contains("\"a\"") && err.contains("\"b\""), "{err}");
        }
    }
}

#[test]
fn man_page_and_completions_generate_with_every_flag() {
    common::testing::assert_generates(
        env!("CARGO_BIN_EXE_ventilator"),
        &[],
        "ventilator",
        &["--task-endpoint", "--dispatch", "--retries", "--generate"],
    );
}

/// Runs a 20-task batch with the ventilator binary against a sink and a
/// worker on threads; `wrap` turns the ventilator's command line into the
/// command to run. Returns what that command wrote on stdout and stderr.
fn batch_through(wrap: impl FnOnce(Vec<String>) -> Command) -> String {
    let ctx = zmq::Context::new();
    let sink = support::start_sink(&ctx, &[]);
    let dir = tempfile::tempdir().unwrap();
    // ipc: the worker can be told the address before the ventilator binds.
    let tasks = format!("ipc://{}", dir.path().join("tasks").display());
    let (_stop, worker) = support::spawn_worker(&ctx, support::worker_config(&tasks, &sink, &[]));
    let line = [
        env!("CARGO_BIN_EXE_ventilator"),
        "--task-endpoint",
        &tasks,
        "--feedback-endpoint",
        &sink.feedback,
        "--tasks",
        "20",
        "--workload",
        "40",
    ];
    let mut child = wrap(line.map(String::from).to_vec())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out.push_str(&stderr_of(&mut child));
    assert!(status.success(), "{status}: {out}");
    sink.handle.join().unwrap().unwrap();
    worker.join().unwrap().unwrap();
    out
}

#[test]
fn the_live_line_is_drawn_on_a_terminal_and_nowhere_else() {
    // `script` (util-linux) runs the ventilator on a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give the ventilator a terminal");
        return;
    }
    let on_tty = batch_through(|line| {
        let mut c = Command::new("script");
        c.args(["-qfec", &line.join(" "), "/dev/null"]);
        c
    });
    assert!(
        on_tty.contains(" acknowledged · sent "),
        "no live line on a terminal: {on_tty}"
    );
    assert!(on_tty.contains("/20 acknowledged · sent "), "{on_tty}");
    assert!(on_tty.contains(" · in flight "), "{on_tty}");
    assert!(
        on_tty.contains("1 worker(s), 1 thread(s) ready"),
        "{on_tty}"
    );
    assert!(on_tty.contains("complete, 20 ok"), "{on_tty}");
    let piped = batch_through(|line| {
        let mut c = Command::new(&line[0]);
        c.args(&line[1..]);
        c
    });
    assert!(piped.contains("complete, 20 ok"), "{piped}");
    assert!(
        !piped.contains("acknowledged ·"),
        "a live line on a pipe: {piped}"
    );
    assert!(
        !piped.contains('\u{1b}'),
        "control characters on a pipe: {piped}"
    );
}

#[test]
fn a_ventilator_refused_by_the_sink_says_why() {
    // A stand-in sink that lets in only another network, in a context of
    // its own as in another process.
    let ctx = zmq::Context::new();
    let (_router, at) =
        common::testing::secured_bound(&ctx, zmq::ROUTER, &["--allow", "192.0.2.0/24"]);
    let mut child = ventilator()
        .args([
            "--task-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            &at,
        ])
        .args(["--wait", "2s", "--tasks", "1"])
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    // Said as it happens, and again in the final error.
    assert!(
        err.contains(&format!("the sink at {at} refused the connection")),
        "{err}"
    );
    assert!(
        err.contains("(it refused this ventilator: the peer refused this host's address: it is not in the peer's --allow)"),
        "{err}"
    );
}
