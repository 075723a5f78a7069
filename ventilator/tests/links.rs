//! A broken link between the ventilator and the sink: the feedback channel
//! goes through a TCP relay that this test cuts mid-batch. Acknowledgements
//! sent meanwhile are lost; the ventilator reconnects under the same routing
//! id, notices it is behind the sink's count, asks for everything it holds,
//! and the batch completes with nothing given up. And a link that goes
//! down for good at the end of a batch: the ventilator does not wait
//! forever.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::work::Work;
use support::*;

/// Relays TCP connections from a free loopback port to `upstream`; `cut`
/// breaks every connection open at the time.
struct Relay {
    at: String,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Set: connections are refused (closed as soon as they come).
    down: Arc<AtomicBool>,
}

impl Relay {
    fn new(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = format!("tcp://{}", listener.local_addr().unwrap());
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let open2 = Arc::clone(&open);
        let down: Arc<AtomicBool> = Arc::default();
        let down2 = Arc::clone(&down);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if down2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut o = open2.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Both::Both);
                        let _ = from.shutdown(Both::Both);
                    });
                }
            }
        });
        Relay { at, open, down }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Both::Both);
        }
    }

    /// Cuts every connection and refuses new ones, for good.
    fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut();
    }
}

#[test]
fn a_feedback_link_cut_mid_batch_loses_no_acknowledgement_for_good() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let mut sink = start_sink(&ctx, &[]);
        let relay = Relay::new(&sink.feedback);
        sink.feedback = relay.at.clone();
        let vent = ventilator(&ctx, &sink, &["--workers", "2"]);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                spawn_worker(
                    &ctx,
                    worker_config(&vent.bound()[0], &sink, &["--threads", "2"]),
                )
            })
            .collect();
        let tasks: Vec<Work> = (0..2000).map(|_| Work::Sleep { ms: 8 }).collect();
        let v = std::thread::spawn(move || vent.run(&tasks, &common::Shutdown::new()));
        let count = || std::fs::read_to_string(&sink.output).map_or(0, |t| t.lines().count());
        let deadline = Instant::now() + Duration::from_secs(20);
        while count() < 200 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        relay.cut();
        std::thread::sleep(Duration::from_millis(300));
        relay.cut();
        let vr = v.join().unwrap().unwrap();
        assert!(vr.done.is_some(), "{vr:?}");
        assert_eq!(vr.given_up, 0, "{vr:?}");
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete);
        assert_eq!(report.ok, 2000);
        for (_, w) in workers {
            w.join().unwrap().unwrap();
        }
    });
}

#[test]
fn a_feedback_link_down_for_good_at_the_end_ends_the_ventilator_on_its_own() {
    time_bomb(60, || {
        let ctx = zmq::Context::new();
        let mut sink = start_sink(&ctx, &[]);
        let relay = Relay::new(&sink.feedback);
        sink.feedback = relay.at.clone();
        let vent = ventilator(&ctx, &sink, &["--sink-timeout", "2s"]);
        let (_stop, worker) = spawn_worker(&ctx, worker_config(&vent.bound()[0], &sink, &[]));
        let tasks: Vec<Work> = (0..20).map(|_| Work::Sleep { ms: 50 }).collect();
        let v = std::thread::spawn(move || vent.run(&tasks, &common::Shutdown::new()));
        let count = || std::fs::read_to_string(&sink.output).map_or(0, |t| t.lines().count());
        let deadline = Instant::now() + Duration::from_secs(20);
        while count() < 3 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        // From here on the sink hears the worker but never the ventilator:
        // its ACKs and its DONE are lost, and it finishes and goes.
        relay.take_down();
        let report = sink.handle.join().unwrap().unwrap();
        assert!(report.complete, "the sink has every result");
        assert_eq!(report.ok, 20);
        worker.join().unwrap().unwrap();
        let began = Instant::now();
        let vr = v.join().unwrap().unwrap();
        assert!(vr.done.is_none(), "no DONE came: {vr:?}");
        let silent = vr
            .sink_silent_ms
            .expect("the ventilator says the sink fell silent");
        assert!(silent >= 2000.0, "{silent}");
        assert!(
            vr.summary().contains("may not be complete"),
            "{}",
            vr.summary()
        );
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
    });
}
