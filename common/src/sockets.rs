//! Socket set-up and the receive loop helpers every role uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// Settings applied to every socket a role makes.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long a closed socket may keep trying to deliver (libzmq's default,
    /// forever, would hang the exit when a peer is gone).
    pub linger: Duration,
    /// High-water mark, in messages, for both directions.
    pub hwm: i32,
    /// Largest message accepted from a peer; a larger one drops the peer's
    /// connection instead of eating memory.
    pub max_msg_size: i64,
    /// ZMTP heartbeat interval on connection-oriented transports: a dead peer
    /// is noticed even when no packet comes back. `None` leaves it off.
    pub heartbeat: Option<Duration>,
    /// Access control and encryption (see [`crate::security`]).
    pub security: Option<std::sync::Arc<crate::security::Security>>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            linger: Duration::from_millis(500),
            hwm: 1000,
            max_msg_size: 16 << 20,
            heartbeat: Some(Duration::from_secs(2)),
            security: None,
        }
    }
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Makes a socket with `tuning` applied; `name` names it in errors.
pub fn socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &str,
    tuning: &Tuning,
) -> Result<zmq::Socket, Error> {
    let fail = |e| Error::zmq(format!("setting up the {name} socket"), e);
    let s = ctx.socket(kind).map_err(fail)?;
    s.set_linger(ms(tuning.linger)).map_err(fail)?;
    s.set_sndhwm(tuning.hwm).map_err(fail)?;
    s.set_rcvhwm(tuning.hwm).map_err(fail)?;
    s.set_maxmsgsize(tuning.max_msg_size).map_err(fail)?;
    if let Some(sec) = &tuning.security {
        // Before any socket binds: a socket that needs a ZAP handler and
        // finds none lets everyone in.
        sec.start_handler(ctx)?;
    }
    if let Some(hb) = tuning.heartbeat {
        s.set_heartbeat_ivl(ms(hb)).map_err(fail)?;
        s.set_heartbeat_timeout(ms(hb * 3)).map_err(fail)?;
        s.set_heartbeat_ttl(ms(hb * 3)).map_err(fail)?;
    }
    Ok(s)
}

/// What a receive with a timeout brought.
#[derive(Debug)]
pub enum Recv<T> {
    /// A message (or, from a monitor, an event) arrived.
    Message(T),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The context is being terminated: a clean stop.
    Stopped,
}

/// Receives one whole multipart message into `frames` (reusing its buffers),
/// waiting at most `timeout`.
pub fn recv_frames(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
    timeout: Duration,
) -> Result<Recv<()>, Error> {
    // Try first: when messages are flowing this avoids a poll per message.
    match recv_frames_now(socket, frames)? {
        Recv::Timeout if !timeout.is_zero() => {}
        done => return Ok(done),
    }
    match socket.poll(zmq::POLLIN, ms(timeout) as i64) {
        Ok(0) => return Ok(Recv::Timeout),
        Ok(_) => {}
        Err(zmq::Error::ETERM) => return Ok(Recv::Stopped),
        Err(zmq::Error::EINTR) => return Ok(Recv::Timeout),
        Err(e) => return Err(Error::zmq("polling", e)),
    }
    recv_frames_now(socket, frames)
}

/// Receives one whole multipart message if one is waiting, without blocking.
pub fn recv_frames_now(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
) -> Result<Recv<()>, Error> {
    let mut n = 0;
    loop {
        if frames.len() <= n {
            frames.push(zmq::Message::new());
        }
        match socket.recv(&mut frames[n], zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if n == 0 => return Ok(Recv::Timeout),
            Err(zmq::Error::EINTR) if n == 0 => return Ok(Recv::Timeout),
            // Later frames of a multipart message are already here (ZeroMQ
            // delivers messages whole), so only an interrupted call can land
            // here: try again.
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
            Err(zmq::Error::ETERM) => return Ok(Recv::Stopped),
            Err(e) => return Err(Error::zmq("receiving", e)),
        }
        let more = frames[n].get_more();
        n += 1;
        if !more {
            break;
        }
    }
    frames.truncate(n);
    Ok(Recv::Message(()))
}

