//! Hello World client (the guide's hwclient): connects a REQ socket to
//! tcp://localhost:5555, sends "Hello" ten times, waits for each "World".
//!
//! `cargo run -p devices --example hwclient [ENDPOINT] [REQUESTS]`

fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://localhost:5555".into());
    let requests: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let context = zmq::Context::new();
    // REQ: send a request, then receive exactly one reply.
    let requester = context.socket(zmq::REQ).expect("making the REQ socket");
    requester.set_linger(0).expect("setting linger");
    // Unlike the guide, give up after 10 s instead of waiting forever.
    requester.set_rcvtimeo(10_000).expect("setting a timeout");
    println!("Connecting to hello world server...");
    requester.connect(&endpoint).expect("connecting");
    for request_nbr in 0..requests {
        println!("Sending Hello {request_nbr}...");
        requester.send("Hello", 0).expect("sending");
        match requester.recv_string(0) {
            Ok(reply) => println!("Received {} {request_nbr}", reply.unwrap_or_default()),
            Err(e) => {
                eprintln!("hwclient: no reply from {endpoint}: {e}");
                std::process::exit(1);
            }
        }
    }
}
