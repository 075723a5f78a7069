//! Weather update server (the guide's wuserver): binds a PUB socket to
//! tcp://*:5556 and publishes random weather updates, "zipcode temperature
//! relhumidity", forever.
//!
//! `cargo run -p devices --example wuserver [ENDPOINT]`

fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://*:5556".into());
    let context = zmq::Context::new();
    // PUB: every update goes to every subscriber whose filter matches; a
    // subscriber that is not there simply misses it.
    let publisher = context.socket(zmq::PUB).expect("making the PUB socket");
    publisher.set_linger(0).expect("setting linger");
    if let Err(e) = publisher.bind(&endpoint) {
        eprintln!("wuserver: cannot bind {endpoint}: {e}");
        std::process::exit(2);
    }
    eprintln!(
        "wuserver: publishing on {}",
        publisher.get_last_endpoint().unwrap().unwrap()
    );
    loop {
        // Get values that will fool the boss.
        let zipcode = rand::random_range(0..100_000);
        let temperature = rand::random_range(-80..135);
        let relhumidity = rand::random_range(10..60);
        // Send the message to all subscribers.
        publisher
            .send(
                format!("{zipcode:05} {temperature} {relhumidity}").as_str(),
                0,
            )
            .expect("publishing");
    }
}
