//! zpipe's **devices**: the guide's QUEUE, FORWARDER and STREAMER, and the
//! table of socket types that may be paired.
//!
//! A device is a small broker with a *frontend* and a *backend* socket that
//! moves every message from one to the other, so that a pipeline can cross
//! hosts and subnets, or many peers can meet at one stable address. The roles
//! on either side never know a device is there.
//!
//! | device | frontend | backend | pattern |
//! |---|---|---|---|
//! | `queue` | ROUTER (clients, :5559) | DEALER (services, :5560) | request-reply broker |
//! | `forwarder` | XSUB (publishers, :5564) | XPUB (subscribers, :5565) | publish-subscribe proxy |
//! | `streamer` | PULL (upstream, :5562) | PUSH (downstream, :5563) | pipeline |
//!
//! A device is a stable part, so by default it **binds** both sides; either
//! side can connect instead (`>tcp://host:port`), and each side can be bound on
//! its own interface (`@tcp://10.0.0.1:5562`), so one device joins two subnets.
//! Replies travel back through a queue (the ROUTER remembers the client) and
//! subscriptions travel upstream through a forwarder (XPUB passes them to XSUB),
//! so publishers only send what someone wants.
//!
//! **High-water marks** are set per side (`--frontend-hwm`, `--backend-hwm`);
//! a streamer or queue reads from one side only while the other can take the
//! message, so a full side pushes back upstream. **Every socket faces the
//! network**: each caps message size, and the forwarder's XPUB caps
//! subscriptions much lower (a huge subscription costs a trie deep enough to
//! overflow the stack). Peers of the wrong socket type are dropped by the ZMTP
//! handshake. **Shutdown**: the [`Shutdown`] flag (SIGINT, SIGTERM) or a
//! TERMINATE command stops the loop within 100 ms; sockets linger at most half
//! a second.
//!
//! # Layout
//!
//! - `lib.rs`: the three devices ([`Device`], [`DeviceArgs`]).
//! - [`proxy`]: the forwarding loop, capture, statistics and control commands.
//! - `metrics.rs`: `--metrics`: the statistics as Prometheus counters.
//! - [`pairs`]: which socket types may talk, why, and a live check of any pair.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod metrics;
pub mod pairs;
pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Action, Endpoints, Shutdown};

pub use proxy::{SideStats, Stats};

/// The three classic devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// ROUTER frontend, DEALER backend: a request-reply broker.
    Queue,
    /// XSUB frontend, XPUB backend: a publish-subscribe proxy.
    Forwarder,
    /// PULL frontend, PUSH backend: a pipeline stage that does nothing.
    Streamer,
}

impl Kind {
    /// The device's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Forwarder => "forwarder",
            Kind::Streamer => "streamer",
        }
    }

    /// Frontend and backend socket types.
    pub fn socket_types(self) -> (zmq::SocketType, zmq::SocketType) {
        match self {
            Kind::Queue => (zmq::ROUTER, zmq::DEALER),
            Kind::Forwarder => (zmq::XSUB, zmq::XPUB),
            Kind::Streamer => (zmq::PULL, zmq::PUSH),
        }
    }

    /// Default frontend and backend endpoints (bound).
    pub fn default_endpoints(self) -> (&'static str, &'static str) {
        match self {
            // The guide's msgqueue / rrbroker ports.
            Kind::Queue => ("tcp://*:5559", "tcp://*:5560"),
            Kind::Forwarder => ("tcp://*:5564", "tcp://*:5565"),
            Kind::Streamer => ("tcp://*:5562", "tcp://*:5563"),
        }
    }

    /// Whether messages also flow backend → frontend.
    fn both_ways(self) -> bool {
        !matches!(self, Kind::Streamer)
    }
}

