//! The benchmark's yardstick: plain libzmq sockets with nothing of zpipe's in
//! the way, in three processes, like the pipeline's ventilator → worker → sink.
//!
//! ```text
//! rawpipe drain  tcp://127.0.0.1:6001 200000           # PULL binds, prints msg/s
//! rawpipe relay  tcp://127.0.0.1:6000 tcp://127.0.0.1:6001 200000  # PULL → PUSH
//! rawpipe source tcp://127.0.0.1:6000 200000           # PUSH binds, 16-byte messages
//! rawpipe sleep  100 10                                # 100 sleeps of 10 ms back to back, prints ms
//! rawpipe sleep  10000 1 64                            # the same, shared by 64 threads at once
//! ```
//!
//! The source waits until the relay has connected before sending (no slow
//! joiner); the drain clocks from the first message to the last, as zpipe's
//! sink does from GO to the last result.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ctx = zmq::Context::new();
    match args.first().map(String::as_str) {
        Some("source") => source(&ctx, &args[1], args[2].parse().expect("count")),
        Some("relay") => relay(&ctx, &args[1], &args[2], args[3].parse().expect("count")),
        Some("drain") => drain(&ctx, &args[1], args[2].parse().expect("count")),
        Some("sleep") => {
            let (n, ms): (u32, u64) = (
                args[1].parse().expect("count"),
                args[2].parse().expect("ms"),
            );
            // With THREADS, each sleeps its share back to back (the first
            // ones one more when it does not divide): the floor of any
            // dispatcher with that many threads.
            let threads: u32 = args.get(3).map_or(1, |t| t.parse().expect("threads"));
            let t = Instant::now();
            let sleepers: Vec<_> = (0..threads)
                .map(|i| {
                    let share = n / threads + u32::from(i < n % threads);
                    std::thread::spawn(move || {
                        for _ in 0..share {
                            std::thread::sleep(Duration::from_millis(ms));
                        }
                    })
                })
                .collect();
            for s in sleepers {
                s.join().expect("a sleeper");
            }
            println!("{:.1}", t.elapsed().as_secs_f64() * 1000.0);
        }
        _ => {
            eprintln!("usage: rawpipe source|relay|drain|sleep ... (see the source)");
            std::process::exit(2);
        }
    }
}

fn source(ctx: &zmq::Context, at: &str, count: u64) {
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    let monitor = "inproc://rawpipe-monitor";
    push.monitor(monitor, zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32)
        .unwrap();
    let events = ctx.socket(zmq::PAIR).unwrap();
    events.connect(monitor).unwrap();
    push.bind(at).unwrap();
    events.recv_multipart(0).unwrap();
    let msg = [7u8; 16];
    for _ in 0..count {
        push.send(&msg[..], 0).unwrap();
    }
}

fn relay(ctx: &zmq::Context, from: &str, to: &str, count: u64) {
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.connect(from).unwrap();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(to).unwrap();
    pull.set_rcvtimeo(10_000).unwrap();
    let mut msg = zmq::Message::new();
    for _ in 0..count {
        if pull.recv(&mut msg, 0).is_err() {
            break;
        }
        push.send(&msg[..], 0).unwrap();
    }
}

fn drain(ctx: &zmq::Context, at: &str, count: u64) {
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind(at).unwrap();
    let mut msg = zmq::Message::new();
    pull.recv(&mut msg, 0).unwrap();
    let t = Instant::now();
    for _ in 1..count {
        pull.recv(&mut msg, 0).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{:.0}", (count - 1) as f64 / secs);
}