/// Sends frames as one multipart message, retrying while `keep_trying` says
/// so when the peer is at its high-water mark. Returns `Ok(false)` when it
/// gave up.
pub fn send_frames<F: AsRef<[u8]>>(
    socket: &zmq::Socket,
    frames: &[F],
    mut keep_trying: impl FnMut() -> bool,
) -> Result<bool, Error> {
    loop {
        match socket.send_multipart(frames.iter().map(|f| f.as_ref()), zmq::DONTWAIT) {
            Ok(()) => return Ok(true),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                if !keep_trying() {
                    return Ok(false);
                }
                // Wait until the socket can take a message again.
                match socket.poll(zmq::POLLOUT, 100) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(zmq::Error::ETERM) => return Ok(false),
                    Err(e) => return Err(Error::zmq("waiting to send", e)),
                }
            }
            Err(zmq::Error::ETERM) => return Ok(false),
            Err(e) => return Err(Error::zmq("sending", e)),
        }
    }
}

/// Watches a socket's handshakes through libzmq's socket monitor.
pub struct Monitor {
    /// PAIR, connected to the monitor's inproc endpoint.
    pair: zmq::Socket,
}

static MONITORS: AtomicU64 = AtomicU64::new(0);

impl Monitor {
    /// Starts monitoring successful handshakes on `socket`. Call it before
    /// `connect`, so no event is missed.
    pub fn handshakes(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<Monitor, Error> {
        Monitor::events(ctx, socket, zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32)
    }

    /// Starts monitoring connections and handshakes on `socket`: what it
    /// takes to notice a peer that connects but never completes the ZMTP
    /// handshake (a socket type that may not pair with ours).
    pub fn connections(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<Monitor, Error> {
        use zmq::SocketEvent as E;
        let mask = E::CONNECTED as i32
            | E::ACCEPTED as i32
            | E::DISCONNECTED as i32
            | E::HANDSHAKE_SUCCEEDED as i32
            | E::HANDSHAKE_FAILED_PROTOCOL as i32
            | E::HANDSHAKE_FAILED_NO_DETAIL as i32
            | E::HANDSHAKE_FAILED_AUTH as i32;
        Monitor::events(ctx, socket, mask)
    }

    fn events(ctx: &zmq::Context, socket: &zmq::Socket, mask: i32) -> Result<Monitor, Error> {
        let n = MONITORS.fetch_add(1, Ordering::Relaxed);
        let addr = format!("inproc://zpipe-monitor-{}-{n}", std::process::id());
        let fail = |e| Error::zmq("starting a socket monitor", e);
        socket.monitor(&addr, mask).map_err(fail)?;
        let pair = ctx.socket(zmq::PAIR).map_err(fail)?;
        pair.set_linger(0).map_err(fail)?;
        pair.connect(&addr).map_err(fail)?;
        Ok(Monitor { pair })
    }

    /// Stops monitoring `socket` (the one this monitor watches). libzmq
    /// sends events with a blocking send: were the reader simply dropped,
    /// the next event (a reconnect, say) would block the I/O thread that
    /// emits it, and with it every socket that thread serves. So the
    /// monitor is moved to a fresh endpoint with no events before the
    /// reader goes.
    pub fn stop(self, socket: &zmq::Socket) {
        let n = MONITORS.fetch_add(1, Ordering::Relaxed);
        let addr = format!("inproc://zpipe-monitor-{}-{n}-off", std::process::id());
        if let Err(e) = socket.monitor(&addr, 0) {
            log::warn!("cannot stop a socket monitor: {e}");
        }
        drop(self.pair);
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Result<Recv<zmq::SocketEvent>, Error> {
        Ok(match self.next(timeout)? {
            Recv::Message((event, _)) => Recv::Message(event),
            Recv::Timeout => Recv::Timeout,
            Recv::Stopped => Recv::Stopped,
        })
    }

    /// The next event with its value (a failed handshake's ZMTP error or
    /// ZAP status code, an errno, a file descriptor), waiting at most
    /// `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<Recv<(zmq::SocketEvent, u32)>, Error> {
        let mut frames = Vec::new();
        match recv_frames(&self.pair, &mut frames, timeout)? {
            Recv::Message(()) => {
                // libzmq 4: a u16 event then a u32 value, in host order.
                let event = frames.first().filter(|f| f.len() >= 6).map(|f| {
                    let event = zmq::SocketEvent::from_raw(u16::from_ne_bytes([f[0], f[1]]));
                    (event, u32::from_ne_bytes([f[2], f[3], f[4], f[5]]))
                });
                Ok(event.map_or(Recv::Timeout, Recv::Message))
            }
            Recv::Timeout => Ok(Recv::Timeout),
            Recv::Stopped => Ok(Recv::Stopped),
        }
    }

    /// Waits up to `timeout` for a ZMTP handshake to complete on any of the
    /// socket's connections: only then does a PUSH deal to that peer.
    pub fn wait_handshake(&self, timeout: Duration) -> Result<Recv<()>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Recv::Message(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) => {
                    return Ok(Recv::Message(()));
                }
                Recv::Message(_) => {}
                Recv::Timeout if left.is_zero() => return Ok(Recv::Timeout),
                Recv::Timeout => {}
                Recv::Stopped => return Ok(Recv::Stopped),
            }
        }
    }
}

