//! zpipe's wire protocol, version 1: the one place it is written down.
//!
//! Every message is multipart: a fixed 24-byte **header frame**, then at most one
//! **payload frame**. Integers are little-endian.
//!
//! ```text
//! header frame (24 bytes)
//!   0  2  magic    "ZP"
//!   2  1  version  1
//!   3  1  kind     see below
//!   4  4  attempt  u32, 1 for the first delivery of a task
//!   8  8  batch    u64, the batch id: a fingerprint of the batch's tasks
//!  16  8  task     u64, the task's index in the batch (0-based, input order)
//! ```
//!
//! The batch id is a hash of the tasks (their bodies, stages and
//! dependencies: `Plan::fingerprint` in the ventilator), never 0, not a random
//! number: the same tasks make the same id, so a ventilator restarted with
//! `--resume` and a sink that read back its output recognise each other's
//! batch. Messages about no task carry `attempt` 0 and `task` 0; CREDIT,
//! TASKS, RESULTS and ACK give the two fields other meanings, said in the
//! table below.
//!
//! | kind | name | direction | socket pair | payload |
//! |---|---|---|---|---|
//! | 1 | TASK | ventilator → worker | ROUTER → DEALER (credit dispatch, the default), or PUSH → PULL (push) | task body (below) |
//! | 2 | RESULT | worker → sink | PUSH → PULL | result body (below) |
//! | 3 | HELLO | worker → sink | PUSH → PULL | JSON [`WorkerInfo`] |
//! | 4 | HEARTBEAT | worker → sink | PUSH → PULL | JSON [`WorkerInfo`] |
//! | 5 | CREDIT | worker → ventilator | DEALER → ROUTER | credit dispatch: the header's `task` field holds how many more tasks this worker thread can take (`attempt` 1: *exactly* that many, it is idle); payload `worker u64`, `thread u16` |
//! | 6 | START | ventilator → sink | DEALER → ROUTER | JSON [`BatchInfo`] |
//! | 7 | STATUS | sink → ventilator | ROUTER → DEALER | JSON [`SinkStatus`] |
//! | 8 | GO | ventilator → sink | DEALER → ROUTER | none: the first task is about to leave |
//! | 9 | ACK | sink → ventilator | ROUTER → DEALER | task ids whose result the sink has written: `ok_ranges u32`, `failed_ranges u32`, then that many `[from, to)` pairs of u64, ok ones first; the header says which form (below) |
//! | 10 | DONE | sink → ventilator | ROUTER → DEALER | JSON [`BatchDone`] |
//! | 11 | END | sink → workers | PUB → SUB | none: the batch is complete, exit |
//! | 12 | KILL | anyone → workers | PUB → SUB | none: stop now |
//! | 13 | WORKER_LOST | sink → ventilator | ROUTER → DEALER | JSON [`WorkerInfo`] |
//! | 14 | BYE | worker → sink | PUSH → PULL | JSON [`WorkerInfo`]: the worker is leaving; also ventilator → sink (DEALER → ROUTER, payload `{}`): DONE reached it, the sink may stop repeating DONE |
//! | 15 | RESULTS | worker → sink | PUSH → PULL | several results of one batch (below); the header's `task` field holds their count |
//! | 16 | TASKS | ventilator → worker | ROUTER → DEALER, or PUSH → PULL | several tasks in one message, as records like RESULTS'; the header's `task` field holds their count, and its `attempt` the most credit the ventilator lets one thread (or one connection) hold: a worker asks for more than its own `--hwm` only when this says it may (0, from ventilators before it: it may not). Credit: for one worker thread with credit for them. Push: a pack of tasks quicker than a millisecond, only while every ready worker says `"packs": true` in its HELLO |
//! | 17 | GIVEN_UP | ventilator → sink | DEALER → ROUTER | the reason, UTF-8: the ventilator's verdict on task `task` (its last attempt `attempt`): lost once too often (`--retries`), or a task it waited for failed; the sink records it as a failed result from "ventilator" |
//!
//! HELLO, HEARTBEAT and BYE also go from a worker to the ventilator in credit
//! dispatch (DEALER → ROUTER), and the ventilator answers each HEARTBEAT with
//! one (an empty payload), as in the guide's Paranoid Pirate. A task the
//! ventilator gives up on reaches the sink as GIVEN_UP, never as a RESULT:
//! results come from workers only, on the result socket.
//!
//! **ACK, two forms.** An *update* (header `attempt` 0, `task` 0) names the
//! results written since the last update: the sink sends one every 10 ms
//! while results come in (sooner once 2048 ids wait), and always before a
//! STATUS, so that STATUS's `received` never counts a result the ventilator
//! was not told of (a count ahead of the ventilator's own means ACKs were
//! lost). A *snapshot* (header `attempt` 1) is the sink's whole account of
//! the batch, sent in answer to a START from a ventilator it did not know (a
//! new batch, or a new routing id) or that asked (`resync`); it may take
//! several ACKs, each header's `task` saying how many parts follow, so the
//! part with `task` 0 ends it, and the ventilator applies the parts together
//! when that one arrives. Either form names only results the sink has
//! already handed to the operating system. [`AckPart`] is this convention
//! as a type.
//!
//! **Envelope.** On the credit path a worker's DEALER puts an empty delimiter
//! frame before the header, like a REQ socket: the ventilator's ROUTER (and
//! any `queue` device between them) puts identity frames in front of it, and
//! everything up to the delimiter is the route the answer goes back on.
//!
//! **Task body**: `sent_us u64` (ventilator's clock, µs since the Unix epoch),
//! `tag u8`, then per tag: 0 noop (nothing), 1 sleep (`ms u64`), 2 primes
//! (`from u64`, `to u64`), 3 exec (`timeout_ms u64`, `u64::MAX` for the worker's
//! default, then the command as UTF-8), 4 data (the JSON value as UTF-8),
//! 5 named data (`name_len u8`, the kind's name, then the JSON value as
//! UTF-8): a data task whose kind is a name of its own (see
//! [`crate::kinds`]). Tag 5 came after the rest: a worker from before it
//! answers such a task `rejected` (an unknown tag) instead of running it as
//! a plain data task, so a kind it never said it serves is never run by
//! mistake.
//! 6 exec with input (`timeout_ms u64` as in 3, `command_len u32`, the
//! command, then the command's stdin as UTF-8). An exec task without
//! `stdin` is always tag 3, so its bytes (and the batch id) are as they
//! were; one with `stdin` is tag 6, which a worker from before it answers
//! `rejected` (an unknown tag) rather than misreading.
//!
//! **Result body** (36 bytes then data): `worker u64`, `thread u16`,
//! `status u8` (0 ok, 1 failed, 2 timed out, 3 panicked, 4 rejected),
//! `has_exit_code u8`, `exit_code i32`, `sent_us u64` (echoed from the task),
//! `duration_us u64`, `output_len u32`, then `output_len` bytes of output and
//! the rest as the error text.
//!
//! **RESULTS payload**: records of `task u64`, `attempt u32`, `len u32`, then
//! `len` bytes of result body. A worker packs results this way only behind
//! cheap tasks (under a millisecond) while more tasks are already waiting
//! for it: at most 64 in one message, never more than `--max-msg-size`, and
//! never holding a result back for more than a millisecond, so that a flood
//! of tiny tasks does not cost one message per result. A lone result goes
//! as a RESULT.
//!
//! **Decoded form.** [`Message::decode`] turns a message into a [`Message`],
//! the one typed form the roles `match` on, and [`Message::frames`] writes
//! one; the functions below it are the pieces, kept for the hot paths that
//! encode into reused buffers.
//!
//! A receiver drops and counts (never crashes on) a message that is empty,
//! lacks the magic, carries another version, has an unknown kind, the wrong
//! number of frames, or a payload too short or malformed for its kind (a
//! task or result body that cannot be read is its [`Item`]'s error, not the
//! message's: the task id is still good). A peer of another
//! version is named in the log, so old and new roles refuse each other in words.
//! Classic mode (`--classic`) speaks the guide's format instead: see the README.
//!
//! **Within version 1**, GIVEN_UP (kind 17) came later than the rest, and
//! replaced the ventilator's RESULT of worker 0 for a task it gave up. A sink
//! from before it counts a GIVEN_UP as an "unknown kind" (in its log and
//! report), and a sink after it drops such a RESULT on the feedback socket as
//! an "unexpected kind": either way that one task stays unacknowledged, and
//! the batch waits. Run the ventilator and the sink from the same release.

