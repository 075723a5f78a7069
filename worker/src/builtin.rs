//! The task kinds every worker knows: `noop`, `sleep`, `primes` and `exec`.

use std::time::{Duration, Instant};

use common::Shutdown;
use common::work::{Outcome, Status, Work};

use crate::{Handler, TaskInfo};

/// The built-in task kinds, with the limits for `exec`.
#[derive(Debug, Clone)]
pub struct Builtin {
    /// Kill an `exec` command that runs longer than this (unless its task says
    /// otherwise).
    pub exec_timeout: Duration,
    /// Keep at most this many bytes of each of stdout and stderr.
    pub max_output: usize,
}

impl Default for Builtin {
    fn default() -> Self {
        Builtin {
            exec_timeout: Duration::from_secs(600),
            max_output: 64 * 1024,
        }
    }
}

impl Handler for Builtin {
    fn run(&self, task: &TaskInfo<'_>, work: &Work) -> Outcome {
        match work {
            Work::Noop => Outcome::ok(Vec::new()),
            Work::Sleep { ms } => sleep(Duration::from_millis(*ms), task.stop),
            Work::Primes { from, to } => primes(*from, *to, task.stop),
            Work::Exec {
                command,
                timeout_ms,
                stdin,
            } => {
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.exec_timeout);
                exec_with_input(
                    command,
                    &task_env(task),
                    stdin.as_deref().map(|s| s.as_bytes()),
                    timeout,
                    self.max_output,
                    task.stop,
                )
            }
            Work::Data { .. } => Outcome::failed(
                Status::Failed,
                "this worker has no handler for data tasks: run a worker built with your own handler (see the worker crate's docs)",
            ),
        }
    }
}

/// Sleeps, waking early only when the worker is told to stop. Short sleeps
/// (the guide's 1–100 ms) are one call, so they overshoot no more than a plain
/// sleep does.
fn sleep(total: Duration, stop: &Shutdown) -> Outcome {
    let slice = Duration::from_millis(100);
    let end = Instant::now() + total;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::ok(Vec::new());
        }
        if stop.is_triggered() {
            return Outcome::failed(Status::Failed, "interrupted: the worker is stopping");
        }
        std::thread::sleep(if left > slice + slice { slice } else { left });
    }
}

/// Counts primes in `from..to` by trial division.
fn primes(from: u64, to: u64, stop: &Shutdown) -> Outcome {
    let mut count = 0u64;
    for n in from..to {
        match is_prime(n, stop) {
            Some(true) => count += 1,
            Some(false) => {}
            None => return Outcome::failed(Status::Failed, "interrupted: the worker is stopping"),
        }
    }
    Outcome::ok(count.to_string())
}

/// Trial division; `None` when told to stop (a single large candidate can
/// take seconds).
fn is_prime(n: u64, stop: &Shutdown) -> Option<bool> {
    if n < 2 {
        return Some(false);
    }
    if n < 4 {
        return Some(true);
    }
    if n % 2 == 0 || n % 3 == 0 {
        return Some(false);
    }
    let mut d = 5u64;
    let mut steps = 0u32;
    while d.saturating_mul(d) <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return Some(false);
        }
        d += 6;
        steps = steps.wrapping_add(1);
        if steps % (1 << 16) == 0 && stop.is_triggered() {
            return None;
        }
    }
    Some(true)
}

/// What an exec task finds in its environment about itself:
/// `ZPIPE_TASK_ID` (its index in the batch, from 0, as the output's
/// `task`), `ZPIPE_ATTEMPT` (1, more when sent again), `ZPIPE_BATCH` (the
/// batch id in hex) and `ZPIPE_WORKER` (`host:pid`, as the report names
/// the worker).
pub fn task_env(task: &TaskInfo<'_>) -> [(&'static str, String); 4] {
    static WORKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| format!("{}:{}", common::hostname(), std::process::id()));
    [
        ("ZPIPE_TASK_ID", task.task.to_string()),
        ("ZPIPE_ATTEMPT", task.attempt.to_string()),
        ("ZPIPE_BATCH", format!("{:016x}", task.batch)),
        ("ZPIPE_WORKER", worker.clone()),
    ]
}

