//! Packing results: many results in one RESULTS message.
//!
//! A flood of tiny tasks would otherwise cost one message (and its system
//! calls) per result. A thread holds the results of cheap tasks back while
//! more tasks wait for it, and sends them together:
//!
//! - at most [`MAX_PACK`] results in one message;
//! - never a result held back longer than [`HOLD_LIMIT`], and the result of a
//!   task that ran that long not at all (there is nothing to save);
//! - never a message larger than `--max-msg-size` allows (the sink would
//!   drop it with the connection);
//! - one batch per message: a result of another batch sends what is held
//!   first.
//!
//! One result goes as RESULT, several as RESULTS. [`Pack`] keeps the payload
//! as records written by `common::protocol` (it knows no byte offsets); the
//! executor sends what [`Pack::message`] gives it. The executor also sends
//! what is held whenever it has no task to run, so packing never delays a
//! result behind an idle wait.

use std::time::{Duration, Instant};

use common::Shutdown;
use common::protocol::{self, HEADER_LEN, Header, Kind};
use common::sockets;

/// At most this many results travel in one RESULTS message: as many as a
/// ventilator sends in one TASKS message, so a flood of no-op tasks costs
/// a message (and the wake-ups of the threads on its way) per thousand
/// results, not per few dozen. Packing only ever holds results behind
/// tasks quicker than [`HOLD_LIMIT`], so no result waits longer for it.
pub(crate) const MAX_PACK: u32 = 1024;
/// A result is held back for packing only behind tasks quicker than this,
/// and never longer than this.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_millis(1);

/// Results waiting to be sent together.
#[derive(Debug)]
pub(crate) struct Pack {
    /// The RESULTS payload so far: one record per result.
    records: Vec<u8>,
    /// How many records.
    count: u32,
    /// Their batch.
    batch: u64,
    /// The first result's task and attempt: a pack of one goes as RESULT,
    /// whose header carries them.
    first: (u64, u32),
    /// Where the first result's body begins, which is also the length of a
    /// record's head (the records begin with the first one).
    head: usize,
    /// When the first result was held back.
    oldest: Instant,
    /// The most a payload may hold.
    max: usize,
    /// Push dispatch: the tasks held, told when their results leave.
    held: Option<(std::sync::Arc<crate::held::Held>, usize)>,
    /// The tasks of the records (only kept for `held`).
    tasks: Vec<u64>,
}

impl Pack {
    /// An empty pack whose messages carry at most `max` bytes of payload.
    pub fn new(max: usize) -> Pack {
        Pack {
            records: Vec::with_capacity(4096),
            count: 0,
            batch: 0,
            first: (0, 0),
            head: 0,
            oldest: Instant::now(),
            max,
            held: None,
            tasks: Vec::new(),
        }
    }