use serde::{Deserialize, Serialize};

use crate::work::{Outcome, Status, Work};

/// The first two bytes of every header.
pub const MAGIC: [u8; 2] = *b"ZP";
/// This protocol's version.
pub const VERSION: u8 = 1;
/// Length of the header frame.
pub const HEADER_LEN: usize = 24;
/// Length of the fixed part of a result body.
pub const RESULT_FIXED_LEN: usize = 36;

/// Message kinds (byte 3 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// TASK: one task, ventilator → worker (ROUTER → DEALER, or PUSH → PULL).
    Task = 1,
    /// RESULT: one result, worker → sink (PUSH → PULL).
    Result = 2,
    /// HELLO: a worker has joined, worker → sink (and → ventilator in credit
    /// dispatch).
    Hello = 3,
    /// HEARTBEAT: a worker is alive; in credit dispatch the ventilator
    /// answers each one (Paranoid Pirate).
    Heartbeat = 4,
    /// CREDIT: a worker thread can take more tasks, DEALER → ventilator's
    /// ROUTER.
    Credit = 5,
    /// START: the ventilator announces its batch to the sink (DEALER →
    /// ROUTER).
    Start = 6,
    /// STATUS: the sink's batch, ready workers and count, to the ventilator.
    Status = 7,
    /// GO: the ventilator's first task is about to leave; the sink starts
    /// its clock.
    Go = 8,
    /// ACK: task ids whose results the sink has written, to the ventilator.
    Ack = 9,
    /// DONE: the sink has every result of the batch, to the ventilator.
    Done = 10,
    /// END: the batch is complete, sink → workers (PUB → SUB); they exit 0.
    End = 11,
    /// KILL: stop now, any publisher → workers (PUB → SUB).
    Kill = 12,
    /// WORKER_LOST: the sink has not heard from a worker for
    /// `--worker-timeout`, to the ventilator.
    WorkerLost = 13,
    /// BYE: a worker leaving, or the ventilator telling the sink that DONE
    /// reached it.
    Bye = 14,
    /// RESULTS: several results of one batch in one message, worker → sink.
    Results = 15,
    /// TASKS: several tasks in one message, ventilator → worker: for one
    /// credited thread (ROUTER → DEALER), or a pack of quick tasks (PUSH →
    /// PULL).
    Tasks = 16,
    /// GIVEN_UP: the ventilator's verdict on a task it will not send again,
    /// to the sink (DEALER → ROUTER).
    GivenUp = 17,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Task,
            2 => Result,
            3 => Hello,
            4 => Heartbeat,
            5 => Credit,
            6 => Start,
            7 => Status,
            8 => Go,
            9 => Ack,
            10 => Done,
            11 => End,
            12 => Kill,
            13 => WorkerLost,
            14 => Bye,
            15 => Results,
            16 => Tasks,
            17 => GivenUp,
            _ => return None,
        })
    }

    /// Whether messages of this kind carry a payload frame.
    pub fn has_payload(self) -> bool {
        !matches!(self, Kind::Go | Kind::End | Kind::Kill)
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No frame, or an empty first frame.
    #[error("empty message")]
    Empty,
    /// The first frame does not start with the magic `ZP`: a classic-mode
    /// peer, a port scanner, another protocol.
    #[error("not a zpipe message (no \"ZP\" magic; a classic-mode peer?)")]
    NotZpipe,
    /// A zpipe header of another protocol version (carried here).
    #[error(
        "protocol version {0} from the peer, this build speaks version {VERSION}: upgrade the older side"
    )]
    Version(u8),
    /// A kind byte this version does not know (carried here).
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Not the number of frames the kind has (header, then a payload or
    /// none).
    #[error("{kind:?} message with {got} frames, expected {expected}")]
    Frames {
        /// The kind the header names.
        kind: Kind,
        /// Frames that kind has.
        expected: usize,
        /// Frames that came.
        got: usize,
    },
    /// A header or payload shorter than its fields; names which part.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// A payload that cannot be read (bad JSON, an unknown tag, a count that
    /// disagrees with the records, trailing bytes); says what.
    #[error("malformed {0}")]
    Malformed(String),
}

impl DecodeError {
    /// A short stable label, for counting drops by reason.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::NotZpipe => "not zpipe",
            DecodeError::Version(_) => "wrong version",
            DecodeError::UnknownKind(_) => "unknown kind",
            DecodeError::Frames { .. } => "wrong frame count",
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// The header frame: the first frame of every message (see the module doc
/// for its bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the message is, and so what its payload holds.
    pub kind: Kind,
    /// Which delivery of the task this is, 1 for the first; CREDIT: 1 when
    /// the count is exact; TASKS: the most credit a thread may hold (0:
    /// its worker's `--hwm`); ACK: 1 for a snapshot part; else 0.
    pub attempt: u32,
    /// The batch id, a fingerprint of its tasks (0 where a message concerns
    /// no batch).
    pub batch: u64,
    /// The task's index in the batch; CREDIT: tasks asked for; TASKS,
    /// RESULTS: how many records; ACK snapshot: parts still to come; else 0.
    pub task: u64,
}

impl Header {
    /// A header for a message that concerns no task.
    pub fn bare(kind: Kind, batch: u64) -> Self {
        Header {
            kind,
            attempt: 0,
            batch,
            task: 0,
        }
    }

    /// The header's 24 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.kind as u8;
        out[4..8].copy_from_slice(&self.attempt.to_le_bytes());
        out[8..16].copy_from_slice(&self.batch.to_le_bytes());
        out[16..24].copy_from_slice(&self.task.to_le_bytes());
        out
    }

    /// Reads a header frame: magic first, then version, then length and
    /// kind, so a peer of another version is named as such.
    pub fn decode(frame: &[u8]) -> Result<Header, DecodeError> {
        if frame.is_empty() {
            return Err(DecodeError::Empty);
        }
        if frame.len() < 3 || frame[0..2] != MAGIC {
            return Err(DecodeError::NotZpipe);
        }
        if frame[2] != VERSION {
            return Err(DecodeError::Version(frame[2]));
        }
        if frame.len() != HEADER_LEN {
            return Err(DecodeError::Truncated("header"));
        }
        let kind = Kind::from_u8(frame[3]).ok_or(DecodeError::UnknownKind(frame[3]))?;
        Ok(Header {
            kind,
            attempt: u32::from_le_bytes(frame[4..8].try_into().unwrap()),
            batch: u64::from_le_bytes(frame[8..16].try_into().unwrap()),
            task: u64::from_le_bytes(frame[16..24].try_into().unwrap()),
        })
    }
}