/// Runs `sh -c command` in its own process group, so a timeout or a stop kills
/// the command and everything it started.
pub fn exec(command: &str, timeout: Duration, max_output: usize, stop: &Shutdown) -> Outcome {
    exec_as(command, &[], timeout, max_output, stop)
}

/// [`exec`], with `env` added to the command's environment.
pub fn exec_as(
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
    max_output: usize,
    stop: &Shutdown,
) -> Outcome {
    exec_with_input(command, env, None, timeout, max_output, stop)
}

/// [`exec_as`], with `stdin` as the command's standard input (`/dev/null`
/// when `None`). The input is written while the output is read, so neither
/// waits for the other however large they are; a command that exits
/// without reading its input is no error.
pub fn exec_with_input(
    command: &str,
    env: &[(&str, String)],
    stdin: Option<&[u8]>,
    timeout: Duration,
    max_output: usize,
    stop: &Shutdown,
) -> Outcome {
    crate::exec::run(
        &crate::exec::Spec {
            command,
            env,
            stdin,
            timeout,
            max_output,
        },
        stop,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(work: Work) -> Outcome {
        let stop = Shutdown::new();
        let info = TaskInfo {
            batch: 1,
            task: 1,
            attempt: 1,
            stop: &stop,
        };
        Builtin {
            exec_timeout: Duration::from_secs(5),
            max_output: 16,
        }
        .run(&info, &work)
    }

    #[test]
    fn sleep_sleeps() {
        let t = Instant::now();
        assert_eq!(run(Work::Sleep { ms: 30 }).status, Status::Ok);
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn primes_counts() {
        assert_eq!(run(Work::Primes { from: 0, to: 100 }).output, b"25");
        assert_eq!(
            run(Work::Primes {
                from: 100,
                to: 1000
            })
            .output,
            b"143"
        );
    }

    #[test]
    fn an_exec_task_knows_its_id_attempt_batch_and_worker() {
        let stop = Shutdown::new();
        let task = TaskInfo {
            batch: 0xab,
            task: 41,
            attempt: 2,
            stop: &stop,
        };
        let work = Work::Exec {
            command: "echo $ZPIPE_TASK_ID $ZPIPE_ATTEMPT $ZPIPE_BATCH $ZPIPE_WORKER".into(),
            timeout_ms: None,
            stdin: None,
        };
        let o = Builtin::default().run(&task, &work);
        let out = String::from_utf8(o.output).unwrap();
        let worker = format!("{}:{}", common::hostname(), std::process::id());
        assert_eq!(out.trim(), format!("41 2 00000000000000ab {worker}"));
    }

    #[test]
    fn exec_captures_exit_code_and_bounded_output() {
        let o = run(Work::Exec {
            command: "echo hello; echo oops >&2; exit 3".into(),
            timeout_ms: None,
            stdin: None,
        });
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.output, b"hello\n");
        assert!(o.error.starts_with(b"oops\n"));
        let o = run(Work::Exec {
            command: "seq 1 1000".into(),
            timeout_ms: None,
            stdin: None,
        });
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.output.len(), 16);
        assert!(String::from_utf8_lossy(&o.error).contains("stdout truncated"));
    }

    #[test]
    fn exec_keeps_output_and_kills_what_the_command_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let t = Instant::now();
        let o = run(Work::Exec {
            command: format!("echo before; sleep 30 & echo $! > {}", pidfile.display()),
            timeout_ms: None,
            stdin: None,
        });
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.output, b"before\n");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        std::thread::sleep(Duration::from_millis(100));
        // Gone, or dead and waiting for init to reap it (it was the shell's
        // child, not ours).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("gone")
            .to_string();
        assert!(
            state == "gone" || state == "Z",
            "the background sleep outlived its task (state {state})"
        );
    }

    /// Runs `work` with the worker told to stop 100 ms in; returns what
    /// came of it and how long it took.
    fn run_stopped_midway(work: Work) -> (Outcome, Duration) {
        let stop = Shutdown::new();
        let info = TaskInfo {
            batch: 1,
            task: 1,
            attempt: 1,
            stop: &stop,
        };
        let s2 = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            s2.trigger();
        });
        let t = Instant::now();
        let o = Builtin::default().run(&info, &work);
        (o, t.elapsed())
    }

    #[test]
    fn a_long_prime_check_stops_when_told() {
        // The first candidate above 10^18 alone takes seconds of trial division.
        let (o, took) = run_stopped_midway(Work::Primes {
            from: 1_000_000_000_000_000_003,
            to: 1_000_000_000_000_000_010,
        });
        assert_eq!(o.status, Status::Failed);
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    fn exec_with(command: &str, stdin: Option<&str>, timeout_ms: Option<u64>) -> Outcome {
        run(Work::Exec {
            command: command.into(),
            timeout_ms,
            stdin: stdin.map(|s| Box::new(s.to_string())),
        })
    }

    #[test]
    fn exec_feeds_stdin_and_reads_output_at_once_so_neither_blocks() {
        // 4 MiB in, 4 MiB out through `cat`: written whole before the output
        // is read, both pipes would fill and the command would hang until
        // its timeout (5 s here).
        let big = "x".repeat(4 << 20);
        let t = Instant::now();
        let o = exec_with("cat", Some(&big), None);
        assert_eq!(
            o.status,
            Status::Ok,
            "{}",
            String::from_utf8_lossy(&o.error)
        );
        assert_eq!(o.output, b"xxxxxxxxxxxxxxxx", "kept up to max_output");
        assert!(String::from_utf8_lossy(&o.error).contains("stdout truncated"));
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        let o = exec_with("wc -c", Some(&big), None);
        assert_eq!(String::from_utf8_lossy(&o.output).trim(), "4194304");
        let o = exec_with("wc -c", Some("hello"), None);
        assert_eq!(String::from_utf8_lossy(&o.output).trim(), "5");
    }

    #[test]
    fn an_empty_stdin_is_an_end_of_file_and_none_is_dev_null() {
        let o = exec_with("wc -c", Some(""), None);
        assert_eq!(
            (o.status, String::from_utf8_lossy(&o.output).trim()),
            (Status::Ok, "0")
        );
        let o = exec_with("cat; echo end", Some(""), None);
        assert_eq!(o.output, b"end\n");
        let o = exec_with("readlink /proc/self/fd/0", None, None);
        assert_eq!(o.output, b"/dev/null\n");
    }

    #[test]
    fn a_command_that_does_not_read_its_stdin_is_no_error() {
        let big = "y".repeat(1 << 20);
        for command in [
            "echo done",
            "exec 0<&-; echo done",
            "head -c 3; echo; echo done",
        ] {
            let o = exec_with(command, Some(&big), None);
            assert_eq!(o.status, Status::Ok, "{command}: {o:?}");
            assert!(o.output.ends_with(b"done\n"), "{command}: {:?}", o.output);
        }
    }

    #[test]
    fn the_timeout_kills_a_command_that_neither_reads_its_stdin_nor_stops_writing() {
        let big = "z".repeat(1 << 20);
        for command in ["sleep 30", "yes"] {
            let t = Instant::now();
            let o = exec_with(command, Some(&big), Some(200));
            assert_eq!(o.status, Status::TimedOut, "{command}");
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{command}: {:?}",
                t.elapsed()
            );
        }
    }

    #[test]
    fn a_stop_kills_the_command_at_once() {
        let (o, took) = run_stopped_midway(Work::Exec {
            command: "sleep 30".into(),
            timeout_ms: None,
            stdin: None,
        });
        assert_eq!(o.status, Status::TimedOut);
        assert!(String::from_utf8_lossy(&o.error).contains("the worker is stopping"));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn exec_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survivor");
        // The grandchild would write the marker after 1 s if it survived.
        let cmd = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let t = Instant::now();
        let o = run(Work::Exec {
            command: cmd,
            timeout_ms: Some(200),
            stdin: None,
        });
        assert_eq!(o.status, Status::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(1300));
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }
}
