//! Which ZeroMQ socket types may talk to each other, and why.
//!
//! Two sockets connect only if their types belong to the same pattern. libzmq
//! checks this during the ZMTP handshake (`mechanism_t::check_socket_type`):
//! a mismatched peer is dropped silently, with no error at bind, connect or
//! send and no reconnect, so the sender queues messages up to its high-water
//! mark and then blocks. Over `inproc://` the check is not made at all.
//! STREAM speaks raw TCP, not ZMTP: only another STREAM (or a plain TCP
//! program) understands it.
//!
//! ```
//! use devices::pairs::{compatible, SocketKind::*};
//! assert!(compatible(Push, Pull));
//! assert!(compatible(Dealer, Router));
//! assert!(!compatible(Push, Sub));
//! assert!(!compatible(Req, Req));
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::Error;

/// The socket types of libzmq's stable API, each variant the type of its
/// name (undocumented one by one: a variant's doc would become its help
/// text in `devices pairs --try`).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum SocketKind {
    Pair,
    Pub,
    Sub,
    Xpub,
    Xsub,
    Req,
    Rep,
    Dealer,
    Router,
    Push,
    Pull,
    Stream,
}

use SocketKind::*;

/// Every type, in the guide's order.
pub const ALL: [SocketKind; 12] = [
    Pair, Pub, Sub, Xpub, Xsub, Req, Rep, Dealer, Router, Push, Pull, Stream,
];

impl SocketKind {
    /// The `zmq` crate's socket type.
    pub fn zmq(self) -> zmq::SocketType {
        match self {
            Pair => zmq::PAIR,
            Pub => zmq::PUB,
            Sub => zmq::SUB,
            Xpub => zmq::XPUB,
            Xsub => zmq::XSUB,
            Req => zmq::REQ,
            Rep => zmq::REP,
            Dealer => zmq::DEALER,
            Router => zmq::ROUTER,
            Push => zmq::PUSH,
            Pull => zmq::PULL,
            Stream => zmq::STREAM,
        }
    }

    /// The type's name as libzmq's docs write it.
    pub fn name(self) -> &'static str {
        match self {
            Pair => "PAIR",
            Pub => "PUB",
            Sub => "SUB",
            Xpub => "XPUB",
            Xsub => "XSUB",
            Req => "REQ",
            Rep => "REP",
            Dealer => "DEALER",
            Router => "ROUTER",
            Push => "PUSH",
            Pull => "PULL",
            Stream => "STREAM",
        }
    }

    /// The peers this type accepts, and what it is for, in one line.
    pub fn accepts(self) -> &'static str {
        match self {
            Pair => "PAIR talks only to one other PAIR (exclusive pair)",
            Pub => "PUB sends only to subscribers (SUB, XSUB)",
            Xpub => "XPUB sends only to subscribers (SUB, XSUB)",
            Sub => "SUB hears only publishers (PUB, XPUB)",
            Xsub => "XSUB hears only publishers (PUB, XPUB)",
            Req => "REQ needs something that replies (REP, ROUTER)",
            Rep => "REP answers only requesters (REQ, DEALER)",
            Dealer => "DEALER talks to REP, DEALER and ROUTER",
            Router => "ROUTER talks to REQ, DEALER and ROUTER",
            Push => "PUSH deals only to PULL (pipeline)",
            Pull => "PULL takes only from PUSH (pipeline)",
            Stream => {
                "STREAM speaks raw TCP, not ZMTP; a ZMTP peer waits for a greeting that never comes"
            }
        }
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `a` and `b` can talk, whichever binds: libzmq's
/// `check_socket_type`, plus STREAM with STREAM (raw TCP on both ends).
pub fn compatible(a: SocketKind, b: SocketKind) -> bool {
    pattern(a, b).is_some()
}

/// The pattern a valid pair belongs to.
pub fn pattern(a: SocketKind, b: SocketKind) -> Option<&'static str> {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    Some(match (x, y) {
        (Pair, Pair) => "exclusive pair",
        (Pub, Sub) | (Pub, Xsub) | (Sub, Xpub) | (Xpub, Xsub) => "publish-subscribe",
        (Req, Rep) | (Req, Router) => "request-reply",
        (Rep, Dealer) | (Dealer, Dealer) | (Dealer, Router) | (Router, Router) => {
            "request-reply (asynchronous)"
        }
        (Push, Pull) => "pipeline",
        (Stream, Stream) => "raw TCP (not ZMTP)",
        _ => return None,
    })
}