/// A device's flags; every one can also come from a `ZPIPE_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Frontend endpoints (see the table in `--help` of the device for the
    /// default). `@` binds, `>` connects, bare binds; comma-separated list.
    #[arg(long, env = "ZPIPE_FRONTEND")]
    pub frontend: Option<Endpoints>,
    /// Backend endpoints.
    #[arg(long, env = "ZPIPE_BACKEND")]
    pub backend: Option<Endpoints>,
    /// Copy every message (both directions) to a PUB socket here.
    #[arg(long, env = "ZPIPE_CAPTURE")]
    pub capture: Option<Endpoints>,
    /// Accept PAUSE, RESUME, TERMINATE and STATISTICS on a REP socket here.
    #[arg(long, env = "ZPIPE_DEVICE_CONTROL")]
    pub control: Option<Endpoints>,
    /// Frontend high-water mark (messages queued per connection).
    #[arg(long, env = "ZPIPE_FRONTEND_HWM", default_value_t = 1000)]
    pub frontend_hwm: i32,
    /// Backend high-water mark.
    #[arg(long, env = "ZPIPE_BACKEND_HWM", default_value_t = 1000)]
    pub backend_hwm: i32,
    /// Largest message accepted from the network, in bytes.
    #[arg(long, env = "ZPIPE_MAX_MSG_SIZE", default_value_t = 16 << 20)]
    pub max_msg_size: i64,
    /// Forwarder only: largest subscription accepted from a subscriber, in
    /// bytes (its connection is dropped beyond).
    #[arg(long, env = "ZPIPE_MAX_SUBSCRIPTION", default_value_t = 1024)]
    pub max_subscription: i64,
    /// Log the statistics this often.
    #[arg(long, env = "ZPIPE_STATS_EVERY", default_value = "30s", value_parser = common::cli::duration)]
    pub stats_every: Duration,
    // Flattened: a doc comment here would replace its help heading.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub security: common::security::SecurityArgs,
    // --metrics ADDR (Prometheus); a doc comment here would replace its
    // help.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub metrics: common::metrics::MetricsArgs,
}

impl DeviceArgs {
    /// The flags' defaults, with these endpoints (for tests and programs).
    pub fn new(frontend: &str, backend: &str) -> Result<Self, Error> {
        Ok(DeviceArgs {
            frontend: Some(frontend.parse()?),
            backend: Some(backend.parse()?),
            capture: None,
            control: None,
            frontend_hwm: 1000,
            backend_hwm: 1000,
            max_msg_size: 16 << 20,
            max_subscription: 1024,
            stats_every: Duration::from_secs(30),
            security: Default::default(),
            metrics: Default::default(),
        })
    }
}

/// The devices' errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Sockets and endpoints: a bad endpoint, a port in use, security set-up.
    #[error(transparent)]
    Common(#[from] common::Error),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    fn zmq(context: impl std::fmt::Display, e: zmq::Error) -> Self {
        Error::Common(common::Error::zmq(context, e))
    }
}

impl common::cli::Usage for Error {
    fn is_usage(&self) -> bool {
        match self {
            Error::Common(e) => e.is_usage(),
            Error::Usage(_) => true,
        }
    }
}

/// Where a device's sockets are, as libzmq resolved them.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The frontend's endpoints.
    pub frontend: Vec<String>,
    /// The backend's endpoints.
    pub backend: Vec<String>,
    /// The capture PUB's endpoints (none without `--capture`).
    pub capture: Vec<String>,
    /// The control REP's endpoints (none without `--control`).
    pub control: Vec<String>,
    /// Where `--metrics` serves (a port 0 comes back as the real one).
    pub metrics: Option<SocketAddr>,
}

/// A device whose sockets are bound and connected; [`Device::run`] forwards.
pub struct Device {
    kind: Kind,
    frontend: zmq::Socket,
    backend: zmq::Socket,
    /// PUB: copies of every message.
    capture: Option<zmq::Socket>,
    /// REP: control commands.
    control: Option<zmq::Socket>,
    bound: Bound,
    stats_every: Duration,
    /// `--metrics`: the handles, and the server, stopped when the device
    /// is dropped (when [`Device::run`] returns).
    metrics: Option<common::metrics::Exported<metrics::Metrics>>,
}

