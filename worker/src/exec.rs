//! Running one `exec` command, on the executor thread that took the task.
//!
//! The command is `/bin/sh -c COMMAND`, spawned by `posix_spawn` (std's
//! `Command` uses it when no `pre_exec` hook asks for a fork; its
//! `process_group(0)` is a spawn attribute, so the command still gets a
//! process group of its own). A command of plain words, in which the shell
//! would do nothing but split it at blanks and start the program
//! (`sleep 0.01`, `gzip -9 data/part-3`), is started directly instead:
//! the same program with the same arguments, without the shell's own start
//! before it, which is most of what a short command costs (see
//! [`plain_words`]). It gets what the shell would hand on: the exit code
//! 128 + N when a signal N kills it (as Debian's `/bin/sh`, dash, reports a
//! command it forked), `PWD` set to the working directory. What differs is that
//! it leads its process group itself (under the shell it is a member), so
//! a program that calls `setsid()` without forking first is refused it:
//! any shell syntax (a trailing `;`) starts it through the shell. Then one
//! `poll` waits on everything at once:
//!
//! - the command's stdout and stderr pipes, read as they fill and kept up
//!   to `--max-output` bytes each (the rest is read and dropped, so the
//!   command never blocks on a full pipe);
//! - its stdin pipe, when the task gives `stdin`: written as the pipe takes
//!   it (non-blocking), so a large input and a large output cannot deadlock
//!   each other; a command that exits without reading it is no error;
//! - a pidfd of the shell, readable the moment it exits: no waiter thread,
//!   no polling with sleeps (a kernel without pidfds, before Linux 5.3,
//!   gets `waitpid` in growing slices instead).
//!
//! No thread is started per task: on a small machine the three threads per
//! command this replaced cost more than the fork and exec themselves, as
//! the command and the threads fought for the same cores.
//!
//! When the shell exits, its process group is killed (whatever it left
//! running goes too, and the pipes close), then the shell is reaped: the
//! group is killed while the shell is still a zombie, so its id cannot name
//! anyone else's group yet. The pipes are read to their end, but at most
//! half a second more ([`DRAIN`]): a grandchild that left the group may hold
//! them open. On the timeout or the worker's stop the group is killed at
//! once; the poll wakes at least every [`SLICE`] to look at the stop flag.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Shutdown;
use common::work::{Outcome, Status};
use nix::sys::signal::{Signal, killpg};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags};

/// The longest one poll waits without looking at the stop flag.
const SLICE: Duration = Duration::from_millis(50);
/// How long the pipes are read after the shell exited and its group was
/// killed: a grandchild that left the group may hold them open.
const DRAIN: Duration = Duration::from_millis(500);
/// How long a command killed by SIGTERM, SIGINT or SIGHUP waits for the
/// worker's own stop before its result is reported.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Bytes read or written per call.
const CHUNK: usize = 16 * 1024;

/// What a command is given.
pub(crate) struct Spec<'a> {
    /// Given to `sh -c` as it is.
    pub command: &'a str,
    /// Added to the command's environment.
    pub env: &'a [(&'a str, String)],
    /// Its standard input; `/dev/null` when `None`.
    pub stdin: Option<&'a [u8]>,
    /// Its process group is killed after this long.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: usize,
}

/// One output stream: what is kept of it, and its pipe while it is open.
struct Capture {
    pipe: Option<File>,
    kept: Vec<u8>,
    cut: bool,
}

impl Capture {
    fn new(pipe: Option<impl Into<OwnedFd>>) -> Capture {
        Capture {
            pipe: pipe.map(|p| File::from(p.into())),
            kept: Vec::new(),
            cut: false,
        }
    }

    /// Reads once (the pipe is readable, so this does not block); closes
    /// the pipe at its end.
    fn read(&mut self, buf: &mut [u8], max: usize) {
        let Some(pipe) = &mut self.pipe else { return };
        match pipe.read(buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => {
                let room = max.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&buf[..n.min(room)]);
                self.cut |= n > room;
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(_) => self.pipe = None,
        }
    }
}