    /// Tells `held` (as thread `thread`) of each result that leaves.
    pub fn tell(mut self, held: Option<(std::sync::Arc<crate::held::Held>, usize)>) -> Pack {
        self.held = held;
        self
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether what is held belongs to another batch than `batch` (then it
    /// goes first: a message carries one batch).
    pub fn holds_other_batch(&self, batch: u64) -> bool {
        self.count > 0 && self.batch != batch
    }

    /// Whether a result body of `len` bytes may join what is held without
    /// passing the size limit (else send first). An empty pack takes any:
    /// the result was already cut to fit (see `fit`).
    pub fn fits(&self, len: usize) -> bool {
        self.count == 0 || self.records.len() + self.head + len <= self.max
    }

    /// Holds a result of `batch`: `body` is a result body written by
    /// [`protocol::encode_result`]; its task finished at `finished`.
    pub fn add(&mut self, batch: u64, task: u64, attempt: u32, body: &[u8], finished: Instant) {
        protocol::encode_record(&mut self.records, task, attempt, body);
        if self.held.is_some() {
            self.tasks.push(task);
        }
        if self.count == 0 {
            self.batch = batch;
            self.first = (task, attempt);
            self.head = self.records.len() - body.len();
            self.oldest = finished;
        }
        self.count += 1;
    }

    /// Whether to send now, after adding the result of a task that ran for
    /// `ran` and finished at `now`: the pack is full, or that task was not
    /// cheap, or the oldest result has waited long enough.
    pub fn due(&self, ran: Duration, now: Instant) -> bool {
        self.count >= MAX_PACK
            || ran >= HOLD_LIMIT
            || now.saturating_duration_since(self.oldest) >= HOLD_LIMIT
    }

    /// The message that carries what is held, as its header and payload
    /// frames (`None` when nothing is).
    pub fn message(&self) -> Option<([u8; HEADER_LEN], &[u8])> {
        let (task, attempt) = self.first;
        match self.count {
            0 => None,
            1 => Some((
                Header {
                    kind: Kind::Result,
                    attempt,
                    batch: self.batch,
                    task,
                }
                .encode(),
                &self.records[self.head..],
            )),
            n => Some((
                Header {
                    kind: Kind::Results,
                    attempt: 0,
                    batch: self.batch,
                    task: u64::from(n),
                }
                .encode(),
                &self.records[..],
            )),
        }
    }

    /// Forgets what is held (its buffer is kept for the next pack).
    pub fn clear(&mut self) {
        self.records.clear();
        self.count = 0;
    }

    /// Sends what is held on `results` (PUSH), waiting while the sink is at
    /// its high-water mark unless `stop` is raised. Returns false when it
    /// gave up because of a stop; what was held is gone either way.
    pub fn flush(&mut self, results: &zmq::Socket, stop: &Shutdown) -> Result<bool, common::Error> {
        let sent = match self.message() {
            None => return Ok(true),
            Some((head, payload)) => {
                sockets::send_frames(results, &[&head[..], payload], || !stop.is_triggered())?
            }
        };
        if let Some((held, thread)) = &self.held
            && sent
        {
            held.sent(*thread, self.batch, &self.tasks);
        }
        self.tasks.clear();
        self.clear();
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{Item, Message, ResultBody};
    use common::work::Outcome;

    const MS: Duration = Duration::from_millis(1);

    fn result(output: &str) -> ResultBody {
        ResultBody {
            worker: 7,
            thread: 1,
            sent_us: 5,
            duration_us: 9,
            outcome: Outcome::ok(output.as_bytes().to_vec()),
        }
    }

    fn encoded(r: &ResultBody) -> Vec<u8> {
        let mut body = Vec::new();
        protocol::encode_result(&mut body, r);
        body
    }

    /// What the sink reads from the pack's message.
    fn sent(pack: &Pack) -> Message {
        let (head, payload) = pack.message().expect("a message");
        Message::decode(&[&head[..], payload]).expect("a message the sink reads")
    }

    fn item(task: u64, attempt: u32, r: &ResultBody) -> Item<ResultBody> {
        Item {
            task,
            attempt,
            body: Ok(r.clone()),
        }
    }

    #[test]
    fn one_result_goes_as_result_several_as_results() {
        let now = Instant::now();
        let mut pack = Pack::new(1 << 20);
        assert!(pack.is_empty() && pack.message().is_none());
        let (a, b) = (result("a"), result("bb"));
        pack.add(3, 10, 1, &encoded(&a), now);
        let one = sent(&pack);
        assert_eq!(one.kind(), Kind::Result);
        assert_eq!(
            one,
            Message::Results {
                batch: 3,
                results: vec![item(10, 1, &a)]
            }
        );
        pack.add(3, 11, 2, &encoded(&b), now);
        let two = sent(&pack);
        assert_eq!(two.kind(), Kind::Results);
        assert_eq!(
            two,
            Message::Results {
                batch: 3,
                results: vec![item(10, 1, &a), item(11, 2, &b)]
            }
        );
        pack.clear();
        assert!(pack.is_empty() && pack.message().is_none());
        // The next pack starts afresh, of any batch.
        pack.add(4, 12, 1, &encoded(&b), now);
        assert_eq!(
            sent(&pack),
            Message::Results {
                batch: 4,
                results: vec![item(12, 1, &b)]
            }
        );
    }

    #[test]
    fn at_most_max_pack_results_and_cheap_tasks_only_and_never_held_past_a_millisecond() {
        let t0 = Instant::now();
        let cheap = Duration::from_micros(10);
        let body = encoded(&result(""));
        let mut pack = Pack::new(1 << 20);
        for task in 0..MAX_PACK as u64 {
            assert!(!pack.is_empty() || task == 0);
            pack.add(1, task, 1, &body, t0);
            let due = pack.due(cheap, t0 + Duration::from_micros(100));
            assert_eq!(
                due,
                task + 1 == MAX_PACK as u64,
                "after {} results",
                task + 1
            );
        }
        let Message::Results { results, .. } = sent(&pack) else {
            panic!("not results");
        };
        assert_eq!(results.len(), MAX_PACK as usize);
        pack.clear();
        pack.add(1, 0, 1, &body, t0);
        assert!(pack.due(MS, t0 + MS), "a long task's result");
        assert!(!pack.due(cheap, t0 + MS / 2));
        assert!(pack.due(cheap, t0 + MS), "the oldest waited 1 ms");
        // The age counts from the first result held, not the last.
        pack.add(1, 1, 1, &body, t0 + MS / 2);
        assert!(pack.due(cheap, t0 + MS));
    }

    #[test]
    fn another_batch_goes_in_another_message() {
        let mut pack = Pack::new(1 << 20);
        assert!(!pack.holds_other_batch(1), "an empty pack takes any batch");
        pack.add(1, 0, 1, &encoded(&result("x")), Instant::now());
        assert!(!pack.holds_other_batch(1));
        assert!(pack.holds_other_batch(2));
    }

    #[test]
    fn a_message_never_passes_the_size_limit() {
        let now = Instant::now();
        let body = encoded(&result(&"x".repeat(100)));
        // Room for exactly three records of this size.
        let mut probe = Pack::new(usize::MAX);
        probe.add(1, 0, 1, &body, now);
        let record = probe.message().unwrap().1.len() + probe.head;
        let mut pack = Pack::new(3 * record);
        assert!(pack.fits(10 * record), "an empty pack takes any result");
        for task in 0..3 {
            assert!(pack.fits(body.len()), "record {task}");
            pack.add(1, task, 1, &body, now);
        }
        assert!(!pack.fits(body.len()), "a fourth would pass the limit");
        assert!(!pack.fits(0), "even an empty body has a head");
        let (head, payload) = pack.message().unwrap();
        assert!(head.len() == HEADER_LEN && payload.len() == 3 * record);
    }
}
