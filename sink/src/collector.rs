//! Your own code at the sink's end: a [`Collector`] sees each result of
//! the batch once, and the batch's end with its report, and may return a
//! value (a reduction). [`crate::run_with`] and [`crate::Sink::run_with`]
//! run one.
//!
//! The collector is handed a result at the moment the sink writes its line
//! to the output, so it sees exactly what the JSON Lines see: each task
//! once (a duplicate is dropped before), in input order with `--ordered`,
//! and, with `--resume`, first the results read back from the output (so a
//! reduction survives a sink restart), then the new ones. The output stays
//! beside it: a collector does not replace the JSON Lines, and nothing it
//! does can make the sink lose a result.
//!
//! A collector that panics is told of in the log, with the task it was
//! given; it is given no more results, the batch goes on (every result is
//! still written and acknowledged, so nothing is lost: give an output file
//! to keep them), and [`Collected::value`] says what happened.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use common::work::Status;
use serde::Deserialize;

use crate::Error;
use crate::output::Line;
use crate::report::Report;

/// One result, as a [`Collector`] sees it (borrowed from the sink's own
/// buffers: copy what you keep).
#[derive(Debug, Clone, Copy)]
pub struct TaskResult<'a> {
    /// The task's index in the batch (0-based, input order).
    pub task: u64,
    /// The batch it belongs to.
    pub batch: u64,
    /// Which attempt this result is of (1 unless the task went out again).
    pub attempt: u32,
    /// Who ran it: `host:pid`, or `ventilator` for a task the ventilator
    /// gave up.
    pub worker: &'a str,
    /// The worker thread that ran it.
    pub thread: u16,
    /// How it ended.
    pub status: Status,
    /// An `exec` command's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// How long it ran on its worker.
    pub duration: Duration,
    /// Its output (a command's stdout, a handler's result).
    pub output: &'a [u8],
    /// Its error text (stderr, or why it failed).
    pub error: &'a [u8],
}

impl TaskResult<'_> {
    /// Whether the task succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// The output as text (invalid UTF-8 replaced).
    pub fn output_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.output)
    }
}

/// Code that sees every result of a batch and its end: the sink's
/// counterpart of the worker's `Handler`.
///
/// ```no_run
/// use sink::{Collector, Report, TaskResult};
///
/// /// Adds up the numbers the workers send back.
/// #[derive(Default)]
/// struct Sum(i64);
///
/// impl Collector for Sum {
///     type Output = i64;
///     fn collect(&mut self, result: &TaskResult<'_>) {
///         if let Ok(n) = result.output_text().trim().parse::<i64>() {
///             self.0 += n;
///         }
///     }
///     fn finish(self, _report: &Report) -> i64 {
///         self.0
///     }
/// }
/// ```
///
/// Any `FnMut(&TaskResult)` is a collector whose output is `()`.
pub trait Collector: Send + 'static {
    /// What [`Collector::finish`] returns: a reduction of the results.
    type Output: Send + 'static;

    /// One result: each task's once (the first result that came), in the
    /// order the output is written. It runs on the sink's own thread, so
    /// a slow collector slows the sink: keep it short.
    fn collect(&mut self, result: &TaskResult<'_>);

    /// The batch is over, complete or not (`report.complete`): what the
    /// collector makes of it.
    fn finish(self, report: &Report) -> Self::Output;
}

