//! The examples of your own code at every end (worker/examples), run as
//! the real programs: each must finish, within a bound, with the answer;
//! `two_kinds` runs kind B after kind A, each kind on its own workers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::testing::wait_exit;

/// Runs an example built by `cargo test` beside the worker binary, to the
/// end (at most 60 s); returns its stdout.
fn run_example(name: &str, args: &[&str]) -> String {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_worker"));
    let mut child = Command::new(bin.parent().unwrap().join("examples").join(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "{name} failed: {out}{err}");
    out
}

#[test]
fn partial_sums_adds_up_the_parts_of_every_worker_process() {
    let out = run_example(
        "partial_sums",
        &["--workers", "3", "--numbers", "100000", "--chunk", "1000"],
    );
    assert!(
        out.contains("total 5000050000 (1 + 2 + ... + 100000 = 5000050000), 0 failed"),
        "{out}"
    );
    let parts: Vec<(u64, u64)> = out
        .lines()
        .filter(|l| l.starts_with("worker "))
        .map(|l| {
            let n: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            // worker HOST:PID: CHUNKS chunks, partial sum SUM
            (n[n.len() - 2], n[n.len() - 1])
        })
        .collect();
    assert_eq!(parts.len(), 3, "each of three processes has a part: {out}");
    assert_eq!(parts.iter().map(|p| p.0).sum::<u64>(), 100, "{out}");
    assert_eq!(
        parts.iter().map(|p| p.1).sum::<u64>(),
        5_000_050_000,
        "{out}"
    );
    assert!(parts.iter().all(|p| p.0 > 0), "{out}");
}

#[test]
fn word_count_merges_the_counts_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "the cat and the hat\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/b.md"), "The hat is red. The end.\n").unwrap();
    std::fs::write(dir.path().join("c.bin"), "not counted\n").unwrap();
    let out = run_example(
        "word_count",
        &[dir.path().to_str().unwrap(), "--threads", "2", "--top", "2"],
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "4 the", "{out}");
    assert_eq!(lines[1], "2 hat", "{out}");
    assert!(
        lines[2].starts_with("11 words (7 different) in 2 files"),
        "{out}"
    );
}

#[test]
fn the_two_kinds_example_runs_each_kind_on_its_workers_b_after_a() {
    let out = run_example("two_kinds", &[]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 5 && f[0].parse::<u64>().is_ok() && (f[1] == "A" || f[1] == "B"))
        .collect();
    assert_eq!(rows.len(), 8, "{out}");
    for r in &rows {
        let want = if r[1] == "A" { "worker-a" } else { "worker-b" };
        assert_eq!(r[2], want, "{out}");
    }
    assert_eq!(rows.iter().filter(|r| r[1] == "B").count(), 4, "{out}");
    let last_a: u64 = rows
        .iter()
        .filter(|r| r[1] == "A")
        .map(|r| r[4].parse::<u64>().unwrap())
        .max()
        .unwrap();
    let first_b: u64 = rows
        .iter()
        .filter(|r| r[1] == "B")
        .map(|r| r[3].parse::<u64>().unwrap())
        .min()
        .unwrap();
    assert!(first_b >= last_a, "{out}");
    assert!(out.contains("8 of 8 tasks ok"), "{out}");
    assert!(
        out.contains("every B began after the last A ended: yes"),
        "{out}"
    );
}
