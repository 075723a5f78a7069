//! Every one of the 144 ordered socket-type pairs, live over tcp loopback:
//! the table taught by `devices pairs` must be what libzmq really does.

use std::sync::mpsc;
use std::time::Duration;

use devices::pairs::{self, ALL};

#[test]
fn the_table_matches_libzmq_for_all_144_pairs() {
    let ctx = zmq::Context::new();
    let _ = ctx.set_io_threads(4);
    let (tx, rx) = mpsc::channel();
    // Refused pairs take a second each (waiting for a handshake that never
    // comes), so try them 36 at a time: each thread takes a third of a row.
    let threads: Vec<_> = ALL
        .iter()
        .flat_map(|&a| ALL.chunks(4).map(move |row| (a, row)))
        .map(|(a, row)| {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            std::thread::spawn(move || {
                for &b in row {
                    let trial = pairs::try_pair(&ctx, a, b, "tcp://127.0.0.1:*").expect("trial");
                    tx.send(trial).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut seen = 0;
    let mut wrong = Vec::new();
    while let Ok(t) = rx.recv_timeout(Duration::from_secs(60)) {
        seen += 1;
        let expected = pairs::compatible(t.bind, t.connect);
        if t.connected != expected || (expected && !t.exchanged) {
            wrong.push(format!(
                "{} binds, {} connects: table says {expected}, live connected={} exchanged={}\n{t}",
                t.bind, t.connect, t.connected, t.exchanged
            ));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seen, 144, "not every pair was tried");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn inproc_does_not_check_types() {
    let ctx = zmq::Context::new();
    let t = pairs::try_pair(
        &ctx,
        pairs::SocketKind::Push,
        pairs::SocketKind::Sub,
        "inproc://push-sub",
    )
    .unwrap();
    assert!(t.exchanged, "{t}");
    assert!(!pairs::compatible(t.bind, t.connect));
}

#[test]
fn the_table_names_every_refused_pair_with_a_reason() {
    let text = pairs::table();
    let refused = text.lines().filter(|l| l.contains(" × ")).count();
    // 78 unordered pairs, 13 of them valid.
    assert_eq!(refused, 65, "{text}");
    assert!(text.contains("PUSH – PULL      pipeline"));
    assert!(text.contains("inproc:// does not check types"));
}
