//! `--metrics` on the ventilator binary: a bad address, or one in use,
//! stops it with exit code 2 and one line before any work. (What it
//! serves is read mid-batch in the worker crate's `tests/metrics.rs`.)

use std::process::Command;

#[test]
fn a_bad_metrics_address_or_one_in_use_exits_2_before_any_work() {
    let said = common::testing::refuses_bad_metrics("0.0.0.0", |addr| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ventilator"));
        c.args(["--task-endpoint", "tcp://127.0.0.1:*"])
            .args(["--feedback-endpoint", "tcp://127.0.0.1:1"])
            .args(["--metrics", addr, "--wait", "30s"]);
        c
    });
    for err in said {
        assert!(!err.contains("waiting"), "no work began: {err}");
    }
}