/// Decodes a whole multipart message into its header and payload, checking
/// the frame count for its kind.
pub fn split<F: std::ops::Deref<Target = [u8]>>(
    frames: &[F],
) -> Result<(Header, &[u8]), DecodeError> {
    let first = frames.first().ok_or(DecodeError::Empty)?;
    let header = Header::decode(first)?;
    let expected = if header.kind.has_payload() { 2 } else { 1 };
    if frames.len() != expected {
        return Err(DecodeError::Frames {
            kind: header.kind,
            expected,
            got: frames.len(),
        });
    }
    let payload = frames.get(1).map(|f| &f[..]).unwrap_or(&[]);
    Ok((header, payload))
}

/// Little-endian reader over a payload that reports truncation instead of
/// panicking.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Appends a task body to `out`.
pub fn encode_task(out: &mut Vec<u8>, sent_us: u64, work: &Work) {
    out.extend_from_slice(&sent_us.to_le_bytes());
    match work {
        Work::Noop => out.push(0),
        Work::Sleep { ms } => {
            out.push(1);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        Work::Primes { from, to } => {
            out.push(2);
            out.extend_from_slice(&from.to_le_bytes());
            out.extend_from_slice(&to.to_le_bytes());
        }
        Work::Exec {
            command,
            timeout_ms,
            stdin: None,
        } => {
            out.push(3);
            out.extend_from_slice(&timeout_ms.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(command.as_bytes());
        }
        // A tag of its own, not a longer tag 3: a worker from before it
        // answers `rejected` (an unknown tag) rather than running the
        // command with its input glued on.
        Work::Exec {
            command,
            timeout_ms,
            stdin: Some(stdin),
        } => {
            out.push(6);
            out.extend_from_slice(&timeout_ms.unwrap_or(u64::MAX).to_le_bytes());
            out.extend_from_slice(&(command.len() as u32).to_le_bytes());
            out.extend_from_slice(command.as_bytes());
            out.extend_from_slice(stdin.as_bytes());
        }
        Work::Data { data } => {
            out.push(4);
            // Writing a Value to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, data);
        }
    }
}

/// Appends a task body whose kind may be a name of its own: a data task
/// with a `name` goes as a named data task (tag 5); anything else as
/// [`encode_task`] writes it. The name is checked when the task is made
/// ([`crate::kinds::check_type`]), so it fits its length byte.
pub fn encode_named_task(out: &mut Vec<u8>, sent_us: u64, name: Option<&str>, work: &Work) {
    match (name, work) {
        (Some(name), Work::Data { data }) => {
            out.extend_from_slice(&sent_us.to_le_bytes());
            out.push(5);
            let name = &name.as_bytes()[..name.len().min(255)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            let _ = serde_json::to_writer(&mut *out, data);
        }
        _ => encode_task(out, sent_us, work),
    }
}

/// Reads a task body: the ventilator's send time and the work (the name of
/// a named data task is dropped: see [`decode_named_task`]).
pub fn decode_task(payload: &[u8]) -> Result<(u64, Work), DecodeError> {
    decode_named_task(payload).map(|(sent_us, _, work)| (sent_us, work))
}

/// Reads a task body: the ventilator's send time, the kind's own name when
/// it is a named data task (tag 5), and the work.
pub fn decode_named_task(payload: &[u8]) -> Result<(u64, Option<String>, Work), DecodeError> {
    let mut name = None;
    let mut r = Reader {
        buf: payload,
        what: "task body",
    };
    let sent_us = r.u64()?;
    let work = match r.u8()? {
        0 => Work::Noop,
        1 => Work::Sleep { ms: r.u64()? },
        2 => Work::Primes {
            from: r.u64()?,
            to: r.u64()?,
        },
        3 => {
            let timeout = r.u64()?;
            let command = std::str::from_utf8(r.rest())
                .map_err(|_| DecodeError::Malformed("exec command (not UTF-8)".into()))?;
            Work::Exec {
                command: command.to_string(),
                timeout_ms: (timeout != u64::MAX).then_some(timeout),
                stdin: None,
            }
        }
        6 => {
            let timeout = r.u64()?;
            let len = r.u32()? as usize;
            let utf8 = |b: &[u8], what: &str| {
                std::str::from_utf8(b)
                    .map(str::to_string)
                    .map_err(|_| DecodeError::Malformed(format!("exec {what} (not UTF-8)")))
            };
            let command = utf8(r.take(len)?, "command")?;
            Work::Exec {
                command,
                timeout_ms: (timeout != u64::MAX).then_some(timeout),
                stdin: Some(Box::new(utf8(r.rest(), "stdin")?)),
            }
        }
        4 => Work::Data {
            data: serde_json::from_slice(r.rest())
                .map_err(|e| DecodeError::Malformed(format!("data task: {e}")))?,
        },
        5 => {
            let len = r.u8()? as usize;
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| DecodeError::Malformed("task kind name (not UTF-8)".into()))?;
            crate::kinds::check_type(text).map_err(DecodeError::Malformed)?;
            name = Some(text.to_string());
            Work::Data {
                data: serde_json::from_slice(r.rest())
                    .map_err(|e| DecodeError::Malformed(format!("data task: {e}")))?,
            }
        }
        tag => return Err(DecodeError::Malformed(format!("task tag {tag}"))),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Malformed(
            "task body has trailing bytes".into(),
        ));
    }
    Ok((sent_us, name, work))
}

/// A result as it travels from worker to sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultBody {
    /// The worker process that ran the task ([`WorkerInfo::id`]; 0 on a
    /// GIVEN_UP the sink turns into a result, named "ventilator").
    pub worker: u64,
    /// The worker thread within it.
    pub thread: u16,
    /// The task's `sent_us`, echoed: the sink measures latency from it.
    pub sent_us: u64,
    /// How long the task body ran on the worker, in µs.
    pub duration_us: u64,
    /// How it ended, and what it printed.
    pub outcome: Outcome,
}