/// The command's stdin: what is left to write, and the pipe while open.
struct Feed<'a> {
    pipe: Option<File>,
    rest: &'a [u8],
}

impl Feed<'_> {
    /// Writes as much as the pipe takes now; closes it when all is written
    /// or the command will read no more (EPIPE: it closed its end).
    fn write(&mut self) {
        while let Some(pipe) = &mut self.pipe {
            if self.rest.is_empty() {
                self.pipe = None;
                return;
            }
            match pipe.write(&self.rest[..self.rest.len().min(CHUNK)]) {
                Ok(n) => self.rest = &self.rest[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.pipe = None,
            }
        }
    }
}

/// Which of the watched things a poll entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Out,
    Err,
    In,
    Exit,
}

/// Runs the command to its end, its timeout or the worker's stop.
pub(crate) fn run(spec: &Spec<'_>, stop: &Shutdown) -> Outcome {
    run_watching(spec, stop, true)
}

/// [`run`]; with `use_pidfd` false, as on a kernel without pidfds.
fn run_watching(spec: &Spec<'_>, stop: &Shutdown, use_pidfd: bool) -> Outcome {
    let mut first_error = None;
    let words = plain_words(spec.command).filter(|_| shell_env().path_set);
    let direct = words.and_then(|words| {
        let mut cmd = command(spec, words);
        as_the_shell_would(&mut cmd);
        cmd.spawn().map_err(|e| first_error = Some(e)).ok()
    });
    let (child, direct) = match direct {
        Some(c) => (c, true),
        // Anything the shell would read, or a program that cannot be
        // started directly (not found, not executable, a script without
        // `#!`): the shell says why, as it would have.
        None => match command(spec, vec!["/bin/sh", "-c", spec.command]).spawn() {
            Ok(c) => (c, false),
            Err(e) => {
                let before = first_error.map_or(String::new(), |f| format!("{f}; "));
                return Outcome::failed(
                    Status::Failed,
                    format!("cannot start the command: {before}nor /bin/sh: {e}"),
                );
            }
        },
    };
    watch(child, spec, stop, use_pidfd, direct)
}

/// What the shell would change in the environment it hands on, to be done
/// to a command started without it: `PWD` set to the working directory
/// when missing or wrong (a worker started by systemd has none). And
/// whether `PATH` is set at all: without it the shell and the C library
/// search different directories, so every command goes to the shell.
/// Reckoned once. (Variables whose names are no shell names, such as an
/// exported bash function, are handed on: bash as `/bin/sh` hands them on
/// too, and environment modules need them.)
struct ShellEnv {
    pwd: Option<std::path::PathBuf>,
    path_set: bool,
}

fn shell_env() -> &'static ShellEnv {
    static ENV: OnceLock<ShellEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let cwd = std::env::current_dir().ok();
        let pwd_right = std::env::var_os("PWD")
            .zip(cwd.as_ref())
            .is_some_and(|(pwd, cwd)| std::fs::canonicalize(pwd).ok().as_ref() == Some(cwd));
        ShellEnv {
            pwd: cwd.filter(|_| !pwd_right),
            path_set: std::env::var_os("PATH").is_some(),
        }
    })
}

/// [`ShellEnv`]'s changes, made to `cmd`.
fn as_the_shell_would(cmd: &mut Command) {
    if let Some(pwd) = &shell_env().pwd {
        cmd.env("PWD", pwd);
    }
}

/// Built-in commands and reserved words of the POSIX shell (dash's list):
/// a command that begins with one goes to the shell, since a program of
/// that name (if any) may behave differently, or not exist.
const SHELL_OWN: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "case", "cd", "chdir", "command", "continue", "do",
    "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg",
    "fi", "for", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read",
    "readonly", "return", "set", "shift", "test", "then", "times", "trap", "true", "type",
    "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// The words of a command in which the shell would find nothing to do but
