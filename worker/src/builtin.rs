//! The task kinds every worker knows: `noop`, `sleep`, `primes` and `exec`.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
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
            } => {
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.exec_timeout);
                exec_as(
                    command,
                    &task_env(task),
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

/// Reads a pipe to its end, keeping the first `max` bytes.
fn read_bounded(mut pipe: impl Read, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, truncated)
}

/// How long a command killed by SIGTERM, SIGINT or SIGHUP waits for the
/// worker's own stop before its result is reported.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Signal numbers, as `ExitStatus::signal` gives them.
mod libc_signal {
    use nix::sys::signal::Signal;
    pub const SIGTERM: i32 = Signal::SIGTERM as i32;
    pub const SIGINT: i32 = Signal::SIGINT as i32;
    pub const SIGHUP: i32 = Signal::SIGHUP as i32;
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
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(Status::Failed, format!("cannot start sh: {e}")),
    };
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (out_tx, out_rx) = mpsc::channel();
    for (index, pipe) in [
        (
            0usize,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = out_tx.clone();
        if let Some(pipe) = pipe {
            std::thread::spawn(move || {
                let _ = tx.send((index, read_bounded(pipe, max_output)));
            });
        }
    }
    // The waiter reaps the child, so no zombie is left whatever happens here.
    let (wait_tx, wait_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = wait_tx.send(child.wait());
    });
    let started = Instant::now();
    let mut killed: Option<&str> = None;
    let status = loop {
        match wait_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(status) => {
                // The shell is done: whatever it left running in its process
                // group goes too, so no task leaves processes behind (and the
                // output pipes close, so its output is complete).
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                break status;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(std::io::Error::other("lost the waiter thread"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if killed.is_none() && (started.elapsed() >= timeout || stop.is_triggered()) {
                    killed = Some(if stop.is_triggered() {
                        "the worker is stopping"
                    } else {
                        "timed out"
                    });
                    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    };
    drop(out_tx);
    let mut streams = [(Vec::new(), false), (Vec::new(), false)];
    // A grandchild that left the process group may hold the pipes open: wait
    // for the readers only a little.
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Ok((i, data)) =
        out_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        streams[i] = data;
    }
    let [(output, out_cut), (mut error, err_cut)] = streams;
    for (cut, name) in [(out_cut, "stdout"), (err_cut, "stderr")] {
        if cut {
            error.extend_from_slice(
                format!("\n[zpipe: {name} truncated to {max_output} bytes]").as_bytes(),
            );
        }
    }
    let (status, exit_code) = match (status, killed) {
        (_, Some(why)) => {
            error.extend_from_slice(
                format!(
                    "\n[zpipe: killed after {:.3}s: {why}]",
                    started.elapsed().as_secs_f64()
                )
                .as_bytes(),
            );
            (Status::TimedOut, None)
        }
        (Ok(s), None) => match s.code() {
            Some(0) => (Status::Ok, Some(0)),
            Some(code) => (Status::Failed, Some(code)),
            None => {
                let signal = s.signal().unwrap_or(0);
                error.extend_from_slice(format!("\n[zpipe: killed by signal {signal}]").as_bytes());
                // A scheduler that stops the worker (Slurm's scancel, a
                // systemd stop of the whole unit) signals every process of
                // the job, children first: the command may die of it just
                // before the worker hears of its own stop. Give that stop a
                // moment to arrive, so the task is sent again rather than
                // reported failed (see the executor).
                if [
                    libc_signal::SIGTERM,
                    libc_signal::SIGINT,
                    libc_signal::SIGHUP,
                ]
                .contains(&signal)
                {
                    let until = Instant::now() + STOP_GRACE;
                    while !stop.is_triggered() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                (Status::Failed, None)
            }
        },
        (Err(e), None) => {
            error.extend_from_slice(
                format!("\n[zpipe: waiting for the command failed: {e}]").as_bytes(),
            );
            (Status::Failed, None)
        }
    };
    Outcome {
        status,
        exit_code,
        output,
        error,
    }
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
        });
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.output, b"hello\n");
        assert!(o.error.starts_with(b"oops\n"));
        let o = run(Work::Exec {
            command: "seq 1 1000".into(),
            timeout_ms: None,
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

    #[test]
    fn a_long_prime_check_stops_when_told() {
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
        // The first candidate above 10^18 alone takes seconds of trial division.
        let o = Builtin::default().run(
            &info,
            &Work::Primes {
                from: 1_000_000_000_000_000_003,
                to: 1_000_000_000_000_000_010,
            },
        );
        assert_eq!(o.status, Status::Failed);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
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
        });
        assert_eq!(o.status, Status::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(1300));
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }
}
