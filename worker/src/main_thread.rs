//! The main thread's conversation: being known to be alive, and being told
//! to stop.
//!
//! ```text
//!  worker main thread  PUSH   ── HELLO, HEARTBEAT, BYE ──▶ PULL   sink
//!                      DEALER ── HELLO, HEARTBEAT, BYE ──▶ ROUTER ventilator (credit dispatch)
//!                             ◀──────── HEARTBEAT ────────
//!                      SUB    ◀──────── END, KILL ──────── PUB    sink
//! ```
//!
//! Once every executor thread's task socket has completed its handshake, the
//! main thread says HELLO (to the sink, and in credit dispatch to the
//! ventilator), opens the threads' [`Gate`] so they ask for work, and repeats
//! its HELLO as a HEARTBEAT every `--heartbeat`: the sink knows the worker
//! is alive (a restarted sink learns of it again), and the ventilator, which
//! answers each HEARTBEAT, knows its tasks are in good hands (the guide's
//! Paranoid Pirate). A ventilator silent for three heartbeats is named in
//! the log, once; the sockets reconnect by themselves. END or KILL on the
//! control SUB stops the worker, and it says BYE once its threads are done.
//!
//! [`Presence`] is when to say what (a pure type, tested here); [`control`]
//! reads a control message; [`MainThread`] owns the three sockets and runs
//! the loop that applies them.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::drops::Drops;
use common::protocol::{self, Header, Kind, Message, WorkerInfo};
use common::sockets::{self, Monitor, Recv, Tuning};
use common::{Action, Endpoints, Shutdown};

use crate::executor::Gate;
use crate::held::Held;
use crate::idle::Activity;
use crate::{Config, Error, StopReason};

/// The longest the loop waits without looking at the shutdown flag, the
/// threads and the clock.
const POLL: Duration = Duration::from_millis(50);
/// How often a worker still waiting for a ventilator says so.
const STILL_WAITING: Duration = Duration::from_secs(5);
/// Heartbeats a ventilator may miss before the worker says it is silent.
const SILENT_AFTER: u32 = 3;
/// How often a worker says again that the ventilator is still silent.
const SILENT_EVERY: Duration = Duration::from_secs(60);

/// Something the main thread is to do now, as [`Presence`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Every thread is connected: say HELLO and let the threads ask for work.
    Hello,
    /// Say HEARTBEAT.
    Heartbeat,
    /// Still no ventilator for some threads: say so in the log.
    StillWaiting {
        /// Threads connected so far.
        connected: u32,
    },
    /// The ventilator has not been heard for this long: say so (and again
    /// every minute while it lasts).
    VentilatorSilent(Duration),
}

/// Before or after HELLO.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the threads' handshakes; last said so at `since`.
    Waiting { since: Instant },
    /// HELLO is out; the next HEARTBEAT is due at `next_beat`.
    Said { next_beat: Instant },
}

/// The last word from the ventilator.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    /// When its silence was last reported.
    reported: Option<Instant>,
}

/// When the main thread says HELLO and HEARTBEAT, and when it finds the
/// ventilator silent: the worker's side of the Paranoid Pirate, as a pure
/// type that is given the time.
#[derive(Debug)]
pub(crate) struct Presence {
    threads: u32,
    connected: u32,
    heartbeat: Duration,
    phase: Phase,
    ventilator: Option<Heard>,
}

impl Presence {
    /// A worker of `threads` threads starting at `now`, beating every
    /// `heartbeat`.
    pub fn new(threads: u32, heartbeat: Duration, now: Instant) -> Presence {
        Presence {
            threads,
            connected: 0,
            heartbeat,
            phase: Phase::Waiting { since: now },
            ventilator: None,
        }
    }

    /// One more thread's task socket completed its handshake.
    pub fn thread_ready(&mut self) {
        self.connected += 1;
    }

    /// Whether HELLO is out.
    pub fn said_hello(&self) -> bool {
        matches!(self.phase, Phase::Said { .. })
    }

    /// Something came from the ventilator (only liveness matters).
    pub fn ventilator_heard(&mut self, now: Instant) {
        self.ventilator = Some(Heard {
            at: now,
            reported: None,
        });
    }