/// libzmq's ZMTP protocol error: the two sides use different security
/// mechanisms (NULL, PLAIN, CURVE).
const ZMTP_MECHANISM_MISMATCH: u32 = 0x1100_0002;
/// libzmq's ZMTP protocol error: a CURVE box could not be opened.
const ZMTP_CRYPTOGRAPHIC: u32 = 0x1100_0001;

/// Says in plain words why a handshake this side started failed, from the
/// socket monitor's event and value and this socket's own `mechanism`;
/// `None` for an event that is no failure. The connecting side hears
/// little (a ZAP status code, a ZMTP error code, an errno), so the words
/// name what usually causes it, and the flag that fixes it.
pub fn handshake_refusal(
    event: zmq::SocketEvent,
    value: u32,
    mechanism: zmq::Mechanism,
) -> Option<String> {
    use zmq::Mechanism as M;
    use zmq::SocketEvent as E;
    let words = match (event, mechanism) {
        (E::HANDSHAKE_FAILED_PROTOCOL, M::ZMQ_NULL) if value == ZMTP_MECHANISM_MISMATCH => {
            "the peer requires security (CURVE or PLAIN) and this side has none: give this side the peer's public key (--curve-server-key) or a login (--login user:password)".into()
        }
        (E::HANDSHAKE_FAILED_PROTOCOL, M::ZMQ_CURVE) if value == ZMTP_MECHANISM_MISMATCH => {
            "the peer does not speak CURVE (it runs without --curve-secret, or with PLAIN): give both sides the same security flags".into()
        }
        (E::HANDSHAKE_FAILED_PROTOCOL, M::ZMQ_PLAIN) if value == ZMTP_MECHANISM_MISMATCH => {
            "the peer does not take PLAIN logins (it runs without --auth-file, or with CURVE): give both sides the same security flags".into()
        }
        (E::HANDSHAKE_FAILED_PROTOCOL, _) if value == ZMTP_CRYPTOGRAPHIC => {
            "the CURVE handshake could not be decrypted: a key does not match (--curve-server-key must be the public half of the peer's --curve-secret)".into()
        }
        (E::HANDSHAKE_FAILED_PROTOCOL, _) => format!(
            "the ZMTP handshake failed with protocol error {value:#x}: the peer is not a ZeroMQ socket this one can talk to"
        ),
        // The server could not open our HELLO box and hung up: we only
        // see the connection end.
        (E::HANDSHAKE_FAILED_NO_DETAIL, M::ZMQ_CURVE) => {
            "the peer ended the CURVE handshake without a reason: --curve-server-key is probably not the public half of the peer's --curve-secret (or this host is not in its --allow)".into()
        }
        // Without CURVE, a peer that hangs up mid-handshake is usually one
        // that turned us away, and the next attempt says so (AUTH): this
        // one says nothing worth a line.
        (E::HANDSHAKE_FAILED_NO_DETAIL, _) => return None,
        (E::HANDSHAKE_FAILED_AUTH, mechanism) => {
            let who = match mechanism {
                M::ZMQ_PLAIN => {
                    "the peer refused this side's PLAIN login (a wrong user or password in --login), or this host's address is not in the peer's --allow"
                }
                M::ZMQ_CURVE => {
                    "the peer refused this side's CURVE key (its public key is not in the peer's --curve-clients), or this host's address is not in the peer's --allow"
                }
                _ => "the peer refused this host's address: it is not in the peer's --allow",
            };
            match value {
                400 => who.to_string(),
                300 => "the peer's access check failed for now (ZAP status 300); it will be tried again".into(),
                code => format!("the peer's access check failed (ZAP status {code})"),
            }
        }
        _ => return None,
    };
    Some(words)
}

/// Logs refusals as errors naming the peer, each reason at most once a
/// minute (a refused peer is tried again ten times a second).
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// The last refusal, and when it was logged.
    last: Option<(String, Instant)>,
}

/// How often the same refusal is logged again.
const REFUSAL_EVERY: Duration = Duration::from_secs(60);

