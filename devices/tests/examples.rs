//! The guide's classic examples (devices/examples), run as the real programs
//! against each other and against our devices, on free loopback ports.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::testing::wait_exit;

/// An example program, built by `cargo test` beside the crate's binary.
fn example(name: &str) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_devices"));
    let mut c = Command::new(bin.parent().unwrap().join("examples").join(name));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Kills a server example when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server example bound to a free port; returns it and the
/// endpoint it reports on stderr.
fn server(name: &str, args: &[&str]) -> (Server, String) {
    let mut child = example(name).args(args).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.rsplit(' ').next().unwrap().trim().to_string();
    assert!(
        endpoint.starts_with("tcp://127.0.0.1:"),
        "{name} said {line:?}"
    );
    (Server(child), endpoint)
}

/// Runs a client example to the end (at most 30 s); returns its stdout.
fn run(name: &str, args: &[&str]) -> String {
    let mut child = example(name).args(args).spawn().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "{name} failed: {out}{err}");
    out
}

#[test]
fn hello_world_request_reply() {
    let (_server, at) = server("hwserver", &["tcp://127.0.0.1:*", "0"]);
    let out = run("hwclient", &[&at, "3"]);
    assert!(
        out.contains("Received World 0") && out.contains("Received World 2"),
        "{out}"
    );
}

#[test]
fn weather_publish_subscribe_with_a_zip_code_filter() {
    let (_server, at) = server("wuserver", &["tcp://127.0.0.1:*"]);
    let out = run("wuclient", &["10001", &at, "3"]);
    assert!(
        out.contains("Average temperature for zipcode '10001' was "),
        "{out}"
    );
}

#[test]
fn a_worker_polls_tasks_and_weather_at_once() {
    let ctx = zmq::Context::new();
    let tasks = ctx.socket(zmq::PUSH).unwrap();
    tasks.set_linger(0).unwrap();
    tasks.bind("tcp://127.0.0.1:*").unwrap();
    let weather = ctx.socket(zmq::PUB).unwrap();
    weather.set_linger(0).unwrap();
    weather.bind("tcp://127.0.0.1:*").unwrap();
    let mut child = example("mspoller")
        .args([
            &tasks.get_last_endpoint().unwrap().unwrap(),
            &weather.get_last_endpoint().unwrap().unwrap(),
            "4",
        ])
        .spawn()
        .unwrap();
    tasks.set_sndtimeo(10_000).unwrap();
    tasks.send("task-1", 0).unwrap();
    tasks.send("task-2", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "mspoller did not finish");
        weather.send("10002 99 9", 0).unwrap();
        weather.send("10001 70 30", 0).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(
        out.contains("task: task-1") && out.contains("task: task-2"),
        "{out}"
    );
    assert!(out.contains("weather: 10001 70 30"), "{out}");
    assert!(
        !out.contains("10002"),
        "the filter let another zip code through: {out}"
    );
}

#[test]
fn request_reply_through_devices_queue() {
    let ctx = zmq::Context::new();
    let args = devices::DeviceArgs::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").unwrap();
    let queue = devices::Device::bind(devices::Kind::Queue, &args, &ctx).unwrap();
    let bound = queue.bound().clone();
    let stop = common::Shutdown::new();
    let s = stop.clone();
    let broker = std::thread::spawn(move || queue.run(&s));
    let _workers: Vec<Server> = (0..2)
        .map(|_| {
            Server(
                example("rrworker")
                    .args([&bound.backend[0], "0"])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let out = run("rrclient", &[&bound.frontend[0], "5"]);
    assert!(out.contains("Received reply 4 [World]"), "{out}");
    stop.trigger();
    let stats = broker.join().unwrap().unwrap();
    assert_eq!(stats.frontend.msgs_in, 5);
}

#[test]
fn the_exclusive_pair_signals_between_threads() {
    let out = run("mtrelay", &[]);
    assert_eq!(
        out,
        "Step 1 ready, signaling step 2\nStep 2 ready, signaling step 3\nTest successful!\n"
    );
}