    /// What is due at `now`, one event a call (call until `None`): each is
    /// returned once and not again until it is due again.
    pub fn due(&mut self, now: Instant) -> Option<Event> {
        match &mut self.phase {
            Phase::Waiting { .. } if self.connected >= self.threads => {
                self.phase = Phase::Said {
                    next_beat: now + self.heartbeat,
                };
                return Some(Event::Hello);
            }
            Phase::Waiting { since } if now.saturating_duration_since(*since) >= STILL_WAITING => {
                *since = now;
                return Some(Event::StillWaiting {
                    connected: self.connected,
                });
            }
            Phase::Said { next_beat } if now >= *next_beat => {
                *next_beat = now + self.heartbeat;
                return Some(Event::Heartbeat);
            }
            _ => {}
        }
        if let Some(heard) = &mut self.ventilator {
            let silent = now.saturating_duration_since(heard.at);
            let due = heard
                .reported
                .is_none_or(|at| now.saturating_duration_since(at) >= SILENT_EVERY);
            if due && silent > self.heartbeat * SILENT_AFTER {
                heard.reported = Some(now);
                return Some(Event::VentilatorSilent(silent));
            }
        }
        None
    }
}

/// Why a control message was dropped: a label to count it by, and words.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dropped {
    label: &'static str,
    detail: String,
}

/// Reads a message from the control channel: END or KILL (in classic mode,
/// any message means kill, as in the guide's taskwork2).
pub(crate) fn control(frames: &[zmq::Message], classic: bool) -> Result<StopReason, Dropped> {
    if classic {
        return Ok(StopReason::Kill);
    }
    match Message::decode(frames) {
        Ok(Message::End { .. }) => Ok(StopReason::End),
        Ok(Message::Kill { .. }) => Ok(StopReason::Kill),
        Ok(other) => Err(Dropped {
            label: "unexpected kind",
            detail: format!("{:?} is not a control message", other.kind()),
        }),
        Err(e) => Err(Dropped {
            label: e.label(),
            detail: e.to_string(),
        }),
    }
}

/// The main thread's sockets, and what it says with them.
pub(crate) struct MainThread {
    /// SUB: the sink's control channel (END, KILL), subscribed to everything.
    control: zmq::Socket,
    /// PUSH: HELLO, HEARTBEAT and BYE to the sink (results go from the
    /// threads); none in classic mode.
    status: Option<zmq::Socket>,
    /// DEALER (credit dispatch): HELLO, HEARTBEAT and BYE to the
    /// ventilator, which answers each HEARTBEAT.
    vent: Option<zmq::Socket>,
    /// Connections of `vent`: a new ventilator (a standing pool's next
    /// batch) is told HELLO at once, not at the next heartbeat; and a BYE
    /// for a ventilator that is gone is not waited for.
    vent_handshakes: Option<Monitor>,
    /// Whether `vent` is connected to a ventilator now (see [`follow`]).
    vent_up: Option<bool>,
    /// Connections of `status`: a BYE for a sink that is not there (gone,
    /// or refusing this worker's security) is not waited for.
    sink_handshakes: Option<Monitor>,
    /// Whether `status` is connected to a sink now (see [`follow`]): a
    /// BYE waits unless it is known not to be (`None`: a sink may be in the
    /// middle of its handshake with HELLO queued for it).
    sink_up: Option<bool>,
    info: WorkerInfo,
    classic: bool,
    /// `--serve`: END ends a batch, not the worker.
    serve: bool,
    /// `--idle-exit`.
    idle_exit: Option<Duration>,
    heartbeat: Duration,
    /// For the log.
    task_endpoint: Endpoints,
    drops: Drops,
    /// Push dispatch: what the threads hold, said in HEARTBEAT and BYE.
    held: Option<Arc<Held>>,
}

