//! The live line: on a terminal, one line on stderr that says where the
//! batch stands (tasks sent, acknowledged, in flight, re-sent; workers
//! ready), redrawn as the loop's tick comes round. Not on a pipe or a log
//! file: those get the log's progress line every five seconds instead. The
//! sink's progress bar is its counterpart at the other end.

use std::time::Duration;

/// What the line shows, read off the ledger and the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Whether the sink knows the batch yet.
    pub sink_heard: bool,
    /// Whether dealing has begun (`--workers` were ready).
    pub started: bool,
    /// Tasks sent, re-sends included.
    pub sent: u64,
    /// Tasks whose result the sink has acknowledged (or given up).
    pub acked: u64,
    /// Tasks out on workers, not yet acknowledged.
    pub in_flight: u64,
    /// Re-sends.
    pub resent: u64,
    /// Workers ready, and of how many the batch waits for.
    pub workers: usize,
    /// `--workers`.
    pub wanted: usize,
    /// Their threads (that asked for work, in credit dispatch).
    pub threads: u64,
}

impl Counts {
    /// The line's text after the bar.
    pub fn message(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        if !self.sink_heard {
            return format!("waiting for the sink ({secs:.0} s)");
        }
        let workers = format!(
            "{} worker(s), {} thread(s) ready",
            self.workers, self.threads
        );
        if !self.started {
            return format!(
                "waiting for workers: {workers}, of {} ({secs:.0} s)",
                self.wanted
            );
        }
        format!(
            "sent {} · in flight {} · re-sent {} · {workers} · {secs:.1} s",
            self.sent, self.in_flight, self.resent
        )
    }
}

/// The line itself: `None` inside when stderr is not a terminal.
pub(crate) struct LiveLine {
    bar: Option<indicatif::ProgressBar>,
}

impl LiveLine {
    /// A line for a batch of `tasks`, shown only on a terminal.
    pub fn new(tasks: u64) -> LiveLine {
        let template = "{bar:30} {pos}/{len} acknowledged · {msg}";
        LiveLine {
            bar: common::cli::progress_bar(tasks, template),
        }
    }

    /// Redraws it with `counts`.
    pub fn show(&self, counts: &Counts, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(counts.acked);
            bar.set_message(counts.message(elapsed));
        }
    }
}

impl Drop for LiveLine {
    /// The summary line and the report follow on stdout and stderr: the
    /// live line goes.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> Counts {
        Counts {
            sink_heard: true,
            started: true,
            sent: 60,
            acked: 40,
            in_flight: 20,
            resent: 3,
            workers: 4,
            wanted: 4,
            threads: 16,
        }
    }

    #[test]
    fn the_line_says_what_the_batch_waits_for_then_where_it_stands() {
        let t = Duration::from_millis(2500);
        let c = Counts {
            sink_heard: false,
            ..counts()
        };
        assert_eq!(c.message(t), "waiting for the sink (2 s)");
        let c = Counts {
            started: false,
            workers: 1,
            threads: 2,
            ..counts()
        };
        assert_eq!(
            c.message(t),
            "waiting for workers: 1 worker(s), 2 thread(s) ready, of 4 (2 s)"
        );
        assert_eq!(
            counts().message(t),
            "sent 60 · in flight 20 · re-sent 3 · 4 worker(s), 16 thread(s) ready · 2.5 s"
        );
    }
}
