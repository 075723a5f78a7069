//! A broken link between the ventilator and the sink: the feedback channel
//! goes through a TCP relay that this test cuts mid-batch. Acknowledgements
//! sent meanwhile are lost; the ventilator reconnects under the same routing
//! id, notices it is behind the sink's count, asks for everything it holds,
//! and the batch completes with nothing given up.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::work::Work;
use support::*;

/// Relays TCP connections from a free loopback port to `upstream`; `cut`
/// breaks every connection open at the time.
struct Relay {
    at: String,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn new(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = format!("tcp://{}", listener.local_addr().unwrap());
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let open2 = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
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
        Relay { at, open }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Both::Both);
        }
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
