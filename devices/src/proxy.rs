//! The proxy loop behind every device: our own, not `zmq_proxy_steerable`.
//!
//! libzmq 4.3.4's steerable proxy aborts the process on an unknown control
//! command and 4.3.5 swaps PAUSE and RESUME, so zpipe polls the sockets itself:
//! it forwards whole multipart messages in both directions, reads a message
//! from one side only while the other side can take it (so a full PUSH or
//! DEALER pushes back upstream instead of dropping), copies every message to
//! the capture socket, counts messages and bytes per side, and answers
//! commands on the control socket.
//!
//! **Control** (a REP socket): `PAUSE` stops forwarding (messages wait in the
//! sockets' queues up to their high-water marks), `RESUME` starts again,
//! `TERMINATE` ends the device, `STATISTICS` answers with eight frames of
//! little-endian u64, as libzmq's proxy does: frontend messages in, bytes in,
//! messages out, bytes out, then the same for the backend. Anything else is
//! answered `ERROR unknown command` and changes nothing.

use std::time::{Duration, Instant};

use common::Shutdown;
use serde::Serialize;

use crate::Error;

/// Traffic through one side of a device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SideStats {
    /// Whole messages received on this side (a multipart message counts once).
    pub msgs_in: u64,
    /// Bytes received on this side.
    pub bytes_in: u64,
    /// Whole messages sent on this side.
    pub msgs_out: u64,
    /// Bytes sent on this side.
    pub bytes_out: u64,
}

/// Traffic through a device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The frontend's traffic.
    pub frontend: SideStats,
    /// The backend's traffic.
    pub backend: SideStats,
}

impl Stats {
    /// The eight u64 of a STATISTICS reply, in libzmq's order.
    pub fn to_frames(&self) -> [[u8; 8]; 8] {
        let f = &self.frontend;
        let b = &self.backend;
        [
            f.msgs_in,
            f.bytes_in,
            f.msgs_out,
            f.bytes_out,
            b.msgs_in,
            b.bytes_in,
            b.msgs_out,
            b.bytes_out,
        ]
        .map(u64::to_le_bytes)
    }

    /// Reads a STATISTICS reply.
    pub fn from_frames(frames: &[Vec<u8>]) -> Option<Stats> {
        if frames.len() != 8 {
            return None;
        }
        let mut v = [0u64; 8];
        for (slot, f) in v.iter_mut().zip(frames) {
            *slot = u64::from_le_bytes(f.as_slice().try_into().ok()?);
        }
        Some(Stats {
            frontend: SideStats {
                msgs_in: v[0],
                bytes_in: v[1],
                msgs_out: v[2],
                bytes_out: v[3],
            },
            backend: SideStats {
                msgs_in: v[4],
                bytes_in: v[5],
                msgs_out: v[6],
                bytes_out: v[7],
            },
        })
    }
}

/// The sockets of a running device.
pub(crate) struct Sockets<'a> {
    pub frontend: &'a zmq::Socket,
    pub backend: &'a zmq::Socket,
    /// PUB: a copy of every message, both directions.
    pub capture: Option<&'a zmq::Socket>,
    /// REP: PAUSE, RESUME, TERMINATE, STATISTICS.
    pub control: Option<&'a zmq::Socket>,
}

/// At most this many messages move in one direction before the loop looks
/// at the other direction and the control socket again.
const BURST: usize = 1000;

/// Runs until TERMINATE or `shutdown`. Forwards backend → frontend too when
/// `both_ways` (replies through a queue, subscriptions through a forwarder).
/// Logs statistics every `stats_every`, and copies them into `metrics`
/// (`--metrics`) once a pass.
pub(crate) fn run(
    name: &str,
    s: Sockets<'_>,
    both_ways: bool,
    shutdown: &Shutdown,
    stats_every: Duration,
    mut metrics: Option<&mut crate::metrics::Metrics>,
) -> Result<Stats, Error> {
    let mut stats = Stats::default();
    let mut paused = false;
    let mut parts: Vec<zmq::Message> = Vec::new();
    let mut next_log = Instant::now() + stats_every;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let wait = next_log
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        {
            let mut items = vec![
                s.frontend.as_poll_item(if paused {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLIN
                }),
                s.backend.as_poll_item(if paused || !both_ways {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLIN
                }),
            ];
            if let Some(c) = s.control {
                items.push(c.as_poll_item(zmq::POLLIN));
            }
            match zmq::poll(&mut items, wait.as_millis() as i64) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(zmq::Error::ETERM) => break,
                Err(e) => return Err(Error::zmq("polling", e)),
            }
        }
        if !paused {
            forward(
                s.frontend,
                s.backend,
                s.capture,
                &mut parts,
                &mut stats.frontend,
                &mut stats.backend,
            )?;
            if both_ways {
                forward(
                    s.backend,
                    s.frontend,
                    s.capture,
                    &mut parts,
                    &mut stats.backend,
                    &mut stats.frontend,
                )?;
            }
        }
        if let Some(m) = metrics.as_deref_mut() {
            m.update(&stats, paused);
        }
        if let Some(control) = s.control {
            match command(control, &mut paused, &stats)? {
                Command::Terminate => {
                    log::info!("{name}: TERMINATE received");
                    break;
                }
                Command::Continue => {}
            }
        }
        if Instant::now() >= next_log {
            log::info!(
                "{name}: frontend {} msgs / {} B in, {} msgs / {} B out; backend {} msgs / {} B in, {} msgs / {} B out{}",
                stats.frontend.msgs_in,
                stats.frontend.bytes_in,
                stats.frontend.msgs_out,
                stats.frontend.bytes_out,
                stats.backend.msgs_in,
                stats.backend.bytes_in,
                stats.backend.msgs_out,
                stats.backend.bytes_out,
                if paused { " (paused)" } else { "" }
            );
            next_log = Instant::now() + stats_every;
        }
    }
    Ok(stats)
}

