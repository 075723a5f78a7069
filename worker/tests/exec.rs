//! Exec tasks through the worker binary, from the wire: a task's `stdin`
//! reaches its command; a task body of a tag the worker does not know (as
//! an exec task with `stdin` is to a worker from before it) is answered
//! `rejected`, never run; and END reaches a worker whose threads wait on
//! their sockets, at once.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::protocol::{self, Header, Kind, Message, ResultBody};
use common::testing::{bound, wait_exit};
use common::work::{Status, Work};

/// A stand-in ventilator (PUSH), sink (PULL) and control (PUB), and the
/// worker binary (push dispatch) connected to them, past its HELLO.
struct Stand {
    tasks: zmq::Socket,
    results: zmq::Socket,
    control: zmq::Socket,
    worker: std::process::Child,
    _ctx: zmq::Context,
}

impl Stand {
    fn new(flags: &[&str]) -> Stand {
        let ctx = zmq::Context::new();
        let (tasks, tasks_at) = bound(&ctx, zmq::PUSH);
        let (results, results_at) = bound(&ctx, zmq::PULL);
        let (control, control_at) = bound(&ctx, zmq::PUB);
        let worker = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args([
                "--task-endpoint",
                &tasks_at,
                "--result-endpoint",
                &results_at,
            ])
            .args(["--control-endpoint", &control_at, "--dispatch", "push"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let hello = results.recv_multipart(0).expect("no HELLO from the worker");
        assert_eq!(protocol::split(&hello).unwrap().0.kind, Kind::Hello);
        Stand {
            tasks,
            results,
            control,
            worker,
            _ctx: ctx,
        }
    }

    fn send(&self, task: u64, body: &[u8]) {
        let head = Header {
            kind: Kind::Task,
            attempt: 1,
            batch: 7,
            task,
        }
        .encode();
        self.tasks.send_multipart([&head[..], body], 0).unwrap();
    }

    /// The results of `n` tasks, by task id (10 s at most).
    fn results(&self, n: usize) -> HashMap<u64, ResultBody> {
        let mut got = HashMap::new();
        while got.len() < n {
            let frames = self
                .results
                .recv_multipart(0)
                .expect("a result did not come");
            if let Ok(Message::Results { results, .. }) = Message::decode(&frames) {
                for r in results {
                    got.insert(r.task, r.body.expect("a readable result"));
                }
            }
        }
        got
    }
}

#[test]
fn stdin_reaches_the_command_and_an_unknown_task_tag_is_rejected_not_run() {
    let stand = Stand::new(&["--threads", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let big = "0123456789abcdef".repeat(1 << 16);
    let tasks = [
        Work::Exec {
            command: "wc -c".into(),
            timeout_ms: None,
            stdin: Some(Box::new(big.clone())),
        },
        Work::Exec {
            command: "tr a-z A-Z".into(),
            timeout_ms: None,
            stdin: Some(Box::new("hello\n".into())),
        },
        Work::Exec {
            command: "cat; echo end".into(),
            timeout_ms: None,
            stdin: Some(Box::default()),
        },
    ];
    for (i, w) in tasks.iter().enumerate() {
        let mut body = Vec::new();
        protocol::encode_task(&mut body, 0, w);
        stand.send(i as u64, &body);
    }
    // A tag this worker does not know, followed by a command: what a worker
    // from before tag 6 sees of an exec task with stdin. It must not run.
    let mut body = 0u64.to_le_bytes().to_vec();
    body.push(250);
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    body.extend_from_slice(format!("touch {}", ran.display()).as_bytes());
    stand.send(3, &body);

    let got = stand.results(4);
    let text = |t: u64| {
        String::from_utf8_lossy(&got[&t].outcome.output)
            .trim()
            .to_string()
    };
    assert_eq!(got[&0].outcome.status, Status::Ok);
    assert_eq!(text(0), (big.len()).to_string());
    assert_eq!(text(1), "HELLO");
    assert_eq!(text(2), "end");
    assert_eq!(got[&3].outcome.status, Status::Rejected);
    assert!(
        String::from_utf8_lossy(&got[&3].outcome.error).contains("task tag 250"),
        "{:?}",
        got[&3].outcome
    );
    assert!(!ran.exists(), "a task of an unknown tag ran");
    end(stand);
}

/// END on the control PUB; the worker exits 0 within 5 s.
fn end(mut stand: Stand) -> Duration {
    let end = Header::bare(Kind::End, 7).encode();
    let t = Instant::now();
    // A PUB drops what its subscriber has not yet subscribed for: say it
    // until the worker goes.
    while stand.worker.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "END was not obeyed");
        stand.control.send(&end[..], 0).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t.elapsed();
    assert!(wait_exit(&mut stand.worker, Duration::from_secs(1)).success());
    took
}