impl MainThread {
    /// Makes and connects the main thread's sockets.
    pub fn connect(
        ctx: &zmq::Context,
        config: &Config,
        tuning: &Tuning,
        info: WorkerInfo,
        held: Option<Arc<Held>>,
    ) -> Result<MainThread, Error> {
        let security = tuning.security.as_deref();
        // The sink may start a moment after the worker: its sockets try
        // again as soon as the task sockets do (libzmq waits 100 ms), so
        // that HELLO and the subscription to END do not lag behind the
        // first results.
        let again = crate::executor::reconnect_interval(1);
        let control = sockets::socket(ctx, zmq::SUB, "control", tuning)?;
        control
            .set_subscribe(b"")
            .map_err(|e| common::Error::zmq("subscribing", e))?;
        control
            .set_reconnect_ivl(again)
            .map_err(|e| common::Error::zmq("setting the reconnect interval", e))?;
        config
            .control_endpoint
            .attach_secured(&control, Action::Connect, "control", security)?;
        let (status, sink_handshakes) = if config.classic {
            (None, None)
        } else {
            let s = sockets::socket(ctx, zmq::PUSH, "results", tuning)?;
            s.set_reconnect_ivl(again)
                .map_err(|e| common::Error::zmq("setting the reconnect interval", e))?;
            let handshakes = Monitor::connections(ctx, &s)?;
            config
                .result_endpoint
                .attach_secured(&s, Action::Connect, "results", security)?;
            (Some(s), Some(handshakes))
        };
        let (vent, vent_handshakes) = if info.dispatch == protocol::Dispatch::Credit {
            let s = sockets::socket(ctx, zmq::DEALER, "heartbeats", tuning)?;
            s.set_reconnect_ivl(crate::executor::reconnect_interval(config.threads))
                .map_err(|e| common::Error::zmq("setting the reconnect interval", e))?;
            let handshakes = Monitor::connections(ctx, &s)?;
            config
                .task_endpoint
                .attach_secured(&s, Action::Connect, "heartbeats", security)?;
            (Some(s), Some(handshakes))
        } else {
            (None, None)
        };
        Ok(MainThread {
            control,
            status,
            vent,
            vent_handshakes,
            vent_up: None,
            sink_handshakes,
            sink_up: None,
            info,
            classic: config.classic,
            serve: config.serve,
            idle_exit: config.idle_exit,
            heartbeat: config.heartbeat,
            task_endpoint: config.task_endpoint.clone(),
            drops: Drops::default(),
            held,
        })
    }

    /// Runs until END, KILL or `shutdown`: hears from the threads on
    /// `ready`, opens `hello` once HELLO is out (sink messages give up when
    /// `stop` is raised). An error from a thread ends it.
    pub fn run(
        &mut self,
        shutdown: &Shutdown,
        stop: &Shutdown,
        ready: &mpsc::Receiver<Result<(), common::Error>>,
        hello: &Gate,
        activity: &Activity,
    ) -> Result<StopReason, Error> {
        let mut presence = Presence::new(self.info.threads, self.heartbeat, Instant::now());
        let mut frames = Vec::new();
        loop {
            if shutdown.is_triggered() {
                return Ok(StopReason::Signal);
            }
            // Before HELLO, wait on the threads' word, so HELLO goes the
            // moment the last handshake completes (the control socket is
            // only looked at); after it, wait on the control socket.
            let control_wait = if presence.said_hello() {
                POLL
            } else {
                match ready.recv_timeout(POLL) {
                    Ok(word) => {
                        word?;
                        presence.thread_ready();
                        Duration::ZERO
                    }
                    Err(RecvTimeoutError::Timeout) => Duration::ZERO,
                    // Every thread is gone: nothing to wait for there.
                    Err(RecvTimeoutError::Disconnected) => POLL,
                }
            };
            while let Ok(word) = ready.try_recv() {
                word?;
                presence.thread_ready();
            }
            if let Some(v) = &self.vent {
                // The ventilator's heartbeats: liveness is what matters,
                // but one that cannot be read (another protocol version)
                // is named, or a worker facing it would only wait.
                while let Recv::Message(()) = sockets::recv_frames_now(v, &mut frames)? {
                    presence.ventilator_heard(Instant::now());
                    let message = protocol::split_envelope(&frames).map(|(_, m)| m);
                    let heartbeat = |k| k == Kind::Heartbeat;
                    match message {
                        Some(m) => drop(self.drops.decode(m, "ventilator", heartbeat)),
                        None => self.drops.note("ventilator", "no envelope", "no delimiter"),
                    }
                }
            }
            while let Some(event) = presence.due(Instant::now()) {
                self.on_event(event, stop, hello);
            }
            // The monitors are read on every turn, HELLO or not: libzmq
            // sends their events with a blocking send, so events left
            // unread (a peer refusing every reconnection) would in time
            // stall the I/O thread.
            if self.new_ventilator()? && presence.said_hello() {
                self.say(Kind::Hello, stop);
            }
            self.watch_sink()?;
            if let Some(limit) = self.idle_exit
                && activity.idle_for(Instant::now()) >= limit
            {
                log::info!(
                    "worker {}: no task for {limit:?} (--idle-exit): leaving",
                    self.info.name()
                );
                return Ok(StopReason::Idle);
            }
            match sockets::recv_frames(&self.control, &mut frames, control_wait)? {
                Recv::Timeout => continue,
                Recv::Stopped => return Ok(StopReason::Signal),
                Recv::Message(()) => {}
            }
            match control(&frames, self.classic) {
                Ok(StopReason::End) if self.serve => log::info!(
                    "worker {}: the batch is complete; waiting for the next (--serve)",
                    self.info.name()
                ),
                Ok(reason) => return Ok(reason),
                Err(Dropped { label, detail }) => self.drops.note("control", label, detail),
            }
        }
    }