impl RefusalLog {
    /// Logs `why` unless it was the last thing said, less than a minute
    /// ago; true when it was logged.
    pub fn say(&mut self, peer: &str, why: &str) -> bool {
        let again = self
            .last
            .as_ref()
            .is_none_or(|(said, at)| said != why || at.elapsed() >= REFUSAL_EVERY);
        if again {
            log::error!("{peer} refused the connection: {why}");
            self.last = Some((why.to_string(), Instant::now()));
        }
        again
    }

    /// The last refusal logged, if any.
    pub fn last(&self) -> Option<&str> {
        self.last.as_ref().map(|(why, _)| why.as_str())
    }
}

/// The refusals a connecting socket meets, read off its monitor without
/// waiting ([`Refusals::check`]) and logged in plain words through a
/// [`RefusalLog`].
pub struct Refusals {
    monitor: Monitor,
    mechanism: zmq::Mechanism,
    /// Whom this socket talks to and where, for the log.
    peer: String,
    log: RefusalLog,
}

impl Refusals {
    /// Starts watching `socket` (call after its security is set and before
    /// it connects); `peer` names the other side and its endpoint for the
    /// log (`the sink at tcp://…`).
    pub fn new(ctx: &zmq::Context, socket: &zmq::Socket, peer: String) -> Result<Self, Error> {
        use zmq::SocketEvent as E;
        let mask = E::HANDSHAKE_FAILED_PROTOCOL as i32
            | E::HANDSHAKE_FAILED_NO_DETAIL as i32
            | E::HANDSHAKE_FAILED_AUTH as i32;
        Ok(Refusals {
            monitor: Monitor::events(ctx, socket, mask)?,
            mechanism: mechanism_of(socket)?,
            peer,
            log: RefusalLog::default(),
        })
    }

    /// Reads what happened since the last look and logs each refusal.
    pub fn check(&mut self) -> Result<(), Error> {
        while let Recv::Message((event, value)) = self.monitor.next(Duration::ZERO)? {
            if let Some(why) = handshake_refusal(event, value, self.mechanism) {
                self.log.say(&self.peer, &why);
            }
        }
        Ok(())
    }

    /// The last refusal logged, if any.
    pub fn last(&self) -> Option<&str> {
        self.log.last()
    }

    /// Stops watching (see [`Monitor::stop`]).
    pub fn stop(self, socket: &zmq::Socket) {
        self.monitor.stop(socket);
    }
}

/// The security mechanism a socket is set up with.
pub fn mechanism_of(socket: &zmq::Socket) -> Result<zmq::Mechanism, Error> {
    socket
        .get_mechanism()
        .map_err(|e| Error::zmq("reading a socket's mechanism", e))
}

/// Watches a socket for peers that connect but never complete the ZMTP
/// handshake within `grace`: libzmq drops a peer whose socket type may not
/// pair with ours without any error, so this is the only sign of it.
pub struct HandshakeWatch {
    monitor: Monitor,
    grace: Duration,
    /// When each connection still without a handshake began.
    pending: std::collections::VecDeque<Instant>,
    handshakes: u64,
}

impl HandshakeWatch {
    /// Starts watching `socket` (before it binds or connects, so no
    /// connection is missed); a connection is stalled after `grace`.
    pub fn new(ctx: &zmq::Context, socket: &zmq::Socket, grace: Duration) -> Result<Self, Error> {
        Ok(HandshakeWatch {
            monitor: Monitor::connections(ctx, socket)?,
            grace,
            pending: Default::default(),
            handshakes: 0,
        })
    }

