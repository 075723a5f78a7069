//! The devices binary: signals, usage errors, the pairs table.

use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::{stderr_of, stop_within, wait_exit};

fn devices() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_devices"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn every_device_stops_within_a_second_of_sigterm() {
    for kind in ["queue", "forwarder", "streamer"] {
        let mut child = devices()
            .args([
                kind,
                "--frontend",
                "tcp://127.0.0.1:*",
                "--backend",
                "tcp://127.0.0.1:*",
                "--control",
                "tcp://127.0.0.1:*",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{kind} exited early: {}",
            stderr_of(&mut child)
        );
        let status = stop_within(
            &mut child,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(1),
        );
        assert!(status.success(), "{kind}: {status:?}");
    }
}

#[test]
fn a_bad_endpoint_or_a_port_in_use_is_exit_code_2() {
    let mut child = devices()
        .args(["streamer", "--frontend", "tcp://nowhere"])
        .spawn()
        .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(2)
    );
    assert!(stderr_of(&mut child).contains("bad endpoint"));
    let ctx = zmq::Context::new();
    let (_taken, at) = common::testing::taken_port(&ctx);
    let mut child = devices()
        .args(["queue", "--frontend", &at, "--backend", "tcp://127.0.0.1:*"])
        .spawn()
        .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(2)
    );
    assert!(stderr_of(&mut child).contains("already in use"));
}

#[test]
fn pairs_prints_the_table_and_tries_a_pair() {
    let out = devices().arg("pairs").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("DEALER – ROUTER  request-reply"), "{text}");
    let out = devices()
        .args(["pairs", "--try", "push", "pull"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("PULL receives [\"hello\"]") && text.contains("valid (pipeline)"),
        "{text}"
    );
    let out = devices()
        .args(["pairs", "--try", "PUB", "PULL"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("dropped the connection silently") && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn man_pages_and_completions_generate_for_devices_and_each_device() {
    let bin = env!("CARGO_BIN_EXE_devices");
    // The top page lists the devices; completions cover their flags.
    common::testing::assert_generates(bin, &[], "devices", &["streamer", "--generate"]);
    // Each device has a page of its own with its flags.
    common::testing::assert_generates(
        bin,
        &["streamer"],
        "devices-streamer",
        &["--frontend", "--backend", "--capture"],
    );
}
