//! The decoders take whatever the network sends: for any bytes at all they
//! return a value or an error, never panic; and what the encoders write they
//! read back unchanged.

use common::protocol::{self, Header, Kind, ResultBody};
use common::work::{Outcome, Status, Work};
use proptest::prelude::*;

fn work() -> impl Strategy<Value = Work> {
    prop_oneof![
        Just(Work::Noop),
        any::<u64>().prop_map(|ms| Work::Sleep { ms }),
        (any::<u64>(), any::<u64>()).prop_map(|(from, to)| Work::Primes { from, to }),
        (
            ".{0,40}",
            proptest::option::of(0u64..u64::MAX),
            proptest::option::of(".{0,40}")
        )
            .prop_map(|(command, timeout_ms, stdin)| Work::Exec {
                command,
                timeout_ms,
                stdin: stdin.map(Box::new),
            }),
        ".{0,20}".prop_map(|s| Work::Data {
            data: serde_json::Value::String(s)
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)) {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        if let Ok((h, payload)) = protocol::split(&refs) {
            let _ = protocol::decode_task(payload);
            let _ = protocol::decode_result(payload);
            let _ = protocol::split_result_records(payload, h.task);
        }
        if let Some((_, rest)) = protocol::split_envelope(&refs) {
            let _ = protocol::split(rest);
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256), count in 0u64..8) {
        let _ = protocol::decode_task(&payload);
        let _ = protocol::decode_result(&payload);
        let _ = protocol::split_result_records(&payload, count);
        let _ = protocol::split_records(&payload, count);
        let _ = protocol::Acks::decode(&payload);
        let _ = protocol::decode_credit(&payload);
    }

    #[test]
    fn acks_round_trip_and_cover_exactly_the_ids(ids in proptest::collection::vec(0u64..500, 0..200), failed in proptest::collection::vec(500u64..600, 0..50)) {
        let (mut a, mut b) = (ids.clone(), failed.clone());
        let acks = protocol::Acks { ok: protocol::Acks::ranges(&mut a), failed: protocol::Acks::ranges(&mut b) };
        let back = protocol::Acks::decode(&acks.encode()).unwrap();
        prop_assert_eq!(&back, &acks);
        let covered: std::collections::BTreeSet<u64> = back.ok.iter().flat_map(|r| r.clone()).collect();
        let want: std::collections::BTreeSet<u64> = ids.into_iter().collect();
        prop_assert_eq!(covered, want);
    }

    #[test]
    fn a_valid_header_with_mangled_bytes_never_panics(task in any::<u64>(), at in 0usize..24, byte in any::<u8>()) {
        let mut h = Header { kind: Kind::Result, attempt: 1, batch: 7, task }.encode();
        h[at] = byte;
        let _ = Header::decode(&h);
    }

    #[test]
    fn tasks_round_trip(sent in any::<u64>(), w in work()) {
        let mut buf = Vec::new();
        protocol::encode_task(&mut buf, sent, &w);
        prop_assert_eq!(protocol::decode_task(&buf).unwrap(), (sent, w));
    }

    #[test]
    fn results_round_trip(worker in any::<u64>(), thread in any::<u16>(), sent_us in any::<u64>(), duration_us in any::<u64>(),
                          exit in proptest::option::of(any::<i32>()), output in proptest::collection::vec(any::<u8>(), 0..64),
                          error in proptest::collection::vec(any::<u8>(), 0..64)) {
        let r = ResultBody { worker, thread, sent_us, duration_us, outcome: Outcome { status: Status::Failed, exit_code: exit, output, error } };
        let mut buf = Vec::new();
        protocol::encode_result(&mut buf, &r);
        prop_assert_eq!(protocol::decode_result(&buf).unwrap(), r);
    }
}
