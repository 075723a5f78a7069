//! Hello World server (the guide's hwserver): binds a REP socket to
//! tcp://*:5555, expects "Hello" from clients, replies with "World".
//!
//! `cargo run -p devices --example hwserver [ENDPOINT] [WORK_MS]`
//! (defaults: tcp://*:5555, 1000 ms of "work" per request, as in the guide).
//! It talks to the guide's hwclient in any language, and to ours.

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://*:5555".into());
    let work_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);

    let context = zmq::Context::new();
    // REP: receive a request, then send exactly one reply.
    let responder = context.socket(zmq::REP).expect("making the REP socket");
    responder.set_linger(0).expect("setting linger");
    if let Err(e) = responder.bind(&endpoint) {
        eprintln!("hwserver: cannot bind {endpoint}: {e}");
        std::process::exit(2);
    }
    eprintln!(
        "hwserver: listening on {}",
        responder.get_last_endpoint().unwrap().unwrap()
    );
    loop {
        let request = responder
            .recv_string(0)
            .expect("receiving")
            .unwrap_or_default();
        println!("Received {request}");
        // Do some 'work'.
        std::thread::sleep(Duration::from_millis(work_ms));
        responder.send("World", 0).expect("replying");
    }
}