/// Why an invalid pair is refused, in one line.
pub fn why_not(a: SocketKind, b: SocketKind) -> String {
    if a == Stream || b == Stream {
        return format!("{} × {}: {}", a, b, Stream.accepts());
    }
    format!(
        "{a} × {b}: {}; the ZMTP handshake drops the connection",
        a.accepts()
    )
}

/// The matrix, the valid pairs with their patterns, and one line for each
/// refused pair.
pub fn table() -> String {
    let mut s =
        String::from("Which socket types may be paired (either side may bind):\n\n        ");
    for b in ALL {
        s.push_str(&format!("{:>7}", b.name()));
    }
    s.push('\n');
    for a in ALL {
        s.push_str(&format!("{:>7} ", a.name()));
        for b in ALL {
            s.push_str(if compatible(a, b) {
                "      ✓"
            } else {
                "      ·"
            });
        }
        s.push('\n');
    }
    s.push_str("\nValid pairs:\n");
    for (i, a) in ALL.iter().enumerate() {
        for b in &ALL[i..] {
            if let Some(p) = pattern(*a, *b) {
                s.push_str(&format!("  {:<16} {p}\n", format!("{a} – {b}")));
            }
        }
    }
    s.push_str("\nRefused pairs (over tcp:// and ipc://; inproc:// does not check types):\n");
    for (i, a) in ALL.iter().enumerate() {
        for b in &ALL[i..] {
            if !compatible(*a, *b) {
                s.push_str(&format!("  {}\n", why_not(*a, *b)));
            }
        }
    }
    s
}

/// What happened when two sockets were tried live.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The socket that binds.
    pub bind: SocketKind,
    /// The socket that connects to it.
    pub connect: SocketKind,
    /// The endpoint used.
    pub endpoint: String,
    /// Both sides completed the ZMTP handshake (for STREAM: bytes crossed).
    pub connected: bool,
    /// A message went from one side to the other.
    pub exchanged: bool,
    /// What was done and seen, step by step.
    pub transcript: Vec<String>,
}

/// How long a trial waits for a handshake that may never come.
pub const HANDSHAKE_WAIT: Duration = Duration::from_millis(1000);

/// Tries `bind` (bound to `endpoint`, e.g. `tcp://127.0.0.1:*`) against
/// `connect` (connected to it), live: watches both handshakes, then moves a
/// message if the pair is valid, or shows what a sender meets if it is not.
pub fn try_pair(
    ctx: &zmq::Context,
    bind: SocketKind,
    connect: SocketKind,
    endpoint: &str,
) -> Result<Trial, Error> {
    let z = |what: &str| {
        let what = what.to_string();
        move |e| Error::zmq(what.clone(), e)
    };
    let a = ctx
        .socket(bind.zmq())
        .map_err(z("making the bound socket"))?;
    let b = ctx
        .socket(connect.zmq())
        .map_err(z("making the connecting socket"))?;
    for s in [&a, &b] {
        s.set_linger(0).map_err(z("setting linger"))?;
        s.set_sndhwm(10).map_err(z("setting the high-water mark"))?;
        s.set_rcvtimeo(1000)
            .map_err(z("setting a receive timeout"))?;
    }
    if connect == Router {
        // So that a bound ROUTER can address its ROUTER peer.
        b.set_identity(b"peer")
            .map_err(z("setting the routing id"))?;
    }
    let inproc = endpoint.starts_with("inproc://");
    let (ma, mb) = if inproc {
        (None, None)
    } else {
        (
            Some(common::sockets::Monitor::handshakes(ctx, &a).map_err(Error::Common)?),
            Some(common::sockets::Monitor::handshakes(ctx, &b).map_err(Error::Common)?),
        )
    };
    a.bind(endpoint).map_err(z("binding"))?;
    let at = a
        .get_last_endpoint()
        .map_err(z("reading the endpoint"))?
        .unwrap_or_else(|_| endpoint.to_string());
    b.connect(&at).map_err(z("connecting"))?;
    let mut t = Trial {
        bind,
        connect,
        endpoint: at.clone(),
        connected: false,
        exchanged: false,
        transcript: Vec::new(),
    };
    t.transcript
        .push(format!("{bind} binds {at}; {connect} connects to it"));

    if bind == Stream || connect == Stream {
        stream_trial(&a, &b, &mut t)?;
        return Ok(t);
    }
    if inproc {
        t.connected = true;
        t.transcript
            .push("inproc:// makes no ZMTP handshake, so no type check happens".into());
    } else {
        let seen = |m: &Option<common::sockets::Monitor>, wait| -> Result<bool, Error> {
            Ok(matches!(
                m.as_ref()
                    .map(|m| m.wait_handshake(wait))
                    .transpose()
                    .map_err(Error::Common)?,
                Some(common::sockets::Recv::Message(()))
            ))
        };
        let ha = seen(&ma, HANDSHAKE_WAIT)?;
        // Both sides finish together; no need to wait long for the second.
        let hb = seen(
            &mb,
            if ha {
                HANDSHAKE_WAIT
            } else {
                Duration::from_millis(50)
            },
        )?;
        t.connected = ha && hb;
        t.transcript.push(if t.connected {
            "ZMTP handshake completed on both sides".into()
        } else {
            format!("no ZMTP handshake within {HANDSHAKE_WAIT:?}: libzmq dropped the connection silently (no error at bind, connect or send)")
        });
    }
    if t.connected {
        exchange(&a, &b, &mut t)?;
    } else {
        show_sender(&a, &b, &mut t);
    }
    Ok(t)
}