/// Appends a result body to `out`.
pub fn encode_result(out: &mut Vec<u8>, r: &ResultBody) {
    out.extend_from_slice(&r.worker.to_le_bytes());
    out.extend_from_slice(&r.thread.to_le_bytes());
    out.push(r.outcome.status as u8);
    out.push(r.outcome.exit_code.is_some() as u8);
    out.extend_from_slice(&r.outcome.exit_code.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&r.sent_us.to_le_bytes());
    out.extend_from_slice(&r.duration_us.to_le_bytes());
    out.extend_from_slice(&(r.outcome.output.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.outcome.output);
    out.extend_from_slice(&r.outcome.error);
}

/// Reads a result body.
pub fn decode_result(payload: &[u8]) -> Result<ResultBody, DecodeError> {
    let mut r = Reader {
        buf: payload,
        what: "result body",
    };
    let worker = r.u64()?;
    let thread = r.u16()?;
    let status = r.u8()?;
    let status = Status::from_u8(status)
        .ok_or_else(|| DecodeError::Malformed(format!("result status {status}")))?;
    let has_exit = r.u8()?;
    let exit = r.u32()? as i32;
    let sent_us = r.u64()?;
    let duration_us = r.u64()?;
    let out_len = r.u32()? as usize;
    let output = r.take(out_len)?.to_vec();
    let error = r.rest().to_vec();
    Ok(ResultBody {
        worker,
        thread,
        sent_us,
        duration_us,
        outcome: Outcome {
            status,
            exit_code: (has_exit != 0).then_some(exit),
            output,
            error,
        },
    })
}

/// Appends one record of a RESULTS payload.
pub fn encode_result_record(out: &mut Vec<u8>, task: u64, attempt: u32, r: &ResultBody) {
    out.extend_from_slice(&task.to_le_bytes());
    out.extend_from_slice(&attempt.to_le_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_result(out, r);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Length of a RESULTS or TASKS record's head (`task`, `attempt`, `len`).
pub const RECORD_HEAD_LEN: usize = 16;

/// Appends one record (of a RESULTS or TASKS payload) whose body is
/// already encoded.
pub fn encode_record(out: &mut Vec<u8>, task: u64, attempt: u32, body: &[u8]) {
    out.extend_from_slice(&task.to_le_bytes());
    out.extend_from_slice(&attempt.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// One record of a RESULTS (or TASKS) payload, its body not yet read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultRecord<'a> {
    /// The task's index in the batch.
    pub task: u64,
    /// Which delivery of the task it answers (1 for the first).
    pub attempt: u32,
    /// A result body, see [`decode_result`].
    pub body: &'a [u8],
}

/// Splits a RESULTS payload into its records, checking that there are
/// exactly `count` of them.
pub fn split_result_records(
    payload: &[u8],
    count: u64,
) -> Result<Vec<ResultRecord<'_>>, DecodeError> {
    split_records(payload, count)
}

/// Splits a RESULTS or TASKS payload into its records (a TASKS record's body
/// is a task body), checking that there are exactly `count` of them.
pub fn split_records(payload: &[u8], count: u64) -> Result<Vec<ResultRecord<'_>>, DecodeError> {
    let mut r = Reader {
        buf: payload,
        what: "results record",
    };
    let mut records = Vec::with_capacity(count.min(1024) as usize);
    while !r.buf.is_empty() {
        let task = r.u64()?;
        let attempt = r.u32()?;
        let len = r.u32()? as usize;
        records.push(ResultRecord {
            task,
            attempt,
            body: r.take(len)?,
        });
    }
    if records.len() as u64 != count {
        return Err(DecodeError::Malformed(format!(
            "the header says {count} records, the payload holds {}",
            records.len()
        )));
    }
    Ok(records)
}

/// A worker's announcement (HELLO), repeated in every HEARTBEAT so that a
/// restarted sink learns of the workers again, and in BYE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Random per process; results name their worker by it.
    pub id: u64,
    /// The worker's host name.
    pub host: String,
    /// The worker's process id on that host.
    pub pid: u32,
    /// Tasks it runs at once.
    pub threads: u32,
    /// How it takes tasks (push when absent: workers older than credit
    /// dispatch do not say).
    #[serde(default = "Dispatch::push")]
    pub dispatch: Dispatch,
    /// How often it says HEARTBEAT, in ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The largest message frame it takes (its `--max-msg-size`); a larger
    /// one would drop its connection, so the ventilator fails such a task
    /// instead of sending it (absent: a worker from before the field, or
    /// no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_size: Option<u64>,
    /// Push dispatch: the tasks (`[batch, task]`) the worker has taken and
    /// not yet sent the result of, as of this HEARTBEAT or BYE. The sink
    /// passes the last it heard on with WORKER_LOST, so that the ventilator
    /// charges only those against `--retries` (a PUSH cannot tell who holds
    /// what). Absent: the worker does not say (credit dispatch, where the
    /// ventilator knows, or a worker from before the field), and every
    /// task out is charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<[u64; 2]>>,
    /// The task kinds it serves (`--kinds`, or its handler's), see
    /// [`crate::kinds`]. Absent: it does not say (no `--kinds`, or a worker
    /// from before the field), and serves the built-in kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// Push dispatch: it takes a TASKS message of several tasks on its
    /// PULL, as every worker does in credit dispatch. The ventilator packs
    /// tasks quicker than a millisecond only when every ready worker says
    /// so; absent (a worker from before), one task a message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packs: bool,
}

fn default_heartbeat_ms() -> u64 {
    1000
}

impl WorkerInfo {
    /// `host:pid`, how reports name the worker.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }
}

/// How tasks are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// The guide's way: the ventilator's PUSH deals round-robin to whoever
    /// is connected.
    Push,
    /// Workers ask for work: each worker thread's DEALER tells the
    /// ventilator's ROUTER how many tasks it can take.
    Credit,
}

impl Dispatch {
    fn push() -> Dispatch {
        Dispatch::Push
    }

    /// The flag's value, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Dispatch::Push => "push",
            Dispatch::Credit => "credit",
        }
    }
}

/// What the ventilator tells the sink about a batch (START).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// The batch id, the tasks' fingerprint.
    pub batch: u64,
    /// How many tasks: the sink's batch is complete when it holds a result
    /// for each id below this.
    pub tasks: u64,
    /// Sum of the known costs (`sleep` workloads), in ms.
    pub expected_ms: u64,
    /// How the ventilator hands tasks out. The sink only carries it; the
    /// ventilator itself checks each ready worker's [`WorkerInfo::dispatch`].
    pub dispatch: Dispatch,
    /// Asks the sink to say again everything it holds (the ventilator
    /// thinks acknowledgements were lost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
}

/// What the sink tells the ventilator (STATUS): in answer to START, then
/// every 200 ms while it collects the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// The batch the sink is collecting (it may be another ventilator's).
    pub batch: Option<u64>,
    /// Workers heard from recently.
    pub ready: Vec<WorkerInfo>,
    /// Results accepted so far.
    pub received: u64,
    /// Why the sink will not collect the batch announced (too large, empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Random per sink process: a new value means the sink restarted, and
    /// the ventilator announces its batch again.
    #[serde(default)]
    pub instance: u64,
}

/// The sink's word that a batch is complete (DONE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchDone {
    /// The batch id.
    pub batch: u64,
    /// Tasks whose result is `ok`.
    pub ok: u64,
    /// Tasks whose result is anything else (given up ones included).
    pub failed: u64,
    /// From GO to the last result, in ms.
    pub elapsed_ms: f64,
    /// Where the sink wrote the results (its host and path), when it
    /// writes them to a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Splits a message that came through a ROUTER into its route (identity
/// frames, one per ROUTER on the way) and the zpipe message after the empty
/// delimiter. `None` when there is no delimiter.
pub fn split_envelope<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Option<(&[F], &[F])> {
    let at = frames.iter().position(|f| f.is_empty())?;
    Some((&frames[..at], &frames[at + 1..]))
}

/// A CREDIT payload: which worker thread speaks.
pub fn encode_credit(worker: u64, thread: u16) -> [u8; 10] {
    let mut b = [0; 10];
    b[..8].copy_from_slice(&worker.to_le_bytes());
    b[8..].copy_from_slice(&thread.to_le_bytes());
    b
}

/// Reads a CREDIT payload: `(worker, thread)`.
pub fn decode_credit(payload: &[u8]) -> Result<(u64, u16), DecodeError> {
    let mut r = Reader {
        buf: payload,
        what: "credit",
    };
    let worker = r.u64()?;
    let thread = r.u16()?;
    if !r.buf.is_empty() {
        return Err(DecodeError::Malformed("credit: trailing bytes".into()));
    }
    Ok((worker, thread))
}

