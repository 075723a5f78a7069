//! Reading from multiple sockets with a poller (the guide's mspoller): a
//! worker that takes tasks from the ventilator (PULL, tcp://localhost:5557)
//! and weather updates from the weather server (SUB, tcp://localhost:5556,
//! zip code 10001), whichever comes first.
//!
//! `cargo run -p devices --example mspoller [TASKS_ENDPOINT] [WEATHER_ENDPOINT] [MESSAGES]`
//! (MESSAGES: stop after this many; the guide runs forever).

fn main() {
    let mut args = std::env::args().skip(1);
    let tasks_at = args.next().unwrap_or_else(|| "tcp://localhost:5557".into());
    let weather_at = args.next().unwrap_or_else(|| "tcp://localhost:5556".into());
    let limit: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(u64::MAX);

    let context = zmq::Context::new();
    // Connect to the task ventilator.
    let receiver = context.socket(zmq::PULL).expect("making the PULL socket");
    receiver.set_linger(0).expect("setting linger");
    receiver
        .connect(&tasks_at)
        .expect("connecting to the ventilator");
    // Connect to the weather server.
    let subscriber = context.socket(zmq::SUB).expect("making the SUB socket");
    subscriber.set_linger(0).expect("setting linger");
    subscriber
        .connect(&weather_at)
        .expect("connecting to the weather server");
    subscriber.set_subscribe(b"10001 ").expect("subscribing");

    // Process messages from both sockets.
    let mut handled = 0;
    while handled < limit {
        let mut items = [
            receiver.as_poll_item(zmq::POLLIN),
            subscriber.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, -1).expect("polling");
        if items[0].is_readable() {
            let task = receiver
                .recv_string(0)
                .expect("receiving a task")
                .unwrap_or_default();
            println!("task: {task}");
            handled += 1;
        }
        if items[1].is_readable() {
            let update = subscriber
                .recv_string(0)
                .expect("receiving an update")
                .unwrap_or_default();
            println!("weather: {update}");
            handled += 1;
        }
    }
}
