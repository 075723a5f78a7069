//! Shared parts of zpipe's roles: endpoints, the wire protocol, socket set-up,
//! shutdown, logging and reports. No role logic lives here.
//!
//! zpipe is ZeroMQ's parallel pipeline ("Divide and Conquer" in the guide): a
//! **ventilator** binds a PUSH socket and deals tasks, **workers** connect a PULL
//! socket to it and a PUSH socket to the **sink**, which binds a PULL socket and
//! collects the results. The stable parts (ventilator, sink) bind; the dynamic
//! parts (workers) connect, so any number of workers can come and go.
//!
//! Every socket made here has a bounded linger (libzmq's default is to wait
//! forever on close, which would hang the process exit), a high-water mark and
//! a maximum message size, because every bound socket faces the network.
//!
//! # Layout
//!
//! - [`endpoint`]: `@bind` / `>connect` endpoint lists in CZMQ's convention,
//!   validated before any socket exists, and attached with clear errors.
//! - [`protocol`]: the versioned multipart wire format (header frame + payload).
//! - [`work`]: what a task asks for ([`work::Work`]) and what comes back
//!   ([`work::Outcome`]).
//! - [`sockets`]: socket set-up (linger, HWM, message size, ZMTP heartbeats),
//!   handshake monitoring, and receive helpers that treat `ETERM` as a stop.
//! - [`shutdown`]: a cloneable stop flag wired to SIGINT/SIGTERM.
//! - [`drops`]: counting and rate-limited logging of frames that are dropped.
//! - [`report`]: latency histograms and plain-text tables.
//! - [`cli`]: logging set-up and exit codes shared by the binaries.
//! - [`clock`]: a wall clock read once every few messages on hot paths.
//! - [`security`]: the ZAP handler, PLAIN and CURVE.
//! - `testing` (feature `testing`, for the crates' tests only): bounded
//!   waits, signals, free ports, a child's log read line by line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod drops;
pub mod endpoint;
mod error;
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
