//! Request-reply client through a broker (the guide's rrclient): a REQ socket
//! connected to the broker's frontend, tcp://localhost:5559. Run it against
//! `devices queue`, which binds 5559 for clients and 5560 for services.
//!
//! `cargo run -p devices --example rrclient [ENDPOINT] [REQUESTS]`

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://localhost:5559".into());
    let requests: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let context = zmq::Context::new();
    let requester = context.socket(zmq::REQ).expect("making the REQ socket");
    requester.set_linger(0).expect("setting linger");
    requester.set_rcvtimeo(10_000).expect("setting a timeout");
    requester
        .connect(&endpoint)
        .expect("connecting to the broker");
    for request_nbr in 0..requests {
        requester.send("Hello", 0).expect("sending");
        match requester.recv_string(0) {
            Ok(reply) => println!(
                "Received reply {request_nbr} [{}]",
                reply.unwrap_or_default()
            ),
            Err(e) => {
                eprintln!(
                    "rrclient: no reply through {endpoint}: {e} (is `devices queue` running, with a worker?)"
                );
                std::process::exit(1);
            }
        }
    }
}
