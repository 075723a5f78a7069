//! What the standing-pool tests share: a `sink --serve` process on free
//! ports, submitting a batch with the ventilator binary, reading the
//! results file its line names.

#![allow(dead_code)] // each test file uses its own share of these

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
/// A binary of this workspace, beside the worker's.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker")).with_file_name(name)
}

/// A free loopback port's endpoint, for a ventilator to bind (the next
/// batch's ventilator binds it again, and the workers stay connected to it).
pub fn free_endpoint() -> String {
    common::testing::stable_endpoint()
}

/// A standing sink process and the endpoints it bound.
pub type ServeSink = common::testing::SinkProcess;

/// `sink --serve` writing into `dir`, on free ports, or on `at`'s (a sink
/// that replaces one).
pub fn serve_sink(dir: &Path, at: Option<&ServeSink>) -> ServeSink {
    let flags = ["--serve".as_ref(), "--output-dir".as_ref(), dir.as_os_str()];
    let timeout = ["--worker-timeout".as_ref(), "1s".as_ref()];
    common::testing::sink_process(&bin("sink"), &[&flags[..], &timeout].concat(), at)
}

/// Writes `tasks` (shell commands, one a line) to `path`.
pub fn write_input(path: &Path, tasks: &[String]) -> PathBuf {
    std::fs::write(path, tasks.join("\n") + "\n").unwrap();
    path.to_owned()
}

/// Submits the batch in `input` to the pool (ventilator binding `tasks`,
/// talking to `feedback`) and waits for it: the exit code and the line the
/// ventilator prints.
pub fn submit(tasks: &str, feedback: &str, input: &Path, workers: usize) -> (Option<i32>, String) {
    let out = Command::new(bin("ventilator"))
        .args(["--task-endpoint", tasks, "--feedback-endpoint", feedback])
        .args(["--workers", &workers.to_string(), "--wait", "60s"])
        .args(["--heartbeat", "200ms", "--input"])
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "the ventilator died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// [`submit`] on a thread of its own, for a test that acts mid-batch.
pub fn submit_in_background(
    tasks: &str,
    feedback: &str,
    input: &Path,
    workers: usize,
) -> std::thread::JoinHandle<(Option<i32>, String)> {
    let (tasks, feedback, input) = (tasks.to_owned(), feedback.to_owned(), input.to_owned());
    std::thread::spawn(move || submit(&tasks, &feedback, &input, workers))
}

/// The results file the ventilator's line names, as task → (status,
/// output); fails on a task that is there twice.
pub fn results_of(line: &str) -> HashMap<u64, (String, String)> {
    let path = line
        .rsplit_once("results in ")
        .and_then(|(_, at)| at.split_once(':'))
        .map(|(_, path)| path.to_string())
        .unwrap_or_else(|| panic!("no results path in {line:?}"));
    let mut seen = HashMap::new();
    for l in std::fs::read_to_string(&path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let task = v["task"].as_u64().unwrap();
        let got = (
            v["status"].as_str().unwrap().to_string(),
            v["output"].as_str().unwrap().trim().to_string(),
        );
        assert!(seen.insert(task, got).is_none(), "task {task} twice");
    }
    seen
}

/// Waits (at most 30 s) until a standing sink has written `n` results into
/// the batch files of `dir`.
pub fn wait_for_results(dir: &Path, n: usize) {
    let written = || -> usize {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .map(|t| t.lines().count())
                .sum()
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while written() < n {
        assert!(std::time::Instant::now() < deadline, "no results came");
        std::thread::sleep(Duration::from_millis(20));
    }
}
