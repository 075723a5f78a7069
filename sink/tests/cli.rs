//! The sink binary: exit codes, errors in one line, signals.

use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::{stderr_of, stop_within, wait_exit};

fn sink() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sink"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn a_bad_endpoint_is_one_line_and_exit_code_2() {
    let mut child = sink()
        .args(["--result-endpoint", "tcp//nowhere"])
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let err = stderr_of(&mut child);
    assert!(err.contains("bad endpoint"), "{err}");
}

#[test]
fn a_port_in_use_is_one_line_and_exit_code_2() {
    let ctx = zmq::Context::new();
    let (_taken, at) = common::testing::taken_port(&ctx);
    let mut child = sink()
        .args([
            "--result-endpoint",
            &at,
            "--control-endpoint",
            "tcp://127.0.0.1:*",
            "--feedback-endpoint",
            "tcp://127.0.0.1:*",
        ])
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let err = stderr_of(&mut child);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
}

#[test]
fn sigterm_stops_it_within_a_second_with_its_report() {
    let mut child = sink()
        .args(common::testing::SINK_ON_FREE_PORTS)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sink should be waiting for a batch"
    );
    let status = stop_within(
        &mut child,
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(1),
    );
    assert_eq!(status.code(), Some(130));
    let err = stderr_of(&mut child);
    assert!(err.contains("INCOMPLETE"), "{err}");
}

#[test]
fn help_explains_the_flags() {
    let out = sink().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--result-endpoint",
        "--control-endpoint",
        "--feedback-endpoint",
        "--ordered",
        "--classic",
        "ZPIPE_OUTPUT",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn settings_come_from_the_environment_and_the_report_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut child = sink()
        .env("ZPIPE_RESULT_ENDPOINT", "tcp://127.0.0.1:*")
        .env("ZPIPE_CONTROL_ENDPOINT", "tcp://127.0.0.1:*")
        .env("ZPIPE_FEEDBACK_ENDPOINT", "tcp://127.0.0.1:*")
        .env("ZPIPE_JSON", "true")
        .env("ZPIPE_REPORT", &report)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{}",
        stderr_of(&mut child)
    );
    stop_within(
        &mut child,
        nix::sys::signal::Signal::SIGTERM,
        Duration::from_secs(1),
    );
    let err = stderr_of(&mut child);
    let printed: serde_json::Value =
        serde_json::from_str(err.trim()).expect("one JSON object on stderr");
    assert_eq!(printed["complete"], false);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(saved, printed);
}

#[test]
fn man_page_and_completions_generate_with_every_flag() {
    common::testing::assert_generates(
        env!("CARGO_BIN_EXE_sink"),
        &[],
        "sink",
        &[
            "--result-endpoint",
            "--output-dir",
            "--resume",
            "--generate",
        ],
    );
}
