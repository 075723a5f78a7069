//! Helpers for the roles' integration tests that run real processes and
//! sockets: bounded waits, signals, free ports, reading a child's log,
//! scraping `--metrics` and checking it with `promtool`.
//!
//! Behind the `testing` feature, which only the crates' dev-dependencies
//! turn on, so the roles' binaries do not carry it (nor its `nix`).
use std::ffi::OsStr;
use std::path::Path;
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

/// A plain socket of `kind` bound to a free loopback port (no linger, a
/// 10 s receive timeout: a lost message fails the test, never hangs it),
/// and its endpoint: a stand-in for a role's socket.
pub fn bound(ctx: &zmq::Context, kind: zmq::SocketType) -> (zmq::Socket, String) {
    let s = ctx.socket(kind).expect("a socket");
    s.set_linger(0).expect("linger");
    s.set_rcvtimeo(10_000).expect("receive timeout");
    s.bind("tcp://127.0.0.1:*").expect("bound");
    let at = s.get_last_endpoint().expect("endpoint").expect("utf-8");
    (s, at)
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

/// A loopback endpoint on a free port below the kernel's ephemeral range,
/// for a role that binds it again after a restart: a `*` port is taken from
/// that range, where any outgoing connection (another test's, a worker's)
/// may take it in the moment the killed role leaves it free.
pub fn stable_endpoint() -> String {
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    loop {
        let port = rand::random_range(20000..top.max(20001));
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return format!("tcp://127.0.0.1:{port}");
        }
    }
}

/// A sink binary running on loopback, and the endpoints it bound.
pub struct SinkProcess {
    /// The process (its stderr is read by `lines`).
    pub child: Child,
    /// Its log.
    pub lines: Lines,
    /// The result PULL's endpoint.
    pub results: String,
    /// The control PUB's endpoint.
    pub control: String,
    /// The feedback ROUTER's endpoint.
    pub feedback: String,
}

/// Starts the sink binary `bin` with `flags`, on the endpoints of `at` (a
/// sink that replaces one) or on ports below the ephemeral range (see
/// [`stable_endpoint`]: a replacement binds them again); waits until it
/// says where it listens.
pub fn sink_process(bin: &Path, flags: &[&OsStr], at: Option<&SinkProcess>) -> SinkProcess {
    use std::process::{Command, Stdio};
    let (r, c, f) = match at {
        Some(s) => (s.results.clone(), s.control.clone(), s.feedback.clone()),
        None => (stable_endpoint(), stable_endpoint(), stable_endpoint()),
    };
    let mut child = Command::new(bin)
        .args(["--result-endpoint", &r, "--control-endpoint", &c])
        .args(["--feedback-endpoint", &f])
        .args(flags)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the sink");
    let mut lines = Lines::of(&mut child);
    let line = lines
        .wait_for("sink listening", Duration::from_secs(10))
        .expect("the sink says where it listens");
    SinkProcess {
        results: endpoint_in(&line, "results").expect("its results endpoint"),
        control: endpoint_in(&line, "control").expect("its control endpoint"),
        feedback: endpoint_in(&line, "feedback").expect("its feedback endpoint"),
        child,
        lines,
    }
}

/// A TCP port on loopback held by a listener, and its `127.0.0.1:PORT`:
/// for tests of `--metrics` on a port in use.
pub fn taken_tcp_port() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let at = l.local_addr().expect("its address").to_string();
    (l, at)
}

/// Runs `role` (a binary's command line, given the `--metrics` address to
/// use) with a bad address (`bad`) and with a port in use: each must exit 2
/// within 10 s, naming `--metrics` and why. Returns what each said on
/// stderr, for more checks.
pub fn refuses_bad_metrics(bad: &str, role: impl Fn(&str) -> std::process::Command) -> Vec<String> {
    use std::process::Stdio;
    let (_taken, at) = taken_tcp_port();
    [(bad, "HOST:PORT"), (at.as_str(), "in use")]
        .into_iter()
        .map(|(addr, says)| {
            let mut child = role(addr)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting the binary");
            let status = wait_exit(&mut child, Duration::from_secs(10));
            let err = stderr_of(&mut child);
            assert_eq!(status.code(), Some(2), "--metrics {addr}: {err}");
            assert!(err.contains("--metrics") && err.contains(says), "{err}");
            err
        })
        .collect()
}

/// `GET url`, at most 5 s: the status and the body (any status, no panic
/// on 404).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

/// A role's `/metrics` at `addr` (`HOST:PORT`); panics unless it answers
/// 200 within 5 s.
pub fn scrape(addr: impl std::fmt::Display) -> String {
    match http_get(&format!("http://{addr}/metrics")) {
        Ok((200, body)) => body,
        other => panic!("scraping {addr}: {other:?}"),
    }
}

/// The value of the series `name{labels}` in a scrape (labels in any
/// order; all of them must be given), or `None` when it is not there.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, mut got) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.trim_end_matches('}')
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            got.sort();
            (n == name && got == want).then(|| value.parse().ok())?
        })
}

/// Runs `promtool check metrics` on `text`: `None` where promtool is not
/// installed (the caller says why it skips), else its verdict with what
/// it said.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot run promtool: {e}"))),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool's verdict");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics ({}): {said}\n{text}",
            out.status
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sample_is_found_by_name_and_labels_in_any_order() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"2\",b=\"2\"} 4\ny 5.5\n";
        let s = |n, l: &[(&str, &str)]| super::sample(text, n, l);
        assert_eq!(s("x_total", &[("b", "2"), ("a", "1")]), Some(3.0));
        assert_eq!(s("x_total", &[("a", "2"), ("b", "2")]), Some(4.0));
        assert_eq!(s("x_total", &[("a", "1")]), None, "every label");
        assert_eq!(s("y", &[]), Some(5.5));
        assert_eq!(s("x", &[]), None);
    }

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