    /// Reads the events so far; returns how many connections have waited
    /// longer than the grace period for their handshake (each counted once).
    pub fn stalled(&mut self) -> Result<usize, Error> {
        use zmq::SocketEvent as E;
        while let Recv::Message(event) = self.monitor.next_event(Duration::ZERO)? {
            match event {
                E::CONNECTED | E::ACCEPTED => self.pending.push_back(Instant::now()),
                E::HANDSHAKE_SUCCEEDED => {
                    self.handshakes += 1;
                    self.pending.pop_front();
                }
                // Refused by the ZAP handler, which logs it itself: not a
                // socket-type mismatch (that one fails as a protocol error,
                // or silently).
                E::HANDSHAKE_FAILED_AUTH => {
                    self.pending.pop_front();
                }
                _ => {}
            }
        }
        let mut n = 0;
        while self
            .pending
            .front()
            .is_some_and(|t| t.elapsed() >= self.grace)
        {
            self.pending.pop_front();
            n += 1;
        }
        Ok(n)
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Stops watching (see [`Monitor::stop`]).
    pub fn stop(self, socket: &zmq::Socket) {
        self.monitor.stop(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Endpoints};

    #[test]
    fn a_refused_handshake_is_named_by_what_this_side_uses() {
        use zmq::Mechanism as M;
        use zmq::SocketEvent as E;
        let words = |e, v, m| handshake_refusal(e, v, m).unwrap();
        let p = E::HANDSHAKE_FAILED_PROTOCOL;
        assert!(words(p, ZMTP_MECHANISM_MISMATCH, M::ZMQ_NULL).contains("--curve-server-key"));
        assert!(words(p, ZMTP_MECHANISM_MISMATCH, M::ZMQ_CURVE).contains("does not speak CURVE"));
        assert!(words(p, ZMTP_MECHANISM_MISMATCH, M::ZMQ_PLAIN).contains("PLAIN logins"));
        assert!(words(p, ZMTP_CRYPTOGRAPHIC, M::ZMQ_CURVE).contains("could not be decrypted"));
        assert!(words(p, 0x1000_0001, M::ZMQ_NULL).contains("0x10000001"));
        let n = E::HANDSHAKE_FAILED_NO_DETAIL;
        assert!(words(n, 32, M::ZMQ_CURVE).contains("--curve-server-key"));
        assert_eq!(handshake_refusal(n, 32, M::ZMQ_NULL), None);
        assert_eq!(handshake_refusal(n, 0x7fff_ffff, M::ZMQ_PLAIN), None);
        let a = E::HANDSHAKE_FAILED_AUTH;
        assert!(words(a, 400, M::ZMQ_PLAIN).contains("wrong user or password"));
        assert!(words(a, 400, M::ZMQ_CURVE).contains("--curve-clients"));
        assert!(words(a, 400, M::ZMQ_NULL).contains("not in the peer's --allow"));
        assert!(words(a, 500, M::ZMQ_NULL).contains("ZAP status 500"));
        assert_eq!(
            handshake_refusal(E::HANDSHAKE_SUCCEEDED, 0, M::ZMQ_NULL),
            None
        );
        assert_eq!(handshake_refusal(E::DISCONNECTED, 7, M::ZMQ_NULL), None);
    }

    #[test]
    fn durations_are_clamped_to_libzmqs_milliseconds() {
        assert_eq!(ms(Duration::from_micros(1500)), 1);
        assert_eq!(ms(Duration::from_secs(2)), 2000);
        assert_eq!(ms(Duration::MAX), i32::MAX);
    }

    #[test]
    fn a_send_with_no_peer_gives_up_when_told_to() {
        let ctx = zmq::Context::new();
        let push = socket(&ctx, zmq::PUSH, "push", &Tuning::default()).unwrap();
        // No peer: a PUSH has nowhere to queue, so the send would block.
        let mut asked = 0;
        let sent = send_frames(&push, &[b"x"], || {
            asked += 1;
            asked < 2
        })
        .unwrap();
        assert!(!sent);
        assert_eq!(asked, 2, "asked again after each wait");
        // And a receive with nothing waiting says so at once.
        let mut frames = Vec::new();
        let pull = socket(&ctx, zmq::PULL, "pull", &Tuning::default()).unwrap();
        assert!(matches!(
            recv_frames_now(&pull, &mut frames).unwrap(),
            Recv::Timeout
        ));
    }

    #[test]
    fn monitor_sees_the_handshake_and_frames_round_trip() {
        let ctx = zmq::Context::new();
        let t = Tuning::default();
        let pull = socket(&ctx, zmq::PULL, "pull", &t).unwrap();
        let addr = Endpoints::single("tcp://127.0.0.1:*")
            .attach(&pull, Action::Bind, "pull")
            .unwrap();
        let push = socket(&ctx, zmq::PUSH, "push", &t).unwrap();
        let mon = Monitor::handshakes(&ctx, &push).unwrap();
        assert!(matches!(
            mon.wait_handshake(Duration::from_millis(50)).unwrap(),
            Recv::Timeout
        ));
        push.connect(&addr[0]).unwrap();
        assert!(matches!(
            mon.wait_handshake(Duration::from_secs(5)).unwrap(),
            Recv::Message(())
        ));
        assert!(send_frames(&push, &[b"a".as_slice(), b"bc"], || false).unwrap());
        let mut frames = Vec::new();
        assert!(matches!(
            recv_frames(&pull, &mut frames, Duration::from_secs(5)).unwrap(),
            Recv::Message(())
        ));
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[1][..], b"bc");
        assert!(matches!(
            recv_frames(&pull, &mut frames, Duration::from_millis(20)).unwrap(),
            Recv::Timeout
        ));
    }
}