    fn on_event(&self, event: Event, stop: &Shutdown, hello: &Gate) {
        match event {
            Event::Hello => {
                log::info!(
                    "worker {} ready: {} thread(s) connected to {}",
                    self.info.name(),
                    self.info.threads,
                    self.task_endpoint
                );
                self.say(Kind::Hello, stop);
                hello.open();
            }
            Event::Heartbeat => self.say(Kind::Heartbeat, stop),
            Event::StillWaiting { connected } => log::info!(
                "still waiting for a ventilator at {} ({connected} of {} threads connected; SIGTERM or Ctrl-C stops the worker)",
                self.task_endpoint,
                self.info.threads
            ),
            Event::VentilatorSilent(silent) => log::warn!(
                "the ventilator at {} has been silent for {:.0?}: waiting for it (the sockets reconnect by themselves; a standing pool waits for its next batch; SIGTERM or Ctrl-C stops the worker)",
                self.task_endpoint,
                Duration::from_secs(silent.as_secs())
            ),
        }
    }

    /// Whether the ventilator's socket completed a handshake since the
    /// last look (the first one included: a second HELLO is harmless).
    fn new_ventilator(&mut self) -> Result<bool, Error> {
        follow(self.vent_handshakes.as_ref(), &mut self.vent_up)
    }

    /// Follows whether the status socket is connected to a sink.
    fn watch_sink(&mut self) -> Result<(), Error> {
        follow(self.sink_handshakes.as_ref(), &mut self.sink_up).map(drop)
    }

    /// HELLO, HEARTBEAT or BYE to the sink and (credit dispatch) the
    /// ventilator.
    fn say(&self, kind: Kind, stop: &Shutdown) {
        if let Some(s) = &self.status {
            match (&self.held, kind) {
                (Some(held), Kind::Heartbeat | Kind::Bye) => {
                    let info = WorkerInfo {
                        held: Some(held.all()),
                        ..self.info.clone()
                    };
                    send_info(s, kind, &info, stop);
                }
                _ => send_info(s, kind, &self.info, stop),
            }
        }
        if let Some(v) = &self.vent {
            send_to_ventilator(v, kind, &self.info);
        }
    }

