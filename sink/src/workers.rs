//! Who is alive, who is lost: the workers the sink hears from.
//!
//! Workers say HELLO, then HEARTBEAT (every `--heartbeat`), then BYE, on
//! the same PUSH socket as their results, so the sink knows who is ready
//! (and tells the ventilator in STATUS). A worker silent for longer than its
//! cutoff — `--worker-timeout`, or three of its own heartbeats if those are
//! slower — is no longer ready, and is lost (said once, in the log and to the
//! ventilator); heard from again, it is back. Each worker's tasks and busy
//! time make its share in the report.
//!
//! A worker whose results arrive before its HELLO (its status connection
//! is still being made: the sink was not listening yet when it first tried)
//! is *unheard*; END waits up to its second for it too, so that it hears
//! END once its HELLO and its subscription arrive rather than wait for ever
//! on a sink that has gone.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::protocol::WorkerInfo;

use crate::output::json_string;
use crate::report::WorkerRow;

/// The most threads a worker may announce (the worker's own limit).
pub(crate) const MAX_THREADS: u32 = 1024;

/// What a worker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// HELLO: it joined.
    Hello,
    /// HEARTBEAT: it is alive.
    Heartbeat,
    /// BYE: it is leaving.
    Bye,
}

/// What the sink knows of one worker.
#[derive(Debug)]
struct Worker {
    /// As it first announced itself, but for `held`: what its last
    /// HEARTBEAT or BYE said it holds (push dispatch), which goes to the
    /// ventilator with WORKER_LOST.
    info: WorkerInfo,
    name: String,
    /// `name` as a JSON string, for the output lines.
    name_json: String,
    last_seen: Instant,
    /// It said BYE.
    gone: bool,
    /// Silent for longer than its cutoff (and said so).
    lost: bool,
    tasks: u64,
    busy_us: u64,
    /// Ready when the batch started, or did work in it: it takes part.
    counted: bool,
}

impl Worker {
    /// How long this worker may be silent: `timeout`, or three of its own
    /// heartbeats if those are slower.
    fn cutoff(&self, timeout: Duration) -> Duration {
        timeout.max(Duration::from_millis(
            self.info.heartbeat_ms.min(3_600_000).saturating_mul(3),
        ))
    }

    fn silent(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_seen)
    }

    fn alive(&self, now: Instant, timeout: Duration) -> bool {
        !self.gone && self.silent(now) < self.cutoff(timeout)
    }
}

/// The workers heard from, by id.
#[derive(Debug)]
pub(crate) struct Workers {
    /// `--worker-timeout`.
    timeout: Duration,
    /// Looked up once a result: hashed with foldhash (seeded per process,
    /// so ids crafted to collide cannot be chosen in advance), not SipHash,
    /// which was a tenth of the sink's work at the no-op rate.
    by_id: HashMap<u64, Worker, foldhash::fast::RandomState>,
    /// Workers whose results came in but who have not said HELLO (at most
    /// [`MAX_UNHEARD`]: ids on results cost a sender nothing).
    unheard: HashSet<u64, foldhash::fast::RandomState>,
}

/// The most unheard workers kept track of.
const MAX_UNHEARD: usize = 1024;

impl Workers {
    /// No worker yet; `timeout` is `--worker-timeout`.
    pub(crate) fn new(timeout: Duration) -> Workers {
        Workers {
            timeout,
            by_id: HashMap::default(),
            unheard: HashSet::default(),
        }
    }

    /// A HELLO, HEARTBEAT or BYE. `Err` says why it is dropped (a thread
    /// count no worker has); `Ok(true)` when the worker is new to us, which
    /// the ventilator should hear of at once. A worker that joins once the
    /// batch has `started` takes part in it.
    pub(crate) fn heard(
        &mut self,
        said: Said,
        mut info: WorkerInfo,
        now: Instant,
        started: bool,
    ) -> Result<bool, String> {
        if !(1..=MAX_THREADS).contains(&info.threads) {
            return Err(format!(
                "worker {} claims {} threads",
                info.name(),
                info.threads
            ));
        }
        let held = info.held.take();
        self.unheard.remove(&info.id);
        let mut new = false;
        let w = self.by_id.entry(info.id).or_insert_with(|| {
            new = true;
            log::info!("worker {} joined ({} thread(s))", info.name(), info.threads);
            let name = info.name();
            Worker {
                name_json: json_string(&name),
                name,
                info,
                last_seen: now,
                gone: false,
                lost: false,
                tasks: 0,
                busy_us: 0,
                counted: started,
            }
        });
        w.last_seen = now;
        if held.is_some() {
            w.info.held = held;
        }
        w.gone = said == Said::Bye;
        if w.gone {
            log::info!("worker {} left", w.name);
        } else if w.lost {
            w.lost = false;
            log::info!("worker {} is heard from again", w.name);
        }
        Ok(new)
    }