impl Device {
    /// Makes the sockets and attaches them; a bad endpoint or a port in use
    /// fails here, before anything is forwarded.
    pub fn bind(kind: Kind, args: &DeviceArgs, ctx: &zmq::Context) -> Result<Device, Error> {
        let (front_type, back_type) = kind.socket_types();
        let (front_default, back_default) = kind.default_endpoints();
        let base = common::sockets::Tuning {
            max_msg_size: args.max_msg_size,
            heartbeat: Some(Duration::from_secs(2)),
            security: common::security::Security::from_args(&args.security)?,
            ..Default::default()
        };
        let secured = base.security.clone();
        let security = secured.as_deref();
        let front_tuning = common::sockets::Tuning {
            hwm: args.frontend_hwm,
            ..base.clone()
        };
        let mut back_tuning = common::sockets::Tuning {
            hwm: args.backend_hwm,
            ..base.clone()
        };
        if kind == Kind::Forwarder {
            // The XPUB only ever receives subscriptions.
            back_tuning.max_msg_size = args.max_subscription.min(args.max_msg_size);
        }
        let frontend = common::sockets::socket(ctx, front_type, "frontend", &front_tuning)?;
        let backend = common::sockets::socket(ctx, back_type, "backend", &back_tuning)?;
        let front_eps = args
            .frontend
            .clone()
            .unwrap_or_else(|| Endpoints::single(front_default));
        let back_eps = args
            .backend
            .clone()
            .unwrap_or_else(|| Endpoints::single(back_default));
        let mut bound = Bound {
            frontend: front_eps.attach_secured(&frontend, Action::Bind, "frontend", security)?,
            backend: back_eps.attach_secured(&backend, Action::Bind, "backend", security)?,
            capture: Vec::new(),
            control: Vec::new(),
            metrics: None,
        };
        let capture = match &args.capture {
            Some(eps) => {
                let s = common::sockets::socket(ctx, zmq::PUB, "capture", &base)?;
                bound.capture = eps.attach_secured(&s, Action::Bind, "capture", security)?;
                Some(s)
            }
            None => None,
        };
        let control = match &args.control {
            Some(eps) => {
                let s = common::sockets::socket(
                    ctx,
                    zmq::REP,
                    "control",
                    &common::sockets::Tuning {
                        max_msg_size: 4096,
                        ..base.clone()
                    },
                )?;
                bound.control = eps.attach_secured(&s, Action::Bind, "control", security)?;
                Some(s)
            }
            None => None,
        };
        let metrics = args
            .metrics
            .start("device", |r| metrics::Metrics::register(r, kind.name()))?;
        bound.metrics = metrics.as_ref().map(|m| m.addr());
        log::info!(
            "{}: frontend {:?} → backend {:?}",
            kind.name(),
            bound.frontend,
            bound.backend
        );
        Ok(Device {
            kind,
            frontend,
            backend,
            capture,
            control,
            bound,
            stats_every: args.stats_every,
            metrics,
        })
    }

    /// The endpoints as bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Forwards until TERMINATE or `shutdown`; returns the traffic.
    pub fn run(self, shutdown: &Shutdown) -> Result<Stats, Error> {
        let sockets = proxy::Sockets {
            frontend: &self.frontend,
            backend: &self.backend,
            capture: self.capture.as_ref(),
            control: self.control.as_ref(),
        };
        let mut metrics = self.metrics.as_ref().map(|m| m.metrics.clone());
        let stats = proxy::run(
            self.kind.name(),
            sockets,
            self.kind.both_ways(),
            shutdown,
            self.stats_every,
            metrics.as_mut(),
        )?;
        log::info!("{}: stopped; {:?}", self.kind.name(), stats);
        Ok(stats)
    }
}

/// Binds and runs a device (see [`Device`]).
pub fn run(
    kind: Kind,
    args: &DeviceArgs,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
) -> Result<Stats, Error> {
    Device::bind(kind, args, ctx)?.run(shutdown)
}

/// Sends one command to a device's control socket (REQ → REP) and returns the
/// answer in words. Waits at most two seconds.
pub fn control(ctx: &zmq::Context, endpoint: &str, command: &str) -> Result<String, Error> {
    control_secured(ctx, endpoint, command, &Default::default())
}

/// [`control`] with security flags, for a device that has them.
pub fn control_secured(
    ctx: &zmq::Context,
    endpoint: &str,
    command: &str,
    security: &common::security::SecurityArgs,
) -> Result<String, Error> {
    let endpoints: Endpoints = endpoint.parse()?;
    let tuning = common::sockets::Tuning {
        linger: Duration::ZERO,
        security: common::security::Security::from_args(security)?,
        ..Default::default()
    };
    let req = common::sockets::socket(ctx, zmq::REQ, "control", &tuning)?;
    endpoints.attach_secured(&req, Action::Connect, "control", tuning.security.as_deref())?;
    req.send(command, 0)
        .map_err(|e| Error::zmq("sending the command", e))?;
    if req
        .poll(zmq::POLLIN, 2000)
        .map_err(|e| Error::zmq("waiting for the answer", e))?
        == 0
    {
        return Err(Error::Usage(format!(
            "no answer from {endpoint} within 2 s: is a device's --control there?"
        )));
    }
    let frames = req
        .recv_multipart(0)
        .map_err(|e| Error::zmq("reading the answer", e))?;
    Ok(match Stats::from_frames(&frames) {
        Some(s) => serde_json::to_string(&s).unwrap_or_default(),
        None => frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    })
}
