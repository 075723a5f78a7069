//! How a thread waits for the ventilator: the ZMTP handshake on its task
//! socket, seen through libzmq's socket monitor.
//!
//! A PUSH deals only to peers whose handshake is complete (the slow joiner),
//! so a thread says it is ready only then. And a peer whose socket type may
//! not pair with ours (a push ventilator's PUSH against our DEALER, a credit
//! ventilator's ROUTER against our PULL) connects and is then dropped
//! without any error: a connection that never completes its handshake within
//! [`GRACE`] is the only sign, and the worker says so in words.
//!
//! A handshake the peer refuses (security that does not match, a login or
//! an address turned away) is no stall: the monitor names it, and
//! `common::sockets::handshake_refusal` puts it in words for the log.
//!
//! The thread blocks on the monitor's events (each wait bounded by 100 ms,
//! for the stop flag, and by the moment the oldest connection runs out of
//! grace), so it is ready the moment the handshake completes.
//!
//! `common::sockets::HandshakeWatch` keeps the same account but can only be
//! read without waiting, which would leave a sleep between looks; so the
//! account is kept here, over `common::sockets::Monitor`'s blocking
//! `next_event`, as the pure type [`Handshakes`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::Shutdown;
use common::sockets::{Monitor, Recv};
use zmq::SocketEvent;

/// How long a connection may wait for its handshake before the worker says
/// the peer cannot pair with it.
pub(crate) const GRACE: Duration = Duration::from_secs(3);
/// The longest wait without looking at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The connections of one socket still waiting for their handshake, as the
/// monitor tells of them.
#[derive(Debug)]
pub(crate) struct Handshakes {
    /// When each connection still without a handshake began, oldest first.
    pending: VecDeque<Instant>,
    grace: Duration,
}

impl Handshakes {
    /// No connection yet; each may wait `grace` for its handshake.
    pub fn new(grace: Duration) -> Handshakes {
        Handshakes {
            pending: VecDeque::new(),
            grace,
        }
    }

    /// Takes one monitor event seen at `now`: true when it is a completed
    /// handshake. A failed one (refused, or security that does not match)
    /// is not waited for any longer: it is no socket-type mismatch, which
    /// fails without any event.
    pub fn on_event(&mut self, event: SocketEvent, now: Instant) -> bool {
        match event {
            SocketEvent::CONNECTED | SocketEvent::ACCEPTED => self.pending.push_back(now),
            SocketEvent::HANDSHAKE_SUCCEEDED => {
                self.pending.pop_front();
                return true;
            }
            SocketEvent::HANDSHAKE_FAILED_AUTH
            | SocketEvent::HANDSHAKE_FAILED_PROTOCOL
            | SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => {
                self.pending.pop_front();
            }
            _ => {}
        }
        false
    }

    /// How many connections have waited longer than the grace period by
    /// `now` (each counted once).
    pub fn stalled(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self
            .pending
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.grace)
        {
            self.pending.pop_front();
            n += 1;
        }
        n
    }

    /// When the oldest waiting connection runs out of grace.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|t| *t + self.grace)
    }
}

/// What [`wait`] calls as it waits.
pub(crate) struct Watchers<S, R, M> {
    /// A connection waited longer than the grace period.
    pub stalled: S,
    /// The peer refused a handshake: why, in words.
    pub refused: R,
    /// At every look: a chance to read other sockets' monitors.
    pub meanwhile: M,
}

/// Waits until the socket `monitor` watches (with
/// [`Monitor::connections`]) completes a handshake: true; false when `stop`
/// is raised or the context ends first. Calls `stalled` whenever
/// connections have waited longer than `grace`, `refused` with the reason
/// in words whenever the peer refuses a handshake (`mechanism` is this
/// socket's), and `meanwhile` at every look (for other sockets' refusals).
pub(crate) fn wait(
    monitor: &Monitor,
    grace: Duration,
    stop: &Shutdown,
    mechanism: zmq::Mechanism,
    mut on: Watchers<impl FnMut(), impl FnMut(&str), impl FnMut()>,
) -> Result<bool, common::Error> {
    let mut handshakes = Handshakes::new(grace);
    loop {
        if stop.is_triggered() {
            return Ok(false);
        }
        let now = Instant::now();
        if handshakes.stalled(now) > 0 {
            (on.stalled)();
        }
        (on.meanwhile)();
        // The poll's timeout is in whole milliseconds: wake just after the
        // deadline rather than just before it.
        let timeout = handshakes.next_deadline().map_or(STOP_POLL, |at| {
            (at.saturating_duration_since(now) + Duration::from_millis(1)).min(STOP_POLL)
        });
        match monitor.next(timeout)? {
            Recv::Message((event, value)) => {
                if let Some(why) = common::sockets::handshake_refusal(event, value, mechanism) {
                    (on.refused)(&why);
                }
                if handshakes.on_event(event, Instant::now()) {
                    return Ok(true);
                }
            }
            Recv::Timeout => {}
            Recv::Stopped => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_handshake_ends_the_wait() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(3 * S);
        assert_eq!(h.next_deadline(), None);
        assert!(!h.on_event(SocketEvent::CONNECTED, t0));
        assert_eq!(h.next_deadline(), Some(t0 + 3 * S));
        assert!(h.on_event(SocketEvent::HANDSHAKE_SUCCEEDED, t0 + S));
        assert_eq!(h.stalled(t0 + 10 * S), 0);
    }

    #[test]
    fn a_connection_without_a_handshake_stalls_once() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(3 * S);
        h.on_event(SocketEvent::CONNECTED, t0);
        h.on_event(SocketEvent::CONNECTED, t0 + S);
        assert_eq!(h.stalled(t0 + 2 * S), 0);
        assert_eq!(h.stalled(t0 + 3 * S), 1);
        assert_eq!(h.stalled(t0 + 3 * S), 0, "counted once");
        assert_eq!(h.next_deadline(), Some(t0 + 4 * S));
        assert_eq!(h.stalled(t0 + 4 * S), 1);
        assert_eq!(h.next_deadline(), None);
        // Other events change nothing.
        assert!(!h.on_event(SocketEvent::DISCONNECTED, t0 + 5 * S));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_refused_handshake_is_not_a_stall() {
        let t0 = Instant::now();
        for failed in [
            SocketEvent::HANDSHAKE_FAILED_AUTH,
            SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
            SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
        ] {
            let mut h = Handshakes::new(3 * S);
            h.on_event(SocketEvent::CONNECTED, t0);
            assert!(!h.on_event(failed, t0 + S));
            assert_eq!(h.stalled(t0 + 10 * S), 0, "{failed:?}");
        }
    }
}