    /// A result from `worker` that ran `duration_us`: it counts in the
    /// worker's share. The worker's name as a JSON string, when we know it.
    pub(crate) fn did(&mut self, worker: u64, duration_us: u64) -> Option<&str> {
        let Some(w) = self.by_id.get_mut(&worker) else {
            if self.unheard.len() < MAX_UNHEARD {
                self.unheard.insert(worker);
            }
            return None;
        };
        w.tasks += 1;
        w.busy_us += duration_us;
        w.counted = true;
        Some(&w.name_json)
    }

    /// A new batch (a standing pool): each worker's share starts again, and
    /// only workers still here are kept.
    pub(crate) fn new_batch(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.unheard.clear();
        self.by_id.retain(|_, w| w.alive(now, timeout));
        for w in self.by_id.values_mut() {
            w.tasks = 0;
            w.busy_us = 0;
            w.counted = false;
        }
    }

    /// The batch started (GO): every worker alive now takes part in it.
    pub(crate) fn batch_started(&mut self, now: Instant) {
        let timeout = self.timeout;
        for w in self.by_id.values_mut() {
            w.counted |= w.alive(now, timeout);
        }
    }

    /// Workers that fell silent since the last call (each said once, in the
    /// log): the ventilator should hear of them.
    pub(crate) fn newly_lost(&mut self, now: Instant) -> Vec<WorkerInfo> {
        let timeout = self.timeout;
        let mut lost = Vec::new();
        for w in self.by_id.values_mut() {
            if w.gone || w.lost || w.alive(now, timeout) {
                continue;
            }
            w.lost = true;
            log::warn!(
                "worker {} not heard from for {:.1?}: lost",
                w.name,
                w.silent(now)
            );
            lost.push(w.info.clone());
        }
        lost
    }

    /// Workers alive (heard from within their cutoff, not gone), by id:
    /// who is ready.
    pub(crate) fn ready(&self, now: Instant) -> Vec<WorkerInfo> {
        let mut ready: Vec<WorkerInfo> = self
            .by_id
            .values()
            .filter(|w| w.alive(now, self.timeout))
            // What each holds is for WORKER_LOST, not for every STATUS.
            .map(|w| WorkerInfo {
                held: None,
                ..w.info.clone()
            })
            .collect();
        ready.sort_by_key(|w| w.id);
        ready
    }

    /// How many workers sent results but have not said HELLO: END is
    /// repeated for them too, for as long as it waits for the BYEs.
    pub(crate) fn unheard(&self) -> usize {
        self.unheard.len()
    }

    /// How many workers are alive (END is repeated while any is).
    pub(crate) fn alive(&self, now: Instant) -> usize {
        self.by_id
            .values()
            .filter(|w| w.alive(now, self.timeout))
            .count()
    }

    /// The workers that took part, by name, each with its share of the
    /// `received` results; and their threads in all.
    pub(crate) fn shares(&self, received: u64) -> (u64, Vec<WorkerRow>) {
        let counted = self.by_id.values().filter(|w| w.counted);
        let threads = counted.clone().map(|w| u64::from(w.info.threads)).sum();
        let received = received.max(1) as f64;
        let mut rows: Vec<WorkerRow> = counted
            .map(|w| WorkerRow {
                worker: w.name.clone(),
                threads: w.info.threads,
                tasks: w.tasks,
                busy_ms: w.busy_us as f64 / 1000.0,
                share_pct: w.tasks as f64 / received * 100.0,
            })
            .collect();
        rows.sort_by(|a, b| a.worker.cmp(&b.worker));
        (threads, rows)
    }

