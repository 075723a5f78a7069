//! A worker of several threads in credit dispatch keeps one connection for
//! all of them: the ventilator hears one DEALER ask for every thread, and
//! what it deals there runs on whichever threads are free. Raw sockets play
//! the ventilator and the sink.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Shutdown;
use common::protocol::{Header, Item, Kind, Message, TaskBody};
use common::testing::{bound, time_bomb};
use common::work::Work;

#[test]
fn the_threads_of_a_credit_worker_share_one_dealer_and_its_tasks() {
    time_bomb(30, || {
        let ctx = zmq::Context::new();
        let (router, tasks_at) = bound(&ctx, zmq::ROUTER);
        let (pull, results_at) = bound(&ctx, zmq::PULL);
        let (publisher, control_at) = bound(&ctx, zmq::PUB);
        let config = worker::Config::parse_from([
            "worker",
            "--task-endpoint",
            &tasks_at,
            "--result-endpoint",
            &results_at,
            "--control-endpoint",
            &control_at,
            "--threads",
            "4",
            "--heartbeat",
            "200ms",
        ]);
        let stop = Shutdown::new();
        let worker = {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            std::thread::spawn(move || worker::run(&config, &ctx, &stop))
        };

        // Every CREDIT for a second: from one DEALER, asking for all four
        // threads at once.
        let mut asking = BTreeSet::new();
        let mut first_ask = None;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if router.poll(zmq::POLLIN, 50).unwrap() == 0 {
                continue;
            }
            let frames = router.recv_multipart(0).unwrap();
            let header = Header::decode(&frames[2]).unwrap();
            if header.kind == Kind::Credit {
                asking.insert(frames[0].clone());
                first_ask.get_or_insert(header.task);
            }
        }
        assert_eq!(asking.len(), 1, "one connection asks for the worker");
        assert_eq!(first_ask, Some(4), "one task for each of four threads");

        // Eight tasks to that one DEALER run on several threads.
        let tasks: Vec<Item<TaskBody>> = (0..8)
            .map(|task| Item {
                task,
                attempt: 1,
                body: Ok(TaskBody {
                    sent_us: 0,
                    work: Work::Sleep { ms: 100 },
                    name: None,
                }),
            })
            .collect();
        let dealer = asking.into_iter().next().unwrap();
        let mut frames = vec![dealer, Vec::new()];
        frames.extend(Message::Tasks { batch: 7, tasks }.frames());
        router.send_multipart(frames, 0).unwrap();
        let mut threads = BTreeSet::new();
        let mut results = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while results.len() < 8 {
            assert!(Instant::now() < deadline, "results: {results:?}");
            if pull.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            let frames = pull.recv_multipart(0).unwrap();
            if let Ok(Message::Results {
                batch: 7,
                results: r,
            }) = Message::decode(&frames)
            {
                for item in r {
                    threads.insert(item.body.unwrap().thread);
                    results.insert(item.task);
                }
            }
        }
        assert!(
            threads.len() >= 2,
            "tasks dealt to one connection ran on threads {threads:?}"
        );

        publisher
            .send(&Header::bare(Kind::End, 7).encode()[..], 0)
            .unwrap();
        stop.trigger();
        worker.join().unwrap().unwrap();
    });
}