/// What an ACK says: task ids whose results the sink has written, as
/// half-open ranges, the ones that succeeded apart from the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acks {
    /// Tasks whose result is `ok`: the ventilator may release what waits
    /// for them.
    pub ok: Vec<std::ops::Range<u64>>,
    /// Tasks whose result is anything else: what waits for them fails too.
    pub failed: Vec<std::ops::Range<u64>>,
}

impl Acks {
    /// Most ranges in one ACK: the payload stays far below any size limit.
    pub const MAX_RANGES: usize = 65_536;

    /// Turns task ids (any order, no duplicates needed) into ranges.
    pub fn ranges(ids: &mut [u64]) -> Vec<std::ops::Range<u64>> {
        ids.sort_unstable();
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        for &id in ids.iter() {
            match out.last_mut() {
                Some(r) if r.end == id => r.end = id + 1,
                Some(r) if r.end > id => {}
                _ => out.push(id..id + 1),
            }
        }
        out
    }

    /// Whether it names no task.
    pub fn is_empty(&self) -> bool {
        self.ok.is_empty() && self.failed.is_empty()
    }

    /// The ACK payload: the two counts, then the ranges, ok ones first.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 16 * (self.ok.len() + self.failed.len()));
        b.extend_from_slice(&(self.ok.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.failed.len() as u32).to_le_bytes());
        for r in self.ok.iter().chain(&self.failed) {
            b.extend_from_slice(&r.start.to_le_bytes());
            b.extend_from_slice(&r.end.to_le_bytes());
        }
        b
    }

    /// Reads an ACK payload; refuses more than [`Acks::MAX_RANGES`] ranges,
    /// a length that disagrees with the counts, and empty ranges.
    pub fn decode(payload: &[u8]) -> Result<Acks, DecodeError> {
        let mut r = Reader {
            buf: payload,
            what: "ack",
        };
        let ok = r.u32()? as usize;
        let failed = r.u32()? as usize;
        if ok + failed > Self::MAX_RANGES || r.buf.len() != 16 * (ok + failed) {
            return Err(DecodeError::Malformed(format!(
                "ack: {ok} + {failed} ranges in {} bytes",
                r.buf.len()
            )));
        }
        let mut acks = Acks::default();
        for i in 0..ok + failed {
            let (from, to) = (r.u64()?, r.u64()?);
            if from >= to {
                return Err(DecodeError::Malformed(format!(
                    "ack: empty range {from}..{to}"
                )));
            }
            if i < ok {
                acks.ok.push(from..to);
            } else {
                acks.failed.push(from..to);
            }
        }
        Ok(acks)
    }
}

/// Encodes a message with a JSON payload as two frames.
pub fn json_frames<T: Serialize>(header: Header, value: &T) -> [Vec<u8>; 2] {
    [
        header.encode().to_vec(),
        serde_json::to_vec(value).unwrap_or_default(),
    ]
}

/// Decodes a JSON payload.
pub fn from_json<'a, T: Deserialize<'a>>(
    payload: &'a [u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(format!("{what}: {e}")))
}

/// A task body as read: when the ventilator sent it, and the work.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskBody {
    /// The ventilator's clock when it sent the task (µs since the Unix epoch).
    pub sent_us: u64,
    /// What to do.
    pub work: Work,
    /// The kind's own name, for a named data task (tag 5); `None` for the
    /// rest, whose kind is [`Work::kind`].
    pub name: Option<String>,
}

impl TaskBody {
    /// The task's kind: its own name, or its body's.
    pub fn kind(&self) -> &str {
        self.name.as_deref().unwrap_or(self.work.kind())
    }
}

/// One task of a TASK or TASKS message, or one result of a RESULT or RESULTS
/// message: its id, its attempt, and its body as read, or why it could not
/// be read. The error stays with the item because the id is still good: a
/// worker answers a task it cannot read with a `rejected` result; a sink
/// counts and drops a result it cannot read.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    /// The task's index in the batch.
    pub task: u64,
    /// 1 for the first delivery of the task.
    pub attempt: u32,
    /// The body, or why it could not be read.
    pub body: Result<T, DecodeError>,
}

/// A CREDIT: a worker thread can take `tasks` more tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// The worker process ([`WorkerInfo::id`]).
    pub worker: u64,
    /// The thread within it.
    pub thread: u16,
    /// How many more tasks it can take.
    pub tasks: u64,
    /// The thread is idle and can take *exactly* `tasks` (not `tasks` more
    /// than it was given credit for already).
    pub exact: bool,
}

/// Which form of ACK (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPart {
    /// The results written since the last ACK.
    Update,
    /// Part of the sink's whole account of the batch; `more` parts follow
    /// (0: this part ends it).
    Snapshot {
        /// Parts still to come.
        more: u64,
    },
}

/// Every zpipe message in decoded form: what [`Message::decode`] reads and
/// [`Message::frames`] writes. Roles `match` on this; nobody else reads the
/// header's bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// TASK or TASKS (ventilator → worker): tasks of `batch`.
    Tasks {
        /// The batch.
        batch: u64,
        /// One task (TASK) or several (TASKS).
        tasks: Vec<Item<TaskBody>>,
    },
    /// RESULT or RESULTS (worker → sink): results of `batch`.
    Results {
        /// The batch.
        batch: u64,
        /// One result (RESULT) or several (RESULTS).
        results: Vec<Item<ResultBody>>,
    },
    /// HELLO (worker → sink, and → ventilator in credit dispatch).
    Hello(WorkerInfo),
    /// HEARTBEAT: a worker's (with its info), or the ventilator's answer
    /// (`None`).
    Heartbeat(Option<WorkerInfo>),
    /// BYE: a worker leaving (with its info), or the ventilator telling the
    /// sink that DONE reached it (`None`).
    Bye(Option<WorkerInfo>),
    /// CREDIT (worker thread → ventilator).
    Credit(Credit),
    /// START (ventilator → sink): the batch.
    Start(BatchInfo),
    /// STATUS (sink → ventilator).
    Status(SinkStatus),
    /// GO (ventilator → sink): the first task is about to leave.
    Go {
        /// The batch.
        batch: u64,
    },
    /// ACK (sink → ventilator): results written.
    Ack {
        /// The batch.
        batch: u64,
        /// The task ids, as ranges.
        acks: Acks,
        /// An update, or part of a snapshot.
        part: AckPart,
    },
    /// DONE (sink → ventilator): the batch is complete.
    Done(BatchDone),
    /// END (sink → workers): the batch is complete.
    End {
        /// The batch.
        batch: u64,
    },
    /// KILL (anyone → workers): stop now.
    Kill {
        /// The batch (0 when it concerns none).
        batch: u64,
    },
    /// WORKER_LOST (sink → ventilator).
    WorkerLost(WorkerInfo),
    /// GIVEN_UP (ventilator → sink): the ventilator's verdict on a task.
    GivenUp {
        /// The batch.
        batch: u64,
        /// The task.
        task: u64,
        /// Its last attempt.
        attempt: u32,
        /// Why it was given up.
        reason: String,
    },
}

/// Reads a JSON payload that is a [`WorkerInfo`], or none: empty (the
/// ventilator's answer to a HEARTBEAT), `null` or `{}` (its BYE).
fn optional_info(payload: &[u8]) -> Result<Option<WorkerInfo>, DecodeError> {
    match payload.trim_ascii() {
        b"" | b"null" | b"{}" => Ok(None),
        _ => from_json(payload, "worker info").map(Some),
    }
}

