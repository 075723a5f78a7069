//! Request-reply service behind a broker (the guide's rrworker): a REP socket
//! connected to the broker's backend, tcp://localhost:5560. The broker
//! (`devices queue`) spreads client requests across every worker connected.
//!
//! `cargo run -p devices --example rrworker [ENDPOINT] [WORK_MS]`

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://localhost:5560".into());
    let work_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);

    let context = zmq::Context::new();
    let responder = context.socket(zmq::REP).expect("making the REP socket");
    responder.set_linger(0).expect("setting linger");
    responder
        .connect(&endpoint)
        .expect("connecting to the broker");
    loop {
        // Wait for the next request from a client.
        let request = responder
            .recv_string(0)
            .expect("receiving")
            .unwrap_or_default();
        println!("Received request: [{request}]");
        // Do some 'work'.
        std::thread::sleep(Duration::from_millis(work_ms));
        // Send the reply back to the client.
        responder.send("World", 0).expect("replying");
    }
}