/// Frames as text where they are printable, in hex where not (routing ids).
fn show(frames: &[Vec<u8>]) -> String {
    let parts: Vec<String> = frames
        .iter()
        .map(|f| match std::str::from_utf8(f) {
            Ok(text) if !text.chars().any(char::is_control) || f.is_empty() => format!("{text:?}"),
            _ => format!(
                "0x{}",
                f.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Moves one message across a connected pair, the way its pattern allows.
fn exchange(a: &zmq::Socket, b: &zmq::Socket, t: &mut Trial) -> Result<(), Error> {
    let (bind, connect) = (t.bind, t.connect);
    let is_pub = |k| matches!(k, Pub | Xpub);
    let is_sub = |k| matches!(k, Sub | Xsub);
    // Who speaks first: the publisher, the pusher, the requester.
    let a_sends = is_pub(bind)
        || bind == Push
        || bind == Req
        || (bind == Dealer && matches!(connect, Rep | Router))
        || (bind == Router && connect == Router);
    let (tx, rx, tx_kind, rx_kind) = if a_sends {
        (a, b, bind, connect)
    } else {
        (b, a, connect, bind)
    };
    if is_sub(rx_kind) {
        if rx_kind == Sub {
            rx.set_subscribe(b"")
                .map_err(|e| Error::zmq("subscribing", e))?;
        } else {
            rx.send(&b"\x01"[..], 0)
                .map_err(|e| Error::zmq("subscribing", e))?;
        }
        t.transcript
            .push(format!("{rx_kind} subscribes to everything"));
        if tx_kind == Xpub {
            if let Ok(sub) = tx.recv_multipart(0) {
                t.transcript
                    .push(format!("XPUB receives the subscription {}", show(&sub)));
            }
        }
    }
    let mut message: Vec<Vec<u8>> = vec![b"hello".to_vec()];
    if tx_kind == Dealer && rx_kind == Rep {
        // A DEALER talking to a REP writes the envelope's empty delimiter
        // itself, as a REQ would.
        message.insert(0, Vec::new());
    }
    if tx_kind == Router {
        message.insert(0, b"peer".to_vec());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sends = 0;
    loop {
        tx.send_multipart(&message, zmq::DONTWAIT)
            .map_err(|e| Error::zmq("sending", e))?;
        sends += 1;
        // A subscription takes a moment to reach the publisher: until then it
        // drops what it sends, so keep sending.
        match rx.poll(zmq::POLLIN, 100) {
            Ok(n) if n > 0 => break,
            _ if Instant::now() < deadline && is_pub(tx_kind) => continue,
            _ => {
                t.transcript.push(format!(
                    "{tx_kind} sends {}; {rx_kind} receives nothing",
                    show(&message)
                ));
                return Ok(());
            }
        }
    }
    let dropped = if sends > 1 {
        format!(" {sends} times (a publisher drops messages until the subscription reaches it)")
    } else {
        String::new()
    };
    t.transcript
        .push(format!("{tx_kind} sends {}{dropped}", show(&message)));
    let got = match rx.recv_multipart(zmq::DONTWAIT) {
        Ok(got) => got,
        Err(e) => {
            t.transcript
                .push(format!("{rx_kind} could not receive: {e}"));
            return Ok(());
        }
    };
    t.exchanged = got.last().is_some_and(|f| f == b"hello");
    let note = match rx_kind {
        Router => " (a ROUTER puts the sender's routing id first)",
        Rep => " (a REP strips the envelope before handing over the body)",
        _ if tx_kind == Req => " (a REQ adds an empty delimiter frame)",
        _ => "",
    };
    t.transcript
        .push(format!("{rx_kind} receives {}{note}", show(&got)));
    Ok(())
}

/// For a pair that did not connect: what does a sender meet?
fn show_sender(a: &zmq::Socket, b: &zmq::Socket, t: &mut Trial) {
    for (s, kind, side) in [(b, t.connect, "connecting"), (a, t.bind, "bound")] {
        if matches!(kind, Sub | Pull | Rep) {
            continue;
        }
        let mut queued = 0;
        let outcome = loop {
            let parts: Vec<&[u8]> = if kind == Router {
                vec![b"peer", b"hello"]
            } else {
                vec![b"hello"]
            };
            match s.send_multipart(parts, zmq::DONTWAIT) {
                Ok(()) if queued >= 50 => {
                    break "every send succeeded, and every message was dropped: nobody is there"
                        .to_string();
                }
                Ok(()) => queued += 1,
                Err(zmq::Error::EAGAIN) => {
                    break format!(
                        "queued {queued} message(s) then blocked (EAGAIN): a blocking send would wait forever"
                    );
                }
                Err(zmq::Error::EHOSTUNREACH) => break "the peer is unknown (EHOSTUNREACH)".into(),
                Err(zmq::Error::EFSM) if kind == Req => {
                    break format!(
                        "queued its {queued} request, then must wait for a reply that never comes (a second send is EFSM)"
                    );
                }
                Err(zmq::Error::EFSM) => break "cannot send in this state (EFSM)".into(),
                Err(e) => break format!("send fails: {e}"),
            }
        };
        t.transcript
            .push(format!("the {side} {kind} tries to send: {outcome}"));
        if kind == Xsub || kind == Xpub {
            continue;
        }
        break;
    }
    t.transcript.push(why_not(t.bind, t.connect));
}

/// STREAM pairs: raw TCP. Two STREAMs exchange bytes; a STREAM facing a ZMTP
/// socket sees the peer's greeting as raw bytes and the handshake never ends.
fn stream_trial(a: &zmq::Socket, b: &zmq::Socket, t: &mut Trial) -> Result<(), Error> {
    let (stream, other, other_kind) = if t.bind == Stream {
        (a, b, t.connect)
    } else {
        (b, a, t.bind)
    };
    let deadline = Instant::now() + HANDSHAKE_WAIT;
    if other_kind == Stream {
        // Each STREAM is told of the connection by an empty message carrying
        // the peer's id; answer with bytes to that id.
        let note = b
            .recv_multipart(0)
            .map_err(|e| Error::zmq("waiting for the connection", e))?;
        t.transcript.push(format!(
            "the connecting STREAM is told of the connection: {}",
            show(&note)
        ));
        b.send_multipart([&note[0][..], b"hello"], 0)
            .map_err(|e| Error::zmq("sending", e))?;
        t.transcript
            .push("it sends raw bytes \"hello\" to that id".into());
        while Instant::now() < deadline {
            let Ok(got) = a.recv_multipart(0) else { break };
            if got.len() == 2 && !got[1].is_empty() {
                t.connected = true;
                t.exchanged = got[1] == b"hello";
                t.transcript
                    .push(format!("the bound STREAM receives {}", show(&got)));
                break;
            }
        }
        return Ok(());
    }
    let mut greeting = None;
    stream
        .set_rcvtimeo(200)
        .map_err(|e| Error::zmq("setting a timeout", e))?;
    while Instant::now() < deadline {
        match stream.recv_multipart(0) {
            Ok(f) if f.len() == 2 && !f[1].is_empty() => {
                greeting = Some(f[1].clone());
                break;
            }
            _ => {}
        }
    }
    if let Some(g) = greeting {
        t.transcript.push(format!("STREAM receives the {other_kind}'s ZMTP greeting as raw bytes ({} bytes, starting {:02x?})", g.len(), &g[..g.len().min(4)]));
    }
    let _ = other.send(&b"hello"[..], zmq::DONTWAIT);
    t.transcript.push(format!("the {other_kind} waits for a ZMTP greeting that never comes; it would time out (HANDSHAKE_IVL, 30 s) and retry forever"));
    t.transcript.push(why_not(t.bind, t.connect));
    Ok(())
}

impl fmt::Display for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.transcript {
            writeln!(f, "  {line}")?;
        }
        match pattern(self.bind, self.connect) {
            Some(p) if self.exchanged => {
                writeln!(f, "=> {} – {}: valid ({p})", self.bind, self.connect)
            }
            Some(p) => writeln!(
                f,
                "=> {} – {}: valid ({p}) but no message crossed here",
                self.bind, self.connect
            ),
            None if self.connected => writeln!(
                f,
                "=> {} – {}: refused by libzmq, yet connected here",
                self.bind, self.connect
            ),
            None => writeln!(f, "=> {} – {}: refused", self.bind, self.connect),
        }
    }
}
