//! `--metrics` on the ventilator binary: a bad address, or one in use,
//! stops it with exit code 2 and one line before any work. (What it
//! serves is read mid-batch in the worker crate's `tests/metrics.rs`.)

use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::{stderr_of, taken_tcp_port, wait_exit};

#[test]
fn a_bad_metrics_address_or_one_in_use_exits_2_before_any_work() {
    let (_taken, at) = taken_tcp_port();
    for (addr, says) in [("0.0.0.0", "HOST:PORT"), (at.as_str(), "in use")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ventilator"))
            .args(["--task-endpoint", "tcp://127.0.0.1:*"])
            .args(["--feedback-endpoint", "tcp://127.0.0.1:1"])
            .args(["--metrics", addr, "--wait", "30s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(10));
        let err = stderr_of(&mut child);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("--metrics") && err.contains(says), "{err}");
        assert!(!err.contains("waiting"), "no work began: {err}");
    }
}