    /// BYE to the sink and the ventilator: the worker is leaving (its
    /// threads are done, their results sent).
    /// `why`: the reason the worker stops.
    pub fn bye(&mut self, why: StopReason) {
        // After END the ventilator is gone or going (the sink told it DONE
        // with our END) and needs no BYE: the batch is complete. Otherwise
        // (a signal, KILL, idle) the BYE is what makes it send our tasks
        // again at once.
        let vent = self.vent.take_if(|_| why == StopReason::End);
        // A BYE to a peer that is not there (gone, or refusing this
        // worker's security) would wait in its socket for a connection
        // that may never come, and the linger would hold the worker's exit
        // for nothing: it is waited for only while the peer is connected.
        // A sink away is not waited for either (the stop flag given to the
        // send is raised already).
        let _ = self.watch_sink();
        let sink_away = Shutdown::new();
        if self.sink_up == Some(false) {
            sink_away.trigger();
            if let Some(s) = &self.status {
                let _ = s.set_linger(0);
            }
        }
        self.say(Kind::Bye, &sink_away);
        self.vent = vent;
        let _ = self.new_ventilator();
        if let Some(v) = &self.vent
            && (why == StopReason::End || self.vent_up != Some(true))
        {
            let _ = v.set_linger(0);
        }
        // The control socket sends nothing but its subscription: nothing
        // there is worth waiting for.
        let _ = self.control.set_linger(0);
    }

    /// Counts every drop from now on in `counter` too (`--metrics`).
    pub fn count_drops_into(&mut self, counter: common::metrics::DropCounter) {
        self.drops.count_into(counter);
    }

    /// Control messages dropped.
    pub fn dropped(&self) -> u64 {
        self.drops.total()
    }
}

impl Drop for MainThread {
    fn drop(&mut self) {
        // A monitor's reader must not just vanish (see `Monitor::stop`).
        if let (Some(m), Some(v)) = (self.vent_handshakes.take(), &self.vent) {
            m.stop(v);
        }
        if let (Some(m), Some(s)) = (self.sink_handshakes.take(), &self.status) {
            m.stop(s);
        }
    }
}

/// Reads what `monitor` saw of its socket's connections since the last look
/// into `up`: `Some(true)` once a handshake succeeds, `Some(false)` after a
/// disconnection or a failed handshake (`None` until either). Returns
/// whether a handshake succeeded meanwhile.
fn follow(monitor: Option<&Monitor>, up: &mut Option<bool>) -> Result<bool, Error> {
    use zmq::SocketEvent as E;
    let mut new = false;
    if let Some(m) = monitor {
        while let Recv::Message(event) = m.next_event(Duration::ZERO)? {
            match event {
                E::HANDSHAKE_SUCCEEDED => {
                    new = true;
                    *up = Some(true);
                }
                E::DISCONNECTED
                | E::HANDSHAKE_FAILED_AUTH
                | E::HANDSHAKE_FAILED_PROTOCOL
                | E::HANDSHAKE_FAILED_NO_DETAIL => *up = Some(false),
                _ => {}
            }
        }
    }
    Ok(new)
}

/// HELLO, HEARTBEAT or BYE to the sink, waiting at most half a second (or
/// until `stop`) while the sink is at its high-water mark.
fn send_info(socket: &zmq::Socket, kind: Kind, info: &WorkerInfo, stop: &Shutdown) {
    let frames = protocol::json_frames(Header::bare(kind, 0), info);
    let deadline = Instant::now() + Duration::from_millis(500);
    if let Err(e) = sockets::send_frames(socket, &frames, || {
        Instant::now() < deadline && !stop.is_triggered()
    }) {
        log::warn!("cannot send {kind:?} to the sink: {e}");
    }
}