/// Whether `socket` can take a message now without blocking.
fn writable(socket: &zmq::Socket) -> Result<bool, Error> {
    match socket.get_events() {
        Ok(ev) => Ok(ev.contains(zmq::POLLOUT)),
        Err(zmq::Error::ETERM) => Ok(false),
        Err(e) => Err(Error::zmq("reading socket events", e)),
    }
}

/// Moves up to [`BURST`] whole messages from `from` to `to`, while `to` can
/// take them.
fn forward(
    from: &zmq::Socket,
    to: &zmq::Socket,
    capture: Option<&zmq::Socket>,
    parts: &mut Vec<zmq::Message>,
    from_stats: &mut SideStats,
    to_stats: &mut SideStats,
) -> Result<(), Error> {
    for _ in 0..BURST {
        if !writable(to)? {
            return Ok(());
        }
        match common::sockets::recv_frames_now(from, parts).map_err(Error::Common)? {
            common::sockets::Recv::Message(()) => {}
            _ => return Ok(()),
        }
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        from_stats.msgs_in += 1;
        from_stats.bytes_in += bytes;
        if let Some(cap) = capture {
            let last = parts.len() - 1;
            for (i, p) in parts.iter().enumerate() {
                // A capture subscriber that is slow loses copies, never the
                // device its pace.
                let _ = cap.send(
                    &p[..],
                    if i < last {
                        zmq::SNDMORE | zmq::DONTWAIT
                    } else {
                        zmq::DONTWAIT
                    },
                );
            }
        }
        let last = parts.len() - 1;
        for (i, p) in parts.drain(..).enumerate() {
            // The destination was writable, so the first frame is taken and,
            // ZeroMQ's multipart messages being atomic, so are the rest.
            match to.send(p, if i < last { zmq::SNDMORE } else { 0 }) {
                Ok(()) => {}
                // A ROUTER drops a message for a peer that is gone: fine.
                Err(zmq::Error::EHOSTUNREACH) => {}
                Err(zmq::Error::ETERM) => return Ok(()),
                Err(e) => return Err(Error::zmq("forwarding", e)),
            }
        }
        to_stats.msgs_out += 1;
        to_stats.bytes_out += bytes;
    }
    Ok(())
}

enum Command {
    Continue,
    Terminate,
}

/// Answers at most one control command.
fn command(control: &zmq::Socket, paused: &mut bool, stats: &Stats) -> Result<Command, Error> {
    let frames = match control.recv_multipart(zmq::DONTWAIT) {
        Ok(f) => f,
        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(Command::Continue),
        Err(zmq::Error::ETERM) => return Ok(Command::Terminate),
        Err(e) => return Err(Error::zmq("reading a control command", e)),
    };
    let text = if frames.len() == 1 {
        std::str::from_utf8(&frames[0]).ok()
    } else {
        None
    };
    let reply = |parts: &[&[u8]]| {
        // A REP must answer before it can read again.
        let _ = control.send_multipart(parts, zmq::DONTWAIT);
    };
    match text.map(str::trim) {
        Some("PAUSE") => {
            *paused = true;
            reply(&[b"OK"]);
        }
        Some("RESUME") => {
            *paused = false;
            reply(&[b"OK"]);
        }
        Some("TERMINATE") => {
            reply(&[b"OK"]);
            return Ok(Command::Terminate);
        }
        Some("STATISTICS") => {
            let frames = stats.to_frames();
            let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            reply(&parts);
        }
        _ => {
            log::warn!(
                "control: unknown command {:?} refused",
                String::from_utf8_lossy(&frames.concat())
                    .chars()
                    .take(40)
                    .collect::<String>()
            );
            reply(&[b"ERROR unknown command: expected PAUSE, RESUME, TERMINATE or STATISTICS"]);
        }
    }
    Ok(Command::Continue)
}
