//! Multithreaded relay (the guide's mtrelay): three threads signal each other
//! in turn over PAIR sockets on inproc://. PAIR is exclusive, one peer each,
//! which makes it the right socket to coordinate threads; inproc:// needs the
//! bind to happen before the connect.
//!
//! `cargo run -p devices --example mtrelay`

use std::thread;

fn step1(context: &zmq::Context) {
    // Connect to step2 and tell it we're ready.
    let xmitter = context.socket(zmq::PAIR).expect("making a PAIR socket");
    xmitter
        .connect("inproc://step2")
        .expect("connecting to step2");
    println!("Step 1 ready, signaling step 2");
    xmitter.send("READY", 0).expect("signaling step 2");
}

fn step2(context: &zmq::Context) {
    // Bind inproc socket before starting step1.
    let receiver = context.socket(zmq::PAIR).expect("making a PAIR socket");
    receiver.bind("inproc://step2").expect("binding step2");
    let ctx = context.clone();
    let t = thread::spawn(move || step1(&ctx));
    // Wait for signal and pass it on.
    receiver.recv_msg(0).expect("waiting for step 1");
    t.join().expect("step 1");
    // Connect to step3 and tell it we're ready.
    let xmitter = context.socket(zmq::PAIR).expect("making a PAIR socket");
    xmitter
        .connect("inproc://step3")
        .expect("connecting to step3");
    println!("Step 2 ready, signaling step 3");
    xmitter.send("READY", 0).expect("signaling step 3");
}

fn main() {
    let context = zmq::Context::new();
    // Bind inproc socket before starting step2.
    let receiver = context.socket(zmq::PAIR).expect("making a PAIR socket");
    receiver.bind("inproc://step3").expect("binding step3");
    let ctx = context.clone();
    let t = thread::spawn(move || step2(&ctx));
    // Wait for signal.
    receiver.recv_msg(0).expect("waiting for step 2");
    t.join().expect("step 2");
    println!("Test successful!");
}