impl<F> Collector for F
where
    F: FnMut(&TaskResult<'_>) + Send + 'static,
{
    type Output = ();

    fn collect(&mut self, result: &TaskResult<'_>) {
        self(result)
    }

    fn finish(self, _report: &Report) {}
}

/// What [`crate::run_with`] returns: the batch's report and what the
/// collector made of it.
#[derive(Debug)]
pub struct Collected<T> {
    /// The batch's report, as [`crate::run`] returns it.
    pub report: Report,
    /// [`Collector::finish`]'s value, or why there is none: the collector
    /// panicked (in `collect`, on a task, or in `finish`).
    pub value: Result<T, CollectorPanicked>,
}

/// A collector panicked: it saw the results before `task` (all of them
/// when `task` is `None`: it panicked in `finish`), and every result is in
/// the output all the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the collector panicked{}: {message}", .task.map(|t| format!(" on task {t}")).unwrap_or_else(|| " in finish".into()))]
pub struct CollectorPanicked {
    /// The task it was given when it panicked; `None` in `finish`.
    pub task: Option<u64>,
    /// The panic's message.
    pub message: String,
}

/// The loop's side of a collector, without its type: what the output
/// hands each result to.
pub(crate) trait Tap: Send {
    /// One result.
    fn result(&mut self, result: &TaskResult<'_>);
    /// Back to the concrete type, at the end.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A collector and whether it panicked.
pub(crate) struct Tapped<C> {
    collector: C,
    panicked: Option<CollectorPanicked>,
}

impl<C: Collector> Tapped<C> {
    pub(crate) fn new(collector: C) -> Self {
        Tapped {
            collector,
            panicked: None,
        }
    }

    /// Calls `finish` (unless it panicked before).
    pub(crate) fn finish(self, report: Report) -> Collected<C::Output> {
        if let Some(p) = self.panicked {
            return Collected {
                report,
                value: Err(p),
            };
        }
        let collector = self.collector;
        let value = catch_unwind(AssertUnwindSafe(|| collector.finish(&report))).map_err(|p| {
            let panicked = CollectorPanicked {
                task: None,
                message: panic_message(&*p),
            };
            log::error!("{panicked}");
            panicked
        });
        Collected { report, value }
    }
}

impl<C: Collector> Tap for Tapped<C> {
    fn result(&mut self, result: &TaskResult<'_>) {
        if self.panicked.is_some() {
            return;
        }
        let collector = &mut self.collector;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| collector.collect(result))) {
            let panicked = CollectorPanicked {
                task: Some(result.task),
                message: panic_message(&*p),
            };
            log::error!(
                "{panicked}; it is given no more results, and the batch goes on: every result is still written to the output and acknowledged"
            );
            self.panicked = Some(panicked);
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// What a panic said.
fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

/// A status by the name the output gives it.
pub(crate) fn status_named(name: &str) -> Status {
    (0..=u8::MAX)
        .map_while(Status::from_u8)
        .find(|s| s.as_str() == name)
        .unwrap_or(Status::Failed)
}

/// Hands `line` to the tap, as a [`TaskResult`].
pub(crate) fn tell(tap: &mut dyn Tap, line: &Line<'_>, batch: u64) {
    let worker: std::borrow::Cow<'_, str> =
        serde_json::from_str(line.worker_json).unwrap_or(std::borrow::Cow::Borrowed(""));
    tap.result(&TaskResult {
        task: line.task,
        batch,
        attempt: line.attempt,
        worker: &worker,
        thread: line.thread,
        status: status_named(line.status),
        exit_code: line.exit_code,
        duration: Duration::from_micros(line.duration_us),
        output: line.output,
        error: line.error,
    });
}

/// A result held back for `--ordered`, owned.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    task: u64,
    batch: u64,
    attempt: u32,
    worker: String,
    thread: u16,
    status: Status,
    exit_code: Option<i32>,
    duration: Duration,
    output: Vec<u8>,
    error: Vec<u8>,
}

impl Held {
    /// Copies `line` to hand it over later.
    pub(crate) fn of(line: &Line<'_>, batch: u64) -> Held {
        Held {
            task: line.task,
            batch,
            attempt: line.attempt,
            worker: serde_json::from_str(line.worker_json).unwrap_or_default(),
            thread: line.thread,
            status: status_named(line.status),
            exit_code: line.exit_code,
            duration: Duration::from_micros(line.duration_us),
            output: line.output.to_vec(),
            error: line.error.to_vec(),
        }
    }

    /// Hands it to the tap.
    pub(crate) fn tell(&self, tap: &mut dyn Tap) {
        tap.result(&TaskResult {
            task: self.task,
            batch: self.batch,
            attempt: self.attempt,
            worker: &self.worker,
            thread: self.thread,
            status: self.status,
            exit_code: self.exit_code,
            duration: self.duration,
            output: &self.output,
            error: &self.error,
        });
    }
}

/// A line of the output read back whole, for a collector (`--resume`).
#[derive(Deserialize)]
struct Replayed {
    task: u64,
    batch: String,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    thread: u16,
    status: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    duration_ms: f64,
    #[serde(default)]
    output: String,
    #[serde(default)]
    error: String,
}

/// `--resume`: hands the tap every result already in `path` (which
/// [`crate::output::read_back`] has checked: one batch's, whole lines), so
/// that a collector sees the whole batch across a sink restart. Returns
/// how many.
pub(crate) fn replay(tap: &mut dyn Tap, path: &Path) -> Result<u64, Error> {
    let text = std::fs::read(path).map_err(|source| Error::OpenOutput {
        path: path.to_owned(),
        source,
    })?;
    let mut told = 0;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let r: Replayed = serde_json::from_slice(line).map_err(|e| Error::Resume {
            path: path.to_owned(),
            line: i + 1,
            reason: format!("not a result: {e}"),
        })?;
        tap.result(&TaskResult {
            task: r.task,
            batch: u64::from_str_radix(&r.batch, 16).unwrap_or(0),
            attempt: r.attempt,
            worker: &r.worker,
            thread: r.thread,
            status: status_named(&r.status),
            exit_code: r.exit_code,
            duration: Duration::from_micros((r.duration_ms * 1000.0).round().max(0.0) as u64),
            output: r.output.as_bytes(),
            error: r.error.as_bytes(),
        });
        told += 1;
    }
    Ok(told)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_found_by_its_name() {
        for s in [
            Status::Ok,
            Status::Failed,
            Status::TimedOut,
            Status::Panicked,
            Status::Rejected,
        ] {
            assert_eq!(status_named(s.as_str()), s);
        }
    }

    #[test]
    fn a_panicking_collector_is_stopped_and_said_so_and_finish_is_not_called() {
        struct Bomb(u64);
        impl Collector for Bomb {
            type Output = u64;
            fn collect(&mut self, r: &TaskResult<'_>) {
                assert!(r.task != 2, "task two is too much");
                self.0 += 1;
            }
            fn finish(self, _: &Report) -> u64 {
                self.0
            }
        }
        let mut tap = Tapped::new(Bomb(0));
        let name = crate::output::json_string("h:1");
        for task in 0..5 {
            let line = Line {
                task,
                batch: "01",
                worker_json: &name,
                status: "ok",
                ..Line::default()
            };
            tell(&mut tap, &line, 1);
        }
        let got = tap.finish(Report::default());
        let p = got.value.unwrap_err();
        assert_eq!(p.task, Some(2));
        assert!(p.message.contains("task two is too much"), "{p}");
    }

    #[test]
    fn a_closure_is_a_collector_and_sees_the_worker_by_name() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut tap = Tapped::new(move |r: &TaskResult<'_>| {
            s.lock()
                .unwrap()
                .push((r.task, r.worker.to_string(), r.status));
        });
        let name = crate::output::json_string("host \"q\":9");
        let line = Line {
            task: 4,
            batch: "01",
            worker_json: &name,
            status: "timed_out",
            ..Line::default()
        };
        tell(&mut tap, &line, 1);
        let Collected { value, .. } = tap.finish(Report::default());
        assert!(value.is_ok());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(4, "host \"q\":9".to_string(), Status::TimedOut)]
        );
    }
}