/// Reads the records of a TASKS or RESULTS payload, each body with `read`.
fn items<T>(
    payload: &[u8],
    count: u64,
    read: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<Item<T>>, DecodeError> {
    Ok(split_records(payload, count)?
        .into_iter()
        .map(|r| Item {
            task: r.task,
            attempt: r.attempt,
            body: read(r.body),
        })
        .collect())
}

fn read_task(body: &[u8]) -> Result<TaskBody, DecodeError> {
    decode_named_task(body).map(|(sent_us, name, work)| TaskBody {
        sent_us,
        work,
        name,
    })
}

impl Message {
    /// Decodes a whole message (after any envelope: see
    /// [`split_envelope`]). An error says why it is to be dropped; a body
    /// of a task or result that cannot be read is not an error here but
    /// the item's (see [`Item`]).
    pub fn decode<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Result<Message, DecodeError> {
        let (h, p) = split(frames)?;
        fn one<T>(h: Header, body: Result<T, DecodeError>) -> Vec<Item<T>> {
            vec![Item {
                task: h.task,
                attempt: h.attempt,
                body,
            }]
        }
        Ok(match h.kind {
            Kind::Task => Message::Tasks {
                batch: h.batch,
                tasks: one(h, read_task(p)),
            },
            Kind::Tasks => Message::Tasks {
                batch: h.batch,
                tasks: items(p, h.task, read_task)?,
            },
            Kind::Result => Message::Results {
                batch: h.batch,
                results: one(h, decode_result(p)),
            },
            Kind::Results => Message::Results {
                batch: h.batch,
                results: items(p, h.task, decode_result)?,
            },
            Kind::Hello => Message::Hello(from_json(p, "worker info")?),
            Kind::Heartbeat => Message::Heartbeat(optional_info(p)?),
            Kind::Bye => Message::Bye(optional_info(p)?),
            Kind::Credit => {
                let (worker, thread) = decode_credit(p)?;
                Message::Credit(Credit {
                    worker,
                    thread,
                    tasks: h.task,
                    exact: h.attempt == 1,
                })
            }
            Kind::Start => Message::Start(from_json(p, "batch info")?),
            Kind::Status => Message::Status(from_json(p, "status")?),
            Kind::Go => Message::Go { batch: h.batch },
            Kind::Ack => Message::Ack {
                batch: h.batch,
                acks: Acks::decode(p)?,
                part: if h.attempt == 1 {
                    AckPart::Snapshot { more: h.task }
                } else {
                    AckPart::Update
                },
            },
            Kind::Done => Message::Done(from_json(p, "done")?),
            Kind::End => Message::End { batch: h.batch },
            Kind::Kill => Message::Kill { batch: h.batch },
            Kind::WorkerLost => Message::WorkerLost(from_json(p, "worker info")?),
            Kind::GivenUp => Message::GivenUp {
                batch: h.batch,
                task: h.task,
                attempt: h.attempt,
                reason: String::from_utf8_lossy(p).into_owned(),
            },
        })
    }

    /// The message's kind (a TASKS or RESULTS of one item is sent as TASK
    /// or RESULT).
    pub fn kind(&self) -> Kind {
        match self {
            Message::Tasks { tasks, .. } if tasks.len() == 1 => Kind::Task,
            Message::Tasks { .. } => Kind::Tasks,
            Message::Results { results, .. } if results.len() == 1 => Kind::Result,
            Message::Results { .. } => Kind::Results,
            Message::Hello(_) => Kind::Hello,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Bye(_) => Kind::Bye,
            Message::Credit(_) => Kind::Credit,
            Message::Start(_) => Kind::Start,
            Message::Status(_) => Kind::Status,
            Message::Go { .. } => Kind::Go,
            Message::Ack { .. } => Kind::Ack,
            Message::Done(_) => Kind::Done,
            Message::End { .. } => Kind::End,
            Message::Kill { .. } => Kind::Kill,
            Message::WorkerLost(_) => Kind::WorkerLost,
            Message::GivenUp { .. } => Kind::GivenUp,
        }
    }

    /// Encodes the message: the header frame, then the payload frame if
    /// its kind has one. (An item whose body is an error is written with
    /// an empty body, which reads back as an error.) The hot paths encode
    /// tasks and results into reused buffers with [`encode_task`],
    /// [`encode_record`] and [`encode_result`] instead.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let kind = self.kind();
        let mut header = Header::bare(kind, 0);
        let mut payload = Vec::new();
        fn json<T: Serialize>(v: &T) -> Vec<u8> {
            serde_json::to_vec(v).unwrap_or_default()
        }
        match self {
            Message::Tasks { batch, tasks } => {
                header.batch = *batch;
                let mut body = Vec::new();
                for t in tasks {
                    body.clear();
                    if let Ok(b) = &t.body {
                        encode_named_task(&mut body, b.sent_us, b.name.as_deref(), &b.work);
                    }
                    if let [_] = tasks[..] {
                        (header.task, header.attempt) = (t.task, t.attempt);
                        payload = body.clone();
                    } else {
                        encode_record(&mut payload, t.task, t.attempt, &body);
                    }
                }
                if tasks.len() != 1 {
                    header.task = tasks.len() as u64;
                }
            }
            Message::Results { batch, results } => {
                header.batch = *batch;
                let mut body = Vec::new();
                for r in results {
                    body.clear();
                    if let Ok(b) = &r.body {
                        encode_result(&mut body, b);
                    }
                    if let [_] = results[..] {
                        (header.task, header.attempt) = (r.task, r.attempt);
                        payload = body.clone();
                    } else {
                        encode_record(&mut payload, r.task, r.attempt, &body);
                    }
                }
                if results.len() != 1 {
                    header.task = results.len() as u64;
                }
            }
            Message::Hello(info) | Message::WorkerLost(info) => payload = json(info),
            Message::Heartbeat(info) | Message::Bye(info) => payload = json(info),
            Message::Credit(c) => {
                header.task = c.tasks;
                header.attempt = u32::from(c.exact);
                payload = encode_credit(c.worker, c.thread).to_vec();
            }
            Message::Start(info) => {
                header.batch = info.batch;
                payload = json(info);
            }
            Message::Status(s) => {
                header.batch = s.batch.unwrap_or(0);
                payload = json(s);
            }
            Message::Go { batch } | Message::End { batch } | Message::Kill { batch } => {
                header.batch = *batch
            }
            Message::Ack { batch, acks, part } => {
                header.batch = *batch;
                if let AckPart::Snapshot { more } = part {
                    (header.attempt, header.task) = (1, *more);
                }
                payload = acks.encode();
            }
            Message::Done(done) => {
                header.batch = done.batch;
                payload = json(done);
            }
            Message::GivenUp {
                batch,
                task,
                attempt,
                reason,
            } => {
                (header.batch, header.task, header.attempt) = (*batch, *task, *attempt);
                payload = reason.as_bytes().to_vec();
            }
        }
        let mut frames = vec![header.encode().to_vec()];
        if kind.has_payload() {
            frames.push(payload);
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_refusals() {
        let h = Header {
            kind: Kind::Result,
            attempt: 3,
            batch: 0xdead_beef,
            task: 42,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert_eq!(Header::decode(b""), Err(DecodeError::Empty));
        assert_eq!(Header::decode(b"0"), Err(DecodeError::NotZpipe));
        let mut v2 = h.encode();
        v2[2] = 2;
        assert_eq!(Header::decode(&v2), Err(DecodeError::Version(2)));
        let mut unknown = h.encode();
        unknown[3] = 200;
        assert_eq!(Header::decode(&unknown), Err(DecodeError::UnknownKind(200)));
        assert_eq!(
            Header::decode(&h.encode()[..10]),
            Err(DecodeError::Truncated("header"))
        );
    }

    #[test]
    fn every_kind_reads_back_from_its_byte() {
        let known: Vec<Kind> = (0..=255).filter_map(Kind::from_u8).collect();
        assert_eq!(known.len(), 17, "kinds 1 to 17");
        for (i, k) in known.iter().enumerate() {
            assert_eq!(*k as u8, i as u8 + 1, "{k:?}");
            let h = Header::bare(*k, 5);
            assert_eq!(Header::decode(&h.encode()), Ok(h));
            // Only the three signals go without a payload frame.
            let bare = matches!(k, Kind::Go | Kind::End | Kind::Kill);
            assert_eq!(k.has_payload(), !bare, "{k:?}");
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(18), None);
    }

    #[test]
    fn frame_counts_are_checked() {
        let task = Header {
            kind: Kind::Task,
            attempt: 1,
            batch: 1,
            task: 1,
        }
        .encode();
        assert!(matches!(
            split(&[&task[..]]),
            Err(DecodeError::Frames { .. })
        ));
        let end = Header::bare(Kind::End, 1).encode();
        assert!(split(&[&end[..]]).is_ok());
        assert!(matches!(
            split(&[&end[..], b"x"]),
            Err(DecodeError::Frames { .. })
        ));
    }

    #[test]
    fn task_bodies_round_trip() {
        let works = [
            Work::Noop,
            Work::Sleep { ms: 17 },
            Work::Primes { from: 10, to: 1000 },
            Work::Exec {
                command: "echo hi".into(),
                timeout_ms: Some(5),
                stdin: None,
            },
            Work::Exec {
                command: "true".into(),
                timeout_ms: None,
                stdin: None,
            },
            Work::Exec {
                command: "wc -c".into(),
                timeout_ms: Some(7),
                stdin: Some(Box::new("héllo\n".into())),
            },
            Work::Exec {
                command: String::new(),
                timeout_ms: None,
                stdin: Some(Box::default()),
            },
            Work::Data {
                data: serde_json::json!({"a": [1, 2]}),
            },
        ];
        for w in works {
            let mut buf = Vec::new();
            encode_task(&mut buf, 99, &w);
            assert_eq!(decode_task(&buf).unwrap(), (99, w.clone()));
            for cut in 0..buf.len() {
                // Every truncation is an error, never a panic (exec and data
                // may decode from a shorter, still valid, command).
                let _ = decode_task(&buf[..cut]);
            }
        }
        assert!(decode_task(&[0; 8]).is_err());
        assert!(decode_task(&[0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn named_data_tasks_carry_their_kind_and_older_readers_refuse_them() {
        let work = Work::Data {
            data: serde_json::json!({"n": 3}),
        };
        let mut buf = Vec::new();
        encode_named_task(&mut buf, 7, Some("resize"), &work);
        assert_eq!(buf[8], 5, "tag 5, apart from exec's 3 and data's 4");
        assert_eq!(
            decode_named_task(&buf).unwrap(),
            (7, Some("resize".to_string()), work.clone())
        );
        let body = read_task(&buf).unwrap();
        assert_eq!(body.kind(), "resize");
        // No name: the very bytes of a data task.
        let (mut plain, mut unnamed) = (Vec::new(), Vec::new());
        encode_task(&mut plain, 7, &work);
        encode_named_task(&mut unnamed, 7, None, &work);
        assert_eq!(plain, unnamed);
        assert_eq!(read_task(&plain).unwrap().kind(), "data");
        // A name that is no kind name, or a built-in one, is refused.
        for bad in [&b"exec"[..], b"a b", b"\xff"] {
            let mut b = 7u64.to_le_bytes().to_vec();
            b.push(5);
            b.push(bad.len() as u8);
            b.extend_from_slice(bad);
            b.extend_from_slice(b"1");
            assert!(decode_named_task(&b).is_err(), "{bad:?}");
        }
        for cut in 0..buf.len() {
            let _ = decode_named_task(&buf[..cut]);
        }
        // A worker from before tag 5 read tags 0 to 4 only: what it did with
        // tag 5 (an unknown tag) is an error, so it answers `rejected`.
        assert!(matches!(
            decode_task(&[0, 0, 0, 0, 0, 0, 0, 0, 7]),
            Err(DecodeError::Malformed(_))
        ));
        // Through TASKS, the name stays with its task.
        let m = Message::Tasks {
            batch: 1,
            tasks: vec![
                Item {
                    task: 0,
                    attempt: 1,
                    body: Ok(body.clone()),
                },
                Item {
                    task: 1,
                    attempt: 1,
                    body: Ok(body),
                },
            ],
        };
        assert_eq!(Message::decode(&m.frames()).unwrap(), m);
    }

    #[test]
    fn worker_info_says_its_kinds_and_older_info_reads_without() {
        let mut i = info();
        i.kinds = Some(vec!["A".into(), "exec".into()]);
        let json = serde_json::to_string(&i).unwrap();
        assert!(json.contains(r#""kinds":["A","exec"]"#), "{json}");
        assert_eq!(serde_json::from_str::<WorkerInfo>(&json).unwrap(), i);
        // An older worker's HELLO has no kinds: it reads as None.
        let old = r#"{"id":1,"host":"h","pid":2,"threads":1}"#;
        assert_eq!(serde_json::from_str::<WorkerInfo>(old).unwrap().kinds, None);
        // And a worker without kinds writes none.
        assert!(!serde_json::to_string(&info()).unwrap().contains("kinds"));
    }

    #[test]
    fn an_exec_task_without_stdin_keeps_its_bytes_and_one_with_stdin_has_a_tag_of_its_own() {
        let exec = |stdin: Option<&str>| {
            let mut buf = Vec::new();
            let work = Work::Exec {
                command: "wc -c".into(),
                timeout_ms: Some(9),
                stdin: stdin.map(|s| Box::new(s.to_string())),
            };
            encode_task(&mut buf, 1, &work);
            buf
        };
        // As before stdin existed: the batch id of old inputs is unchanged.
        let mut old = 1u64.to_le_bytes().to_vec();
        old.push(3);
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(b"wc -c");
        assert_eq!(exec(None), old);
        let with = exec(Some("hello"));
        assert_eq!(with[8], 6, "a tag a worker from before it does not know");
        assert!(with.ends_with(b"wc -chello"));
        // A worker that knows no tag 6 reads an error, not a command.
        let mut unknown = with.clone();
        unknown[8] = 250;
        assert!(
            matches!(decode_task(&unknown), Err(DecodeError::Malformed(m)) if m == "task tag 250")
        );
        // The command's length is checked against the body.
        let mut short = with[..9 + 8].to_vec();
        short.extend_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(b"wc");
        assert!(decode_task(&short).is_err());
    }

    #[test]
    fn result_records_round_trip() {
        let r = ResultBody {
            worker: 1,
            thread: 0,
            sent_us: 2,
            duration_us: 3,
            outcome: Outcome::ok(b"x".to_vec()),
        };
        let mut buf = Vec::new();
        encode_result_record(&mut buf, 10, 1, &r);
        encode_result_record(&mut buf, 11, 2, &r);
        let recs = split_result_records(&buf, 2).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[1].task, recs[1].attempt), (11, 2));
        assert_eq!(decode_result(recs[1].body).unwrap(), r);
        assert!(split_result_records(&buf, 3).is_err());
        for cut in 1..buf.len() {
            if cut != buf.len() / 2 {
                assert!(
                    split_result_records(&buf[..cut], 2).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn acks_round_trip_as_ranges() {
        let mut ids = vec![5, 1, 2, 3, 9, 3, 10];
        let ok = Acks::ranges(&mut ids);
        assert_eq!(ok, vec![1..4, 5..6, 9..11]);
        let acks = Acks {
            ok,
            failed: std::iter::once(20..21).collect(),
        };
        assert_eq!(Acks::decode(&acks.encode()).unwrap(), acks);
        let b = acks.encode();
        for cut in 0..b.len() {
            assert!(Acks::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut empty_range = Acks::default().encode();
        empty_range[0] = 1;
        empty_range.extend_from_slice(&[7; 8]);
        empty_range.extend_from_slice(&[7; 8]);
        assert!(Acks::decode(&empty_range).is_err());
        assert_eq!(decode_credit(&encode_credit(7, 3)).unwrap(), (7, 3));
        assert!(decode_credit(&[1; 11]).is_err());
        let frames: [&[u8]; 4] = [b"id", b"", b"h", b"p"];
        let (route, rest) = split_envelope(&frames).unwrap();
        assert_eq!((route.len(), rest.len()), (1, 2));
        assert!(split_envelope(&[b"x".as_slice()]).is_none());
    }

    #[test]
    fn result_bodies_round_trip() {
        let r = ResultBody {
            worker: 7,
            thread: 2,
            sent_us: 5,
            duration_us: 1234,
            outcome: Outcome {
                status: Status::Failed,
                exit_code: Some(-3),
                output: b"out".to_vec(),
                error: b"err".to_vec(),
            },
        };
        let mut buf = Vec::new();
        encode_result(&mut buf, &r);
        assert_eq!(buf.len(), RESULT_FIXED_LEN + 6);
        assert_eq!(decode_result(&buf).unwrap(), r);
        for cut in 0..RESULT_FIXED_LEN + 3 {
            assert!(decode_result(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[10] = 77;
        assert!(decode_result(&bad).is_err());
    }

    fn info() -> WorkerInfo {
        WorkerInfo {
            id: 9,
            host: "h".into(),
            pid: 1,
            threads: 2,
            dispatch: Dispatch::Credit,
            heartbeat_ms: 1000,
            max_msg_size: None,
            held: None,
            kinds: None,
            packs: false,
        }
    }

    #[test]
    fn every_message_round_trips_through_its_frames() {
        let body = ResultBody {
            worker: 1,
            thread: 0,
            sent_us: 2,
            duration_us: 3,
            outcome: Outcome::ok(b"x".to_vec()),
        };
        let task = |t: u64| Item {
            task: t,
            attempt: 2,
            body: Ok(TaskBody {
                sent_us: 5,
                work: Work::Sleep { ms: t },
                name: None,
            }),
        };
        let result = |t: u64| Item {
            task: t,
            attempt: 1,
            body: Ok(body.clone()),
        };
        let messages = [
            Message::Tasks {
                batch: 7,
                tasks: vec![task(3)],
            },
            Message::Tasks {
                batch: 7,
                tasks: vec![task(3), task(4), task(9)],
            },
            Message::Results {
                batch: 7,
                results: vec![result(1)],
            },
            Message::Results {
                batch: 7,
                results: vec![result(1), result(2)],
            },
            Message::Hello(info()),
            Message::Heartbeat(Some(info())),
            Message::Heartbeat(None),
            Message::Bye(Some(info())),
            Message::Bye(None),
            Message::Credit(Credit {
                worker: 4,
                thread: 3,
                tasks: 10,
                exact: true,
            }),
            Message::Start(BatchInfo {
                batch: 7,
                tasks: 100,
                expected_ms: 5,
                dispatch: Dispatch::Push,
                resync: true,
            }),
            Message::Status(SinkStatus {
                batch: Some(7),
                ready: vec![info()],
                received: 3,
                refused: None,
                instance: 11,
            }),
            Message::Go { batch: 7 },
            Message::Ack {
                batch: 7,
                acks: Acks {
                    ok: vec![0..3, 10..12],
                    failed: vec![5..6, 7..8],
                },
                part: AckPart::Update,
            },
            Message::Ack {
                batch: 7,
                acks: Acks::default(),
                part: AckPart::Snapshot { more: 2 },
            },
            Message::Done(BatchDone {
                batch: 7,
                ok: 1,
                failed: 2,
                elapsed_ms: 3.5,
                output: Some("h:/out/7.jsonl".into()),
            }),
            Message::End { batch: 7 },
            Message::Kill { batch: 0 },
            Message::WorkerLost(info()),
            Message::GivenUp {
                batch: 7,
                task: 8,
                attempt: 4,
                reason: "lost 4 times".into(),
            },
        ];
        for m in messages {
            let frames = m.frames();
            assert_eq!(Header::decode(&frames[0]).unwrap().kind, m.kind());
            assert_eq!(Message::decode(&frames).unwrap(), m, "{:?}", m.kind());
        }
    }

    #[test]
    fn a_body_that_cannot_be_read_stays_with_its_task_id() {
        let head = Header {
            kind: Kind::Task,
            attempt: 3,
            batch: 1,
            task: 42,
        }
        .encode();
        let Message::Tasks { tasks, .. } = Message::decode(&[&head[..], b"junk"]).unwrap() else {
            panic!("not tasks");
        };
        assert_eq!((tasks[0].task, tasks[0].attempt), (42, 3));
        assert!(tasks[0].body.is_err());
        // A RESULTS whose count disagrees with its records is dropped whole.
        let mut bad = Message::Results {
            batch: 1,
            results: vec![],
        }
        .frames();
        bad[0] = Header {
            kind: Kind::Results,
            attempt: 0,
            batch: 1,
            task: 2,
        }
        .encode()
        .to_vec();
        assert!(Message::decode(&bad).is_err());
        // Another role's heartbeat payload that is neither info nor null.
        let hb = Header::bare(Kind::Heartbeat, 0).encode();
        assert!(Message::decode(&[&hb[..], b"[1]"]).is_err());
        // The ventilator's answer to a HEARTBEAT has an empty payload.
        assert_eq!(
            Message::decode(&[&hb[..], b""]).unwrap(),
            Message::Heartbeat(None)
        );
    }

    #[test]
    fn the_ack_forms_follow_the_header_convention() {
        let update = Message::Ack {
            batch: 1,
            acks: Acks::default(),
            part: AckPart::Update,
        }
        .frames();
        let h = Header::decode(&update[0]).unwrap();
        assert_eq!((h.attempt, h.task), (0, 0));
        let last = Message::Ack {
            batch: 1,
            acks: Acks::default(),
            part: AckPart::Snapshot { more: 0 },
        }
        .frames();
        let h = Header::decode(&last[0]).unwrap();
        assert_eq!((h.attempt, h.task), (1, 0));
    }
}
