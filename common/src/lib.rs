//! Shared parts of zpipe's roles: endpoints, the wire protocol, socket set-up,
//! security, shutdown, logging and reports. No role logic lives here.
//!
//! zpipe is ZeroMQ's parallel pipeline ("Divide and Conquer" in the guide): a
//! **ventilator** hands out a batch of tasks, **workers** do them, and a
//! **sink** collects the results. By default tasks go by *credit*: each worker
//! thread's DEALER tells the ventilator's ROUTER how many tasks it can take,
//! so the least busy thread gets the next one (the guide's load-balancing
//! broker); `--dispatch push` is the guide's own PUSH → PULL round-robin.
//! Results go from each worker's PUSH to the sink's PULL; the sink publishes
//! END on a PUB to the workers' SUB. The ventilator's DEALER and the sink's
//! ROUTER keep each other in step on the feedback link (START, STATUS, GO,
//! ACK, WORKER_LOST, GIVEN_UP, DONE). The stable parts (ventilator, sink)
//! bind; the dynamic parts (workers) connect, so any number of workers can
//! come and go.
//!
//! Every socket made by [`sockets::socket`] has a bounded linger (libzmq's
//! default is to wait forever on close, which would hang the process exit), a
//! high-water mark and a maximum message size, because every bound socket
//! faces the network.
//!
//! # Layout
//!
//! - [`endpoint`]: `@bind` / `>connect` endpoint lists in CZMQ's convention,
//!   validated before any socket exists, and attached with clear errors.
//! - [`protocol`]: the versioned multipart wire format (header frame +
//!   payload), the one place it is written down: every kind, the ACK
//!   update/snapshot convention, GIVEN_UP; every message decoded once into
//!   [`protocol::Message`], which the roles `match` on.
//! - [`work`]: what a task asks for ([`work::Work`]) and what comes back
//!   ([`work::Outcome`]).
//! - [`kinds`]: task kinds: the names, `--kinds` lists, which worker
//!   serves which kind, and how a data task names a kind of its own.
//! - [`sockets`]: socket set-up (linger, HWM, message size, ZMTP heartbeats),
//!   handshake monitoring, and receive helpers that treat `ETERM` as a stop.
//! - [`security`]: the `--allow`, PLAIN and CURVE flags, and the ZAP handler
//!   that carries them out.
//! - [`shutdown`]: a cloneable stop flag wired to SIGINT/SIGTERM.
//! - [`drops`]: counting and rate-limited logging of messages that are dropped.
//! - [`clock`]: [`clock::Coarse`], a wall clock read once every few messages
//!   on hot paths.
//! - [`report`]: latency histograms, plain-text tables, and
//!   [`report::write_json_file`], the one way a report file is written.
//! - [`metrics`]: `--metrics ADDR` ([`metrics::MetricsArgs`]): the
//!   Prometheus registry, the HTTP server that exports it on a thread of
//!   its own, stopped with the role, and what the roles' metrics share
//!   (drops by reason, time buckets, counters that follow a loop's count).
//! - [`cli`]: logging set-up, exit codes, durations and the socket flags
//!   ([`cli::SocketArgs`]) shared by the binaries.
//! - `testing` (feature `testing`, which only dev-dependencies turn on):
//!   bounded waits, signals, free ports, a child's log read line by line.
//! - Here: the crate's [`Error`], [`now_micros`] (timestamps carried on the
//!   wire) and [`hostname`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod drops;
pub mod endpoint;
mod error;
pub mod kinds;
pub mod metrics;
pub mod protocol;
pub mod report;
pub mod security;
pub mod shutdown;
pub mod sockets;
#[cfg(feature = "testing")]
pub mod testing;
pub mod work;

pub use endpoint::{Action, Endpoint, Endpoints};
pub use error::Error;
pub use shutdown::Shutdown;

/// Microseconds since the Unix epoch, for timestamps carried on the wire.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// This host's name, for worker announcements and reports.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