/// HELLO, HEARTBEAT or BYE to the ventilator (credit dispatch), after the
/// empty delimiter; dropped rather than queued when the ventilator is away.
fn send_to_ventilator(socket: &zmq::Socket, kind: Kind, info: &WorkerInfo) {
    let [h, p] = protocol::json_frames(Header::bare(kind, 0), info);
    let _ = socket.send_multipart([&b""[..], &h[..], &p[..]], zmq::DONTWAIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn all_due(p: &mut Presence, now: Instant) -> Vec<Event> {
        std::iter::from_fn(|| p.due(now)).collect()
    }

    #[test]
    fn hello_once_every_thread_is_connected_then_a_heartbeat_every_period() {
        let t0 = Instant::now();
        let mut p = Presence::new(2, S, t0);
        p.thread_ready();
        assert_eq!(all_due(&mut p, t0 + S), vec![]);
        assert!(!p.said_hello());
        p.thread_ready();
        assert_eq!(all_due(&mut p, t0 + S), vec![Event::Hello]);
        assert!(p.said_hello());
        assert_eq!(all_due(&mut p, t0 + S), vec![], "HELLO once");
        assert_eq!(all_due(&mut p, t0 + S + S / 2), vec![]);
        assert_eq!(all_due(&mut p, t0 + 2 * S), vec![Event::Heartbeat]);
        assert_eq!(all_due(&mut p, t0 + 2 * S), vec![]);
        assert_eq!(all_due(&mut p, t0 + 3 * S), vec![Event::Heartbeat]);
    }

    #[test]
    fn no_heartbeat_before_hello_but_a_word_every_five_seconds() {
        let t0 = Instant::now();
        let mut p = Presence::new(3, S, t0);
        p.thread_ready();
        assert_eq!(all_due(&mut p, t0 + 4 * S), vec![]);
        assert_eq!(
            all_due(&mut p, t0 + 5 * S),
            vec![Event::StillWaiting { connected: 1 }]
        );
        assert_eq!(all_due(&mut p, t0 + 9 * S), vec![]);
        assert_eq!(
            all_due(&mut p, t0 + 10 * S),
            vec![Event::StillWaiting { connected: 1 }]
        );
    }

    #[test]
    fn a_silent_ventilator_is_named_and_named_again_each_minute_it_lasts() {
        let t0 = Instant::now();
        let mut p = Presence::new(1, S, t0);
        p.thread_ready();
        assert_eq!(all_due(&mut p, t0), vec![Event::Hello]);
        // Never heard: nothing to say (push dispatch, or not there yet).
        assert_eq!(all_due(&mut p, t0 + 10 * S / 2), vec![Event::Heartbeat]);
        p.ventilator_heard(t0 + 5 * S);
        assert_eq!(all_due(&mut p, t0 + 8 * S), vec![Event::Heartbeat]);
        let late = t0 + 8 * S + S / 2;
        assert_eq!(
            all_due(&mut p, late),
            vec![Event::VentilatorSilent(late - (t0 + 5 * S))]
        );
        assert_eq!(all_due(&mut p, late + S / 4), vec![], "not at once again");
        // Heard again, then silent again: said again.
        p.ventilator_heard(t0 + 9 * S);
        assert_eq!(all_due(&mut p, t0 + 11 * S), vec![Event::Heartbeat]);
        assert_eq!(
            all_due(&mut p, t0 + 12 * S + S / 2),
            vec![Event::Heartbeat, Event::VentilatorSilent(3 * S + S / 2)]
        );
        // A minute on, still silent: said again (so the log says what the
        // worker waits for, at a steady rate).
        let minute = t0 + 12 * S + S / 2 + SILENT_EVERY;
        let again = all_due(&mut p, minute);
        assert_eq!(
            again.last(),
            Some(&Event::VentilatorSilent(minute - (t0 + 9 * S)))
        );
    }

    fn frames(m: Message) -> Vec<zmq::Message> {
        m.frames().into_iter().map(zmq::Message::from).collect()
    }

    #[test]
    fn end_and_kill_stop_the_worker_anything_else_is_dropped() {
        assert_eq!(
            control(&frames(Message::End { batch: 3 }), false),
            Ok(StopReason::End)
        );
        assert_eq!(
            control(&frames(Message::Kill { batch: 0 }), false),
            Ok(StopReason::Kill)
        );
        let go = control(&frames(Message::Go { batch: 3 }), false).unwrap_err();
        assert_eq!(go.label, "unexpected kind");
        assert!(go.detail.contains("Go"), "{}", go.detail);
        let garbage = [zmq::Message::from(&b"hello"[..])];
        assert_eq!(control(&garbage, false).unwrap_err().label, "not zpipe");
        // The guide's taskwork2: any message at all means kill.
        assert_eq!(control(&garbage, true), Ok(StopReason::Kill));
    }
}