/// split it at blanks and run the program the first word names: plain words
/// of letters, digits and `_ . / , : + @ % -` (and `=` after the first
/// word), the first neither a built-in nor a reserved word. Such a command
/// is started directly, the very program with the very arguments `sh -c`
/// would start, saving the shell's own start (the larger part of a short
/// command's cost). `None` for anything else: quotes, `$`, globs, `~`,
/// redirections, `;`, `|`, `&`, `#`, a newline, an assignment.
fn plain_words(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./,:+@%-=".contains(c);
    let words: Vec<&str> = command
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    let first = words.first()?;
    let all_plain = words.iter().all(|w| w.chars().all(plain));
    (all_plain && !first.contains('=') && !SHELL_OWN.contains(first)).then_some(words)
}

/// A command of its program and arguments, with the task's environment, its
/// pipes and a process group of its own.
fn command(spec: &Spec<'_>, argv: Vec<&str>) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Waits for a started command (see the module's doc).
/// `direct`: the command was started without the shell.
fn watch(
    mut child: Child,
    spec: &Spec<'_>,
    stop: &Shutdown,
    use_pidfd: bool,
    direct: bool,
) -> Outcome {
    let started = Instant::now();
    let pid = Pid::from_child(&child);
    let pgid = nix::unistd::Pid::from_raw(pid.as_raw_nonzero().get());
    let kill_group = || {
        let _ = killpg(pgid, Signal::SIGKILL);
    };
    let pidfd = use_pidfd
        .then(|| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok())
        .flatten();
    let mut out = Capture::new(child.stdout.take());
    let mut err = Capture::new(child.stderr.take());
    let mut feed = Feed {
        pipe: child.stdin.take().and_then(|p| {
            let file = File::from(OwnedFd::from(p));
            // Non-blocking, so a write never waits for the command to read:
            // its output must be read meanwhile.
            rustix::io::ioctl_fionbio(&file, true).ok().map(|()| file)
        }),
        rest: spec.stdin.unwrap_or_default(),
    };
    feed.write();
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut killed: Option<&str> = None;
    let mut drain_until: Option<Instant> = None;
    // Without a pidfd: how long to wait before looking at the child again.
    let mut backoff = Duration::from_micros(200);
    let mut buf = [0u8; CHUNK];
    loop {
        let now = Instant::now();
        if status.is_none()
            && killed.is_none()
            && (now.duration_since(started) >= spec.timeout || stop.is_triggered())
        {
            killed = Some(if stop.is_triggered() {
                "the worker is stopping"
            } else {
                "timed out"
            });
            kill_group();
        }
        if status.is_some()
            && ((out.pipe.is_none() && err.pipe.is_none())
                || drain_until.is_some_and(|until| now >= until))
        {
            break;
        }
        let mut wait = SLICE;
        if status.is_none() && killed.is_none() {
            wait = wait.min(spec.timeout.saturating_sub(now.duration_since(started)));
        }
        if let Some(until) = drain_until {
            wait = wait.min(until.saturating_duration_since(now));
        }
        if status.is_none() && pidfd.is_none() {
            wait = wait.min(backoff);
            backoff = (backoff * 2).min(SLICE);
        }

        // One poll over what is still open; what woke is noted, then
        // acted on once the poll's borrows are gone.
        let mut ready = [(Watch::Exit, PollFlags::empty()); 4];
        let mut count = 0;
        {
            let mut polled: Vec<PollFd<'_>> = Vec::with_capacity(4);
            let watched = [
                (
                    Watch::Out,
                    out.pipe.as_ref().map(File::as_fd),
                    PollFlags::IN,
                ),
                (
                    Watch::Err,
                    err.pipe.as_ref().map(File::as_fd),
                    PollFlags::IN,
                ),
                (
                    Watch::In,
                    feed.pipe.as_ref().map(File::as_fd),
                    PollFlags::OUT,
                ),
                (
                    Watch::Exit,
                    pidfd
                        .as_ref()
                        .filter(|_| status.is_none())
                        .map(|p| p.as_fd()),
                    PollFlags::IN,
                ),
            ];
            for (watch, fd, flags) in watched {
                if let Some(fd) = fd {
                    ready[count].0 = watch;
                    polled.push(PollFd::from_borrowed_fd(fd, flags));
                    count += 1;
                }
            }
            let timeout = Timespec::try_from(wait).unwrap_or_default();
            if let Err(e) = rustix::event::poll(&mut polled, Some(&timeout))
                && e != rustix::io::Errno::INTR
            {
                // Not with descriptors of our own; but never spin.
                log::warn!("exec: poll failed: {e}");
                std::thread::sleep(wait);
            }
            for (r, fd) in ready.iter_mut().zip(&polled) {
                r.1 = fd.revents();
            }
        }
        let mut exited = false;
        for &(watch, revents) in &ready[..count] {
            if revents.is_empty() {
                continue;
            }
            match watch {
                Watch::Out => out.read(&mut buf, spec.max_output),
                Watch::Err => err.read(&mut buf, spec.max_output),
                Watch::In => feed.write(),
                Watch::Exit => exited = true,
            }
        }
        if status.is_none() {
            if exited {
                // The shell is a zombie: its group is killed before it is
                // reaped (see the module's doc), then reaped at once.
                kill_group();
                status = Some(child.wait());
            } else if pidfd.is_none() {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        kill_group();
                        status = Some(Ok(s));
                    }
                    Ok(None) => {}
                    Err(e) => status = Some(Err(e)),
                }
            }
            if status.is_some() {
                // The command reads no more of its input.
                feed.pipe = None;
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
    }
    let status = status.unwrap_or_else(|| Err(std::io::Error::other("no exit status")));
    outcome(
        status,
        killed,
        started,
        (out, err),
        spec.max_output,
        stop,
        direct,
    )
}

