//! Weather update client (the guide's wuclient): connects a SUB socket to
//! tcp://localhost:5556, subscribes to one zip code, and averages the
//! temperature over 100 updates.
//!
//! `cargo run -p devices --example wuclient [ZIPCODE] [ENDPOINT] [UPDATES]`

fn main() {
    let mut args = std::env::args().skip(1);
    let zipcode = args.next().unwrap_or_else(|| "10001".into());
    let endpoint = args.next().unwrap_or_else(|| "tcp://localhost:5556".into());
    let updates: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);

    let context = zmq::Context::new();
    let subscriber = context.socket(zmq::SUB).expect("making the SUB socket");
    subscriber.set_linger(0).expect("setting linger");
    println!("Collecting updates from weather server...");
    subscriber.connect(&endpoint).expect("connecting");
    // Subscribe to the zip code: a prefix match on the message, so the
    // trailing space keeps "10001" from matching "100012".
    let filter = format!("{zipcode} ");
    subscriber
        .set_subscribe(filter.as_bytes())
        .expect("subscribing");

    let mut total_temp = 0;
    for _ in 0..updates {
        let update = subscriber
            .recv_string(0)
            .expect("receiving")
            .unwrap_or_default();
        let temperature: i64 = update
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        total_temp += temperature;
    }
    println!(
        "Average temperature for zipcode '{zipcode}' was {}F",
        total_temp / updates.max(1)
    );
}
