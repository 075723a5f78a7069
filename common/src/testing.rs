//! Helpers for the roles' integration tests that run real processes and
//! sockets: bounded waits, signals, free ports, reading a child's log.
//!
//! Behind the `testing` feature, which only the crates' dev-dependencies
//! turn on, so the roles' binaries do not carry it (nor its `nix`).
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` to exit, at most `timeout`; kills it and panics if it
/// does not.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to `child` and asserts that it exits within `limit`.
pub fn stop_within(
    child: &mut Child,
    signal: nix::sys::signal::Signal,
    limit: Duration,
) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, signal).expect("sending the signal");
    let status = wait_exit(child, limit + Duration::from_secs(5));
    assert!(
        sent.elapsed() < limit,
        "{signal} took {:?} to stop the process (limit {limit:?})",
        sent.elapsed()
    );
    status
}

/// Runs `body` on its own thread and fails the test if it takes longer
/// than `secs`: a lost message fails instead of hanging CI.
pub fn time_bomb<T: Send + 'static>(secs: u64, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("test did not finish within {secs} s"),
    }
}

/// A PULL socket bound to a free loopback port, and that port's endpoint:
/// for tests of "port in use".
pub fn taken_port(ctx: &zmq::Context) -> (zmq::Socket, String) {
    let taken = ctx.socket(zmq::PULL).expect("a socket");
    taken.set_linger(0).expect("linger");
    taken.bind("tcp://127.0.0.1:*").expect("a free port");
    let at = taken
        .get_last_endpoint()
        .expect("the endpoint")
        .expect("UTF-8");
    (taken, at)
}

/// Sink flags that bind its three sockets on free loopback ports.
pub const SINK_ON_FREE_PORTS: [&str; 6] = [
    "--result-endpoint",
    "tcp://127.0.0.1:*",
    "--control-endpoint",
    "tcp://127.0.0.1:*",
    "--feedback-endpoint",
    "tcp://127.0.0.1:*",
];

/// A child's stderr, read line by line on a thread as it is written.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Starts reading `child`'s stderr (which must be piped).
    pub fn of(child: &mut Child) -> Lines {
        use std::io::BufRead;
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits at most `timeout` for a line containing `text`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Everything read so far, and whatever comes within `timeout`.
    pub fn all(&mut self, timeout: Duration) -> String {
        while let Ok(line) = self.rx.recv_timeout(timeout) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// The first `tcp://…` endpoint in `line` after `after`.
pub fn endpoint_in(line: &str, after: &str) -> Option<String> {
    let rest = &line[line.find(after)? + after.len()..];
    let start = rest.find("tcp://")?;
    let end = rest[start..]
        .find(|c: char| c == '"' || c == ',' || c == ']' || c.is_whitespace())
        .map_or(rest.len(), |e| start + e);
    Some(rest[start..end].to_string())
}

/// Reads all of a finished child's stderr.
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// A socket of `kind` bound to a free loopback port with the security
/// `flags` (`--allow`, `--auth-file`, `--curve-secret`...), as a role with
/// those flags would bind it, and its endpoint. Give it a context of its
/// own, as another process would have (a ZAP handler serves one context).
pub fn secured_bound(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    flags: &[&str],
) -> (zmq::Socket, String) {
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        security: crate::security::SecurityArgs,
    }
    let flags = Flags::parse_from(std::iter::once(&"role").chain(flags));
    let tuning = crate::sockets::Tuning {
        security: crate::security::Security::from_args(&flags.security).expect("security flags"),
        ..Default::default()
    };
    let socket = crate::sockets::socket(ctx, kind, "stand-in", &tuning).expect("a socket");
    let at = crate::Endpoints::single("tcp://127.0.0.1:*")
        .attach_secured(
            &socket,
            crate::Action::Bind,
            "stand-in",
            tuning.security.as_deref(),
        )
        .expect("bound");
    (socket, at[0].clone())
}

/// Runs `bin --generate` for the man page and each shell's completions and
/// checks that every one names each of `flags`; the bash script must parse
/// (`bash -n`), the man page must open with its `.TH` line. `prefix` is
/// put before `--generate` (a subcommand, for its own page).
pub fn assert_generates(bin: &str, prefix: &[&str], page: &str, flags: &[&str]) {
    use std::process::{Command, Stdio};
    let run = |what: &str| {
        let out = Command::new(bin)
            .args(prefix)
            .args(["--generate", what])
            .stdin(Stdio::null())
            .output()
            .expect("running the binary");
        assert!(out.status.success(), "--generate {what}: {out:?}");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    let man = run("man");
    assert!(
        man.contains(&format!("\n.TH {page} 1 ")),
        "no .TH line for {page}: {man}"
    );
    for flag in flags {
        // roff escapes each '-' of a flag.
        let roff = flag.replace('-', "\\-");
        assert!(man.contains(&roff), "the man page lacks {flag}");
    }
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&format!("complete-{shell}"));
        for flag in flags {
            // fish writes `-l task-endpoint`.
            let name = flag.trim_start_matches('-');
            assert!(script.contains(name), "{shell} completions lack {flag}");
        }
        if shell == "bash" {
            let mut check = Command::new("bash")
                .arg("-n")
                .stdin(Stdio::piped())
                .spawn()
                .expect("running bash -n");
            std::io::Write::write_all(&mut check.stdin.take().unwrap(), script.as_bytes())
                .expect("feeding bash -n");
            assert!(
                check.wait().unwrap().success(),
                "bash cannot parse: {script}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_is_found_after_its_label() {
        let line = "INFO sink: bound results tcp://127.0.0.1:4001, control tcp://127.0.0.1:4002 feedback [\"tcp://127.0.0.1:4003\"]";
        let at = |label| super::endpoint_in(line, label);
        assert_eq!(at("results").as_deref(), Some("tcp://127.0.0.1:4001"));
        assert_eq!(at("control").as_deref(), Some("tcp://127.0.0.1:4002"));
        assert_eq!(at("feedback").as_deref(), Some("tcp://127.0.0.1:4003"));
        assert_eq!(at("tasks"), None);
        assert_eq!(
            super::endpoint_in("x tcp://h:1", "x").as_deref(),
            Some("tcp://h:1")
        );
    }
}
