//! `sink plot`: a real batch's results drawn as a timeline (one bar per
//! result, one lane per worker thread), the benchmark's scaling figures
//! drawn as lines, and bad input refused with exit code 2.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;

use clap::Parser;
use common::Shutdown;
use common::testing::time_bomb;
use common::work::Work;

mod support;

fn sink(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(args)
        .args(paths)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Elements whose class starts with `class`.
fn of_class<'a>(doc: &'a roxmltree::Document, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.attribute("class").and_then(|c| c.split(' ').next()) == Some(class))
        .collect()
}

/// Runs a batch of `tasks` over two workers of two threads each, through a
/// sink writing to `results`; returns its report.
fn run_batch(results: &Path, tasks: Vec<Work>) -> sink::Report {
    let ctx = zmq::Context::new();
    let any = "tcp://127.0.0.1:*";
    let cfg = sink::Config::parse_from([
        "sink",
        "--result-endpoint",
        any,
        "--control-endpoint",
        any,
        "--feedback-endpoint",
        any,
    ]);
    let collector = sink::Sink::bind(&cfg, &ctx).unwrap();
    let at = collector.bound().clone();
    let out = sink::open_output(results).unwrap();
    let s = thread::spawn(move || collector.run(&Shutdown::new(), out));
    support::feed(&ctx, &at, tasks, &[], &[]);
    s.join().unwrap().unwrap()
}

#[test]
fn a_real_batchs_timeline_has_one_bar_per_result_and_one_lane_per_thread() {
    time_bomb(90, || {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.jsonl");
        let tasks: Vec<Work> = (0..40).map(|i| Work::Sleep { ms: 2 + i % 7 }).collect();
        let report = run_batch(&results, tasks);
        assert!(report.complete, "{report:?}");

        // Each line says when it ran, in the batch's time, and where.
        let text = std::fs::read_to_string(&results).unwrap();
        let mut lanes = BTreeSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (start, end) = (
                v["start_ms"].as_f64().unwrap(),
                v["end_ms"].as_f64().unwrap(),
            );
            let ran = v["duration_ms"].as_f64().unwrap();
            assert!(0.0 <= start && start <= end, "{line}");
            // start is end less the run time, held at 0 for a task that
            // began before GO reached the sink (its result can come in
            // within the first milliseconds).
            assert!(
                (start - (end - ran).max(0.0)).abs() < 0.002,
                "start = end - run time, never below 0: {line}"
            );
            assert!(ran >= 2.0, "a sleep task ran its time: {line}");
            assert!(
                end <= report.elapsed_ms + 1.0,
                "within the batch ({} ms): {line}",
                report.elapsed_ms
            );
            let thread = v["thread"].as_u64().expect("the thread") as u16;
            lanes.insert(format!("{}:{thread}", v["worker"].as_str().unwrap()));
        }
        assert!(lanes.len() >= 2, "the batch was spread: {lanes:?}");

        let svg = dir.path().join("timeline.svg");
        let out = sink(&["plot", "timeline", "-o"], &[&svg, &results]);
        assert!(out.status.success(), "{out:?}");
        let svg = std::fs::read_to_string(&svg).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
        let mut tasks: Vec<u64> = of_class(&doc, "bar")
            .iter()
            .map(|n| n.attribute("data-task").unwrap().parse().unwrap())
            .collect();
        tasks.sort();
        assert_eq!(tasks, (0..40).collect::<Vec<_>>(), "one bar per result");
        let drawn: BTreeSet<String> = of_class(&doc, "lane")
            .iter()
            .map(|n| n.attribute("data-lane").unwrap().to_owned())
            .collect();
        assert_eq!(drawn, lanes, "one lane per worker thread");
        assert_eq!(of_class(&doc, "lane").len(), lanes.len());
        let words: String = doc.descendants().filter_map(|n| n.text()).collect();
        assert!(
            words.contains(&format!("batch {}: 40 results", report.batch.unwrap())),
            "{words}"
        );
        for lane in &lanes {
            assert!(words.contains(lane.as_str()), "lane {lane} labelled");
        }
    });
}

#[test]
fn a_file_that_holds_no_timeline_is_exit_code_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let good = "{\"task\":0,\"batch\":\"00000000000000aa\",\"attempt\":1,\"worker\":\"w:1\",\"thread\":0,\"status\":\"ok\",\"duration_ms\":1.000,\"start_ms\":0.000,\"end_ms\":1.000,\"output\":\"\",\"error\":\"\"}\n";
    let old = "{\"task\":0,\"batch\":\"00000000000000aa\",\"attempt\":1,\"worker\":\"w:1\",\"status\":\"ok\",\"duration_ms\":1.000,\"output\":\"\",\"error\":\"\"}\n";
    for (name, text, says) in [
        ("empty.jsonl", String::new(), "the file is empty"),
        (
            "garbage.jsonl",
            format!("{good}this is not json\n"),
            "line 2: not a result line",
        ),
        ("old.jsonl", old.to_owned(), "has start_ms and end_ms"),
        ("missing.jsonl", String::new(), "cannot read it"),
    ] {
        let input = dir.path().join(name);
        if name != "missing.jsonl" {
            std::fs::write(&input, text).unwrap();
        }
        let svg = dir.path().join("out.svg");
        let out = sink(&["plot", "timeline", "-o"], &[&svg, &input]);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.contains(name), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!svg.exists(), "{name}: no picture");
    }
}

#[test]
fn the_scaling_plot_draws_each_mode_and_the_ideal() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("scaling.csv");
    std::fs::write(
        &csv,
        "workers,ideal,push,credit,credit+cost\n1,4891,4915,4939,4944\n2,2445.5,2580,2467.5,2467.5\n4,1222.8,1431.8,1243.5,1232.5\n8,611.4,739.2,654.2,616.3\n",
    )
    .unwrap();
    let svg = dir.path().join("scaling.svg");
    let out = sink(
        &["plot", "scaling", "--title", "guide batch", "-o"],
        &[&svg, &csv],
    );
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG parses");
    let lines = of_class(&doc, "series");
    for mode in ["push", "credit", "credit+cost"] {
        let line: Vec<_> = lines
            .iter()
            .filter(|n| n.attribute("data-series") == Some(mode))
            .collect();
        assert_eq!(line.len(), 1, "{mode}");
        let points = line[0].attribute("points").unwrap().split_whitespace();
        assert_eq!(points.count(), 4, "{mode}: a point per worker count");
    }
    assert!(
        lines
            .iter()
            .any(|n| n.attribute("data-series") == Some("ideal")),
        "the ideal"
    );
    let words: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(words.contains("guide batch"), "{words}");
    assert!(words.contains("push: +20.9 % at 8"), "{words}");

    std::fs::write(&csv, "workers,push\n1,4915\ntwo,2580\n").unwrap();
    let out = sink(&["plot", "scaling", "-o"], &[&svg, &csv]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("\"two\""), "{err}");
}

#[test]
fn plot_has_its_own_help_and_takes_no_collecting_flags() {
    let out = sink(&["plot", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["timeline", "scaling", "coloured", "ideal"] {
        assert!(help.contains(word), "sink plot --help lacks {word}: {help}");
    }
    let out = sink(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("plot") && help.contains("--result-endpoint"),
        "{help}"
    );
    let out = sink(
        &["--ordered", "plot", "timeline", "-o", "x.svg", "r.jsonl"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