    /// The workers lost and not heard from again, by name.
    pub(crate) fn lost(&self) -> Vec<String> {
        let mut lost: Vec<String> = self
            .by_id
            .values()
            .filter(|w| w.lost)
            .map(|w| w.name.clone())
            .collect();
        lost.sort();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Dispatch;

    fn info(id: u64, threads: u32, heartbeat_ms: u64) -> WorkerInfo {
        WorkerInfo {
            id,
            host: "h".into(),
            pid: id as u32,
            threads,
            dispatch: Dispatch::Credit,
            heartbeat_ms,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_worker_whose_results_come_before_its_hello_is_unheard_until_then() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        assert_eq!(ws.did(9, 10), None);
        assert_eq!(ws.did(9, 10), None);
        assert_eq!(ws.unheard(), 1, "once for all its results");
        assert_eq!(ws.alive(t0), 0);
        ws.heard(Said::Hello, info(9, 1, 1000), t0, true).unwrap();
        assert_eq!((ws.unheard(), ws.alive(t0)), (0, 1));
        // Ids on results cost a sender nothing: only so many are kept.
        for id in 100..100 + 2 * MAX_UNHEARD as u64 {
            ws.did(id, 0);
        }
        assert_eq!(ws.unheard(), MAX_UNHEARD);
        ws.new_batch(t0);
        assert_eq!(ws.unheard(), 0, "a new batch starts afresh");
    }

    #[test]
    fn a_worker_silent_past_the_timeout_is_lost_once_then_back_when_heard() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        assert_eq!(ws.heard(Said::Hello, info(1, 2, 1000), t0, false), Ok(true));
        assert_eq!(
            ws.heard(Said::Heartbeat, info(1, 2, 1000), t0 + S, false),
            Ok(false)
        );
        assert_eq!(ws.ready(t0 + 3 * S).len(), 1, "2 s silent of 3");
        assert!(ws.newly_lost(t0 + 3 * S).is_empty());
        assert_eq!(ws.newly_lost(t0 + 4 * S), vec![info(1, 2, 1000)]);
        assert!(ws.newly_lost(t0 + 5 * S).is_empty(), "said once");
        assert!(ws.ready(t0 + 4 * S).is_empty());
        assert_eq!(ws.lost(), vec!["h:1".to_string()]);
        ws.heard(Said::Heartbeat, info(1, 2, 1000), t0 + 6 * S, false)
            .unwrap();
        assert!(ws.lost().is_empty(), "heard from again");
        assert_eq!(ws.ready(t0 + 6 * S).len(), 1);
    }

    #[test]
    fn a_lost_worker_is_reported_with_what_its_last_heartbeat_held() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        ws.heard(Said::Hello, info(1, 2, 1000), t0, false).unwrap();
        let holding = |held: Vec<[u64; 2]>| WorkerInfo {
            held: Some(held),
            ..info(1, 2, 1000)
        };
        ws.heard(Said::Heartbeat, holding(vec![[9, 4], [9, 5]]), t0 + S, true)
            .unwrap();
        // STATUS does not carry it.
        assert_eq!(ws.ready(t0 + S), vec![info(1, 2, 1000)]);
        // A heartbeat that holds nothing says so; one that does not say
        // (absent) keeps the last word.
        ws.heard(Said::Heartbeat, holding(vec![[9, 6]]), t0 + 2 * S, true)
            .unwrap();
        ws.heard(Said::Heartbeat, info(1, 2, 1000), t0 + 2 * S, true)
            .unwrap();
        assert_eq!(ws.newly_lost(t0 + 6 * S), vec![holding(vec![[9, 6]])]);
    }

    #[test]
    fn the_cutoff_is_three_of_a_slow_workers_own_heartbeats() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        ws.heard(Said::Hello, info(1, 1, 2000), t0, false).unwrap();
        ws.heard(Said::Hello, info(2, 1, 100), t0, false).unwrap();
        assert!(ws.newly_lost(t0 + 5 * S).iter().all(|w| w.id == 2));
        assert_eq!(ws.ready(t0 + 5 * S), vec![info(1, 1, 2000)]);
        assert_eq!(ws.newly_lost(t0 + 6 * S), vec![info(1, 1, 2000)]);
    }

    #[test]
    fn a_worker_that_said_bye_is_neither_ready_nor_lost() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        ws.heard(Said::Hello, info(1, 1, 1000), t0, false).unwrap();
        ws.heard(Said::Hello, info(2, 1, 1000), t0, false).unwrap();
        ws.heard(Said::Bye, info(1, 1, 1000), t0 + S, false)
            .unwrap();
        assert_eq!(ws.alive(t0 + S), 1);
        assert_eq!(ws.ready(t0 + S), vec![info(2, 1, 1000)]);
        assert_eq!(ws.newly_lost(t0 + 10 * S), vec![info(2, 1, 1000)]);
    }

    #[test]
    fn a_thread_count_no_worker_has_is_refused() {
        let mut ws = Workers::new(3 * S);
        let now = Instant::now();
        for threads in [0, MAX_THREADS + 1, u32::MAX] {
            let err = ws.heard(Said::Hello, info(1, threads, 1000), now, false);
            assert!(err.unwrap_err().contains("claims"));
        }
        assert!(ws.ready(now).is_empty());
        assert_eq!(
            ws.heard(Said::Hello, info(1, MAX_THREADS, 1000), now, false),
            Ok(true)
        );
    }

    #[test]
    fn shares_count_who_was_ready_at_go_or_did_work() {
        let t0 = Instant::now();
        let mut ws = Workers::new(3 * S);
        ws.heard(Said::Hello, info(1, 2, 1000), t0, false).unwrap();
        ws.heard(Said::Hello, info(2, 4, 1000), t0, false).unwrap();
        // Worker 2 falls silent before GO; worker 3 joins after it.
        ws.heard(Said::Heartbeat, info(1, 2, 1000), t0 + 4 * S, false)
            .unwrap();
        ws.batch_started(t0 + 4 * S);
        ws.heard(Said::Hello, info(3, 1, 1000), t0 + 5 * S, true)
            .unwrap();
        assert_eq!(ws.did(1, 1500), Some("\"h:1\""));
        assert_eq!(ws.did(1, 500), Some("\"h:1\""));
        assert_eq!(ws.did(9, 1), None, "unknown");
        let (threads, rows) = ws.shares(4);
        assert_eq!(threads, 3, "workers 1 and 3");
        let names: Vec<&str> = rows.iter().map(|r| r.worker.as_str()).collect();
        assert_eq!(names, ["h:1", "h:3"]);
        assert_eq!(
            (rows[0].tasks, rows[0].busy_ms, rows[0].share_pct),
            (2, 2.0, 50.0)
        );
        // A worker that did work counts even if it was not ready at GO.
        ws.did(2, 1);
        assert_eq!(ws.shares(4).0, 7);
    }
}