/// The result of a command that ended.
fn outcome(
    status: std::io::Result<ExitStatus>,
    killed: Option<&str>,
    started: Instant,
    (out, err): (Capture, Capture),
    max_output: usize,
    stop: &Shutdown,
    direct: bool,
) -> Outcome {
    let output = out.kept;
    let mut error = err.kept;
    for (cut, name) in [(out.cut, "stdout"), (err.cut, "stderr")] {
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
                if [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
                    .iter()
                    .any(|&s| s as i32 == signal)
                {
                    let until = Instant::now() + STOP_GRACE;
                    while !stop.is_triggered() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                // The shell reports a program that a signal killed as the
                // exit code 128 + the signal's number: so does a program
                // started without it (the line above says which signal).
                (Status::Failed, direct.then_some(128 + signal))
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

    fn spec<'a>(command: &'a str, stdin: Option<&'a [u8]>, timeout_ms: u64) -> Spec<'a> {
        Spec {
            command,
            env: &[],
            stdin,
            timeout: Duration::from_millis(timeout_ms),
            max_output: 1 << 20,
        }
    }

    #[test]
    fn only_a_command_the_shell_would_merely_split_is_started_directly() {
        assert_eq!(plain_words("sleep 0.01"), Some(vec!["sleep", "0.01"]));
        assert_eq!(
            plain_words("  gzip\t-9 data/part-3.txt  "),
            Some(vec!["gzip", "-9", "data/part-3.txt"])
        );
        assert_eq!(
            plain_words("dd if=/dev/zero of=x bs=1k count=1"),
            Some(vec!["dd", "if=/dev/zero", "of=x", "bs=1k", "count=1"])
        );
        for shell in [
            "",
            "   ",
            "true",
            "echo hi",
            "cd /tmp",
            "exit 3",
            "if",
            "FOO=1 env",
            "ls *.txt",
            "ls ~",
            "echo $HOME",
            "cat 'a b'",
            "cat \"a\"",
            "cat a\\ b",
            "ls; ls",
            "ls | wc",
            "ls > x",
            "sleep 1 &",
            "ls # note",
            "ls\nls",
            "ls {a,b}",
            "ls (x)",
            "ls !x",
            "ls `x`",
        ] {
            assert_eq!(plain_words(shell), None, "{shell:?}");
        }
    }

    #[test]
    fn a_plain_command_runs_as_under_the_shell_and_what_cannot_start_goes_to_it() {
        let stop = Shutdown::new();
        let dir = tempfile::tempdir().unwrap();
        // The same exit status, and the same output, as `sh -c` gives.
        let o = run(&spec("ls /nonexistent-zpipe", None, 5000), &stop);
        let sh = run(&spec("ls /nonexistent-zpipe;", None, 5000), &stop);
        assert_eq!((o.status, o.exit_code), (sh.status, sh.exit_code));
        assert_eq!(o.error, sh.error);
        // Not found: the shell says so, with its exit code 127.
        let o = run(&spec("no-such-program-zpipe x", None, 5000), &stop);
        assert_eq!((o.status, o.exit_code), (Status::Failed, Some(127)));
        assert!(
            String::from_utf8_lossy(&o.error).contains("not found"),
            "{:?}",
            String::from_utf8_lossy(&o.error)
        );
        // A script without `#!` is run by the shell, as `sh -c` runs it.
        let script = dir.path().join("script");
        std::fs::write(&script, "echo from the script\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let o = run(&spec(script.to_str().unwrap(), None, 5000), &stop);
        assert_eq!(
            (o.status, &o.output[..]),
            (Status::Ok, &b"from the script\n"[..])
        );
        // Not executable: 126, as the shell gives.
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let o = run(&spec(script.to_str().unwrap(), None, 5000), &stop);
        assert_eq!((o.status, o.exit_code), (Status::Failed, Some(126)));
        // Killed by a signal: the shell's exit code, 128 + its number.
        std::fs::write(&script, "#!/bin/sh\nkill -KILL $$\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = script.to_str().unwrap();
        let o = run(&spec(path, None, 5000), &stop);
        let sh = run(&spec(&format!("{path};"), None, 5000), &stop);
        assert_eq!((o.status, o.exit_code), (Status::Failed, Some(137)));
        assert_eq!((sh.status, sh.exit_code), (Status::Failed, Some(137)));
        // The environment the shell would hand on: PWD is the working
        // directory, whatever the worker's own says.
        let o = run(&spec("printenv PWD", None, 5000), &stop);
        let sh = run(&spec("printenv PWD;", None, 5000), &stop);
        assert_eq!(o.output, sh.output);
        assert_eq!(
            String::from_utf8_lossy(&o.output).trim_end(),
            std::env::current_dir().unwrap().to_str().unwrap()
        );
        // The command's environment and process group are the same: the
        // group is killed on a timeout.
        let t = Instant::now();
        let o = run(&spec("sleep 30", None, 150), &stop);
        assert_eq!(o.status, Status::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let o = Spec {
            env: &[("ZPIPE_TEST", "x".into())],
            ..spec("env", None, 5000)
        };
        let o = run(&o, &stop);
        assert!(String::from_utf8_lossy(&o.output).contains("ZPIPE_TEST=x\n"));
    }

    #[test]
    fn without_a_pidfd_the_exit_is_still_seen_and_the_timeout_still_holds() {
        let stop = Shutdown::new();
        for use_pidfd in [true, false] {
            let o = run_watching(
                &spec("echo out; echo err >&2; exit 4", None, 5000),
                &stop,
                use_pidfd,
            );
            assert_eq!(
                (o.status, o.exit_code),
                (Status::Failed, Some(4)),
                "{use_pidfd}"
            );
            assert_eq!(
                (&o.output[..], &o.error[..]),
                (&b"out\n"[..], &b"err\n"[..])
            );
            // A command that closes its pipes and lives on is waited for.
            let t = Instant::now();
            let o = run_watching(
                &spec("exec >&- 2>&-; sleep 0.3", None, 5000),
                &stop,
                use_pidfd,
            );
            assert_eq!(o.status, Status::Ok, "{use_pidfd}");
            assert!(t.elapsed() >= Duration::from_millis(300), "{use_pidfd}");
            let o = run_watching(&spec("cat", Some(b"abc"), 5000), &stop, use_pidfd);
            assert_eq!(o.output, b"abc");
            let t = Instant::now();
            let o = run_watching(&spec("sleep 30", None, 150), &stop, use_pidfd);
            assert_eq!(o.status, Status::TimedOut, "{use_pidfd}");
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{use_pidfd}: {:?}",
                t.elapsed()
            );
        }
    }
}
