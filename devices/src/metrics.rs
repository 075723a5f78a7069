//! A device's Prometheus metrics (`--metrics ADDR`; served by
//! [`common::metrics`]): the [`Stats`] that STATISTICS answers, as
//! counters by side and direction, and whether it is paused.
//!
//! The proxy loop counts in its own [`Stats`], as it always has; they are
//! copied into the counters once a loop pass (after up to a thousand
//! messages each way), so the forwarding path touches no atomic.

use common::metrics::Mirror;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::proxy::{SideStats, Stats};

/// Which way through which socket.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Way {
    /// `frontend` or `backend`.
    side: &'static str,
    /// `in` (received on that side) or `out` (sent on it).
    direction: &'static str,
}

/// One side's four counters.
#[derive(Debug, Clone)]
struct SideCounters {
    msgs_in: Mirror,
    bytes_in: Mirror,
    msgs_out: Mirror,
    bytes_out: Mirror,
}

impl SideCounters {
    fn new(
        side: &'static str,
        msgs: &Family<Way, Counter>,
        bytes: &Family<Way, Counter>,
    ) -> SideCounters {
        let way = |direction| Way { side, direction };
        SideCounters {
            msgs_in: Mirror::new(msgs.get_or_create_owned(&way("in"))),
            bytes_in: Mirror::new(bytes.get_or_create_owned(&way("in"))),
            msgs_out: Mirror::new(msgs.get_or_create_owned(&way("out"))),
            bytes_out: Mirror::new(bytes.get_or_create_owned(&way("out"))),
        }
    }

    fn set(&mut self, s: &SideStats) {
        self.msgs_in.set(s.msgs_in);
        self.bytes_in.set(s.bytes_in);
        self.msgs_out.set(s.msgs_out);
        self.bytes_out.set(s.bytes_out);
    }
}

/// A device's metric handles, and the last [`Stats`] copied into them.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    frontend: SideCounters,
    backend: SideCounters,
    paused: Gauge,
}

impl Metrics {
    /// Registers a device's metrics (`zpipe_device_…{device="…"}`).
    pub(crate) fn register(r: &mut Registry, device: &'static str) -> Metrics {
        let r = r.sub_registry_with_label(("device".into(), device.into()));
        let msgs = Family::<Way, Counter>::default();
        let bytes = Family::<Way, Counter>::default();
        r.register(
            "messages",
            "Whole messages through the device (a multipart message counts once), by side (frontend, backend) and direction (in: received on that side, out: sent on it)",
            msgs.clone(),
        );
        r.register(
            "bytes",
            "Bytes of those messages, by side and direction",
            bytes.clone(),
        );
        let paused: Gauge = Gauge::default();
        r.register(
            "paused",
            "1 while a PAUSE on the control socket holds the forwarding, else 0",
            paused.clone(),
        );
        Metrics {
            frontend: SideCounters::new("frontend", &msgs, &bytes),
            backend: SideCounters::new("backend", &msgs, &bytes),
            paused,
        }
    }

    /// The loop's counts now.
    pub(crate) fn update(&mut self, stats: &Stats, paused: bool) {
        self.frontend.set(&stats.frontend);
        self.backend.set(&stats.backend);
        self.paused.set(i64::from(paused));
    }
}
