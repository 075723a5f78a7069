//! The ventilator binary: input errors refuse the run before anything is sent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::{stderr_of, stop_within, wait_exit};

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
