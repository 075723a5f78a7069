//! Prometheus metrics: `--metrics ADDR` serves a role's metrics over HTTP,
//! in Prometheus's text exposition format (version 0.0.4), at
//! `http://ADDR/metrics`.
//!
//! What is shared lives here: the flag ([`MetricsArgs`], flattened into
//! each role's flags), the registry (`prometheus-client`'s, named
//! `zpipe_ROLE_…`), the HTTP server ([`Exporter`]: `tiny_http`, answered
//! on one thread of its own beside `tiny_http`'s accepting thread, for the
//! roles are threads, with no async runtime), and
//! its start and stop with the role ([`Exported`]: dropped when the role
//! returns). Each role defines its own metrics in its own crate, and keeps
//! them as an `Option`: with `--metrics` off the hot paths touch no atomic.
//!
//! With it on, a counter is one atomic add where it is counted; the scrape
//! reads it from the server's thread. Counts a role already keeps in its
//! loop (sent, in flight, bytes through a device) are copied into the
//! metrics at most once a loop pass ([`Mirror`]), which costs nothing per
//! message. Time histograms are filled the same way ([`SecondsBatch`] in
//! the loop, moved into a [`SecondsHistogram`] between bursts), because
//! `prometheus-client`'s own `Histogram` takes a lock and scans its buckets
//! one by one on every observation: on the sink's result path that was
//! about 85 instructions an observation, a sixth more instructions for
//! the whole sink (counted with callgrind over 100 000 no-op results).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::Error;

/// The `--metrics` flag every long-lived role takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (HOST:PORT,
    /// e.g. 127.0.0.1:9101; port 0 takes a free port, which the log names).
    /// Off when not given.
    #[arg(long, env = "ZPIPE_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,
}

impl MetricsArgs {
    /// Starts serving the metrics of `role` (`sink`, `ventilator`, …) when
    /// `--metrics` is given: `register` registers the role's metrics (named
    /// `zpipe_ROLE_…`) and returns the handles the role counts with. A bad
    /// address or one in use is a usage error, so the role fails before
    /// any work.
    pub fn start<M>(
        &self,
        role: &str,
        register: impl FnOnce(&mut Registry) -> M,
    ) -> Result<Option<Exported<M>>, Error> {
        let Some(addr) = &self.metrics else {
            return Ok(None);
        };
        let mut registry = Registry::with_prefix(format!("zpipe_{role}"));
        let metrics = register(&mut registry);
        let exporter = Exporter::start(addr, registry)?;
        Ok(Some(Exported { metrics, exporter }))
    }
}

/// A role's metrics and the server that exports them; dropping it stops
/// the server.
#[derive(Debug)]
pub struct Exported<M> {
    /// The role's metric handles.
    pub metrics: M,
    exporter: Exporter,
}

impl<M> Exported<M> {
    /// Where the server listens (a port 0 comes back as the real one).
    pub fn addr(&self) -> SocketAddr {
        self.exporter.addr()
    }
}

/// How long the server's thread waits for a request before it looks at its
/// stop flag again.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long a stop waits for a scrape in progress.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// An HTTP server on a thread of its own that answers `GET /metrics` with
/// the registry's metrics (any other path: 404). Dropping it stops it, and
/// waits at most a second for a scrape in progress.
pub struct Exporter {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    /// Says when the thread has ended.
    ended: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Listens on `addr` (HOST:PORT) and serves `registry` from a thread.
    pub fn start(addr: &str, registry: Registry) -> Result<Exporter, Error> {
        let listener = listen(addr)?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("--metrics {addr}: {e}")))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| Error::Usage(format!("--metrics {addr}: {e}")))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended) = mpsc::channel();
        let thread = {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || {
                    serve(&server, &registry, &stop);
                    let _ = ended_tx.send(());
                })
                .map_err(|e| Error::Usage(format!("--metrics: cannot start a thread: {e}")))?
        };
        log::info!("metrics: serving http://{bound}/metrics");
        Ok(Exporter {
            addr: bound,
            server,
            stop,
            ended,
            thread: Some(thread),
        })
    }

    /// Where the server listens (a port 0 comes back as the real one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        match self.ended.recv_timeout(STOP_WAIT) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A client that does not read its answer holds the thread:
                // leave it, rather than the role's exit, waiting.
                log::warn!("metrics: a scrape still in progress after {STOP_WAIT:?}: not waiting");
            }
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Binds `addr`, or says in words why not (a usage error).
fn listen(addr: &str) -> Result<TcpListener, Error> {
    let usage = |why: String| Error::Usage(format!("--metrics {addr:?}: {why}"));
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            usage(format!(
                "not an address to listen on ({e}): write HOST:PORT, e.g. 127.0.0.1:9101"
            ))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(usage("names no address".into()));
    }
    TcpListener::bind(&addrs[..]).map_err(|e| usage(format!("cannot listen there: {e}")))
}

/// The server's loop: one request at a time, until `stop`.
fn serve(server: &tiny_http::Server, registry: &Registry, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(STOP_POLL) {
            Ok(Some(request)) => answer(request, registry),
            Ok(None) => {}
            Err(e) => {
                // tiny_http stops accepting after an accept error.
                log::warn!("metrics: the server stopped: {e}");
                break;
            }
        }
    }
}

/// `GET /metrics` (or HEAD): the registry, encoded; anything else says
/// where the metrics are.
fn answer(request: tiny_http::Request, registry: &Registry) {
    use tiny_http::{Header, Method, Response};
    let path = request.url().split('?').next().unwrap_or("");
    let response = if path != "/metrics" {
        Response::from_string("not found: the metrics are at /metrics\n").with_status_code(404)
    } else if !matches!(request.method(), Method::Get | Method::Head) {
        Response::from_string("only GET is answered here\n").with_status_code(405)
    } else {
        let mut body = String::with_capacity(4096);
        match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
            Ok(()) => Response::from_string(body).with_header(
                Header::from_bytes(
                    "Content-Type",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )
                .expect("a valid header"),
            ),
            Err(_) => Response::from_string("cannot encode the metrics\n").with_status_code(500),
        }
    };
    if let Err(e) = request.respond(response) {
        log::debug!("metrics: answering a scrape: {e}");
    }
}

/// The label of a drop counter: why the message was dropped (the reasons
/// of [`crate::drops::Drops`], a fixed set of words).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The reason, e.g. `malformed`, `not zpipe`, `foreign batch`.
    pub reason: &'static str,
}

/// Dropped messages by reason, as [`crate::drops::Drops::count_into`]
/// counts them.
pub type DropCounter = Family<Reason, Counter>;

/// Registers the drop counter of a role that decodes zpipe's messages
/// (sink, ventilator, worker): `zpipe_ROLE_dropped_total`.
pub fn register_drops(registry: &mut Registry) -> DropCounter {
    let dropped = DropCounter::default();
    registry.register(
        "dropped",
        "Messages dropped (unreadable, of another version, batch or kind), by reason",
        dropped.clone(),
    );
    dropped
}

/// The upper bounds of zpipe's time histograms' buckets, in µs: 1, 2.5 and
/// 5 of every power of ten from 100 µs to 1000 s (a no-op task's latency
/// on one host to a long `exec`); then +Inf. Exported in seconds.
pub const BUCKETS_US: [u64; 22] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Bucket counts (not cumulative; the last is +Inf), their sum and count.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    buckets: [u64; BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
        self.count += other.count;
    }
}

/// A Prometheus histogram of durations with the buckets of [`BUCKETS_US`],
/// exported in seconds (register it with `Unit::Seconds`), filled from
/// [`SecondsBatch`]es: one lock a batch, not one an observation. Encoded
/// by `prometheus-client`, like its own histograms.
#[derive(Debug, Clone, Default)]
pub struct SecondsHistogram(Arc<Mutex<Totals>>);

impl SecondsHistogram {
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).count
    }
}

impl TypedMetric for SecondsHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SecondsHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let t = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut buckets = [(0.0, 0); BUCKETS_US.len() + 1];
        for (i, b) in buckets.iter_mut().enumerate() {
            let le = BUCKETS_US
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            *b = (le, t.buckets[i]);
        }
        encoder.encode_histogram::<NoLabelSet>(t.sum_us as f64 / 1e6, t.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Observations a role's loop makes between two moves into a
/// [`SecondsHistogram`]: plain arithmetic and a binary search of the
/// buckets, no lock.
#[derive(Debug, Clone, Default)]
pub struct SecondsBatch(Totals);

impl SecondsBatch {
    /// One duration, in µs.
    pub fn observe_us(&mut self, us: u64) {
        let i = BUCKETS_US.partition_point(|&le| le < us);
        self.0.buckets[i] += 1;
        self.0.sum_us += us;
        self.0.count += 1;
    }

    /// Moves what was observed into `histogram`.
    pub fn move_into(&mut self, histogram: &SecondsHistogram) {
        if self.0.count == 0 {
            return;
        }
        histogram
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&self.0);
        self.0 = Totals::default();
    }
}

/// A counter that follows a total the role keeps itself (a loop's own
/// count), copied in at most once a loop pass: the hot path keeps its
/// plain `u64`. A total that goes down (a new batch's count) starts again
/// from there; the counter never goes down.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    counter: Counter,
    seen: u64,
}

impl Mirror {
    /// Follows into `counter`, from a total of 0.
    pub fn new(counter: Counter) -> Mirror {
        Mirror { counter, seen: 0 }
    }

    /// The total is now `total`: the counter goes up by what it grew.
    pub fn set(&mut self, total: u64) {
        if total > self.seen {
            self.counter.inc_by(total - self.seen);
        }
        self.seen = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[test]
    fn serves_the_registry_at_metrics_and_404_elsewhere() {
        let args = MetricsArgs {
            metrics: Some("127.0.0.1:0".into()),
        };
        let served = args
            .start("test", |r| {
                let g: Gauge = Gauge::default();
                r.register("things", "Things there are", g.clone());
                g
            })
            .unwrap()
            .unwrap();
        served.metrics.set(7);
        assert_ne!(served.addr().port(), 0, "the real port");
        let (code, body) = get(served.addr(), "/metrics");
        assert_eq!(code, 200);
        assert!(
            body.contains("# HELP zpipe_test_things Things there are."),
            "{body}"
        );
        assert!(body.contains("zpipe_test_things 7\n"), "{body}");
        let (code, body) = get(served.addr(), "/metrics?x=1");
        assert_eq!(code, 200, "{body}");
        assert_eq!(get(served.addr(), "/").0, 404);
        assert_eq!(get(served.addr(), "/metricsx").0, 404);
    }

    #[test]
    fn no_flag_no_server() {
        let args = MetricsArgs::default();
        let mut called = false;
        assert!(args.start("test", |_| called = true).unwrap().is_none());
        assert!(!called, "nothing is registered");
    }

    #[test]
    fn a_bad_address_or_one_in_use_is_a_usage_error_in_words() {
        let start = |a: &str| {
            MetricsArgs {
                metrics: Some(a.into()),
            }
            .start("test", |_| ())
            .unwrap_err()
        };
        let e = start("nowhere");
        assert!(e.is_usage());
        assert!(e.to_string().contains("write HOST:PORT"), "{e}");
        let e = start("127.0.0.1:99999");
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = start(&taken.local_addr().unwrap().to_string());
        assert!(e.is_usage());
        assert!(e.to_string().contains("in use"), "{e}");
    }

    #[test]
    fn a_stop_does_not_wait_for_a_client_that_never_finishes_its_request() {
        let served = MetricsArgs {
            metrics: Some("127.0.0.1:0".into()),
        }
        .start("test", |_| ())
        .unwrap()
        .unwrap();
        let addr = served.addr();
        // Half a request, never finished.
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut idle, b"GET /metr").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = std::time::Instant::now();
        drop(served);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // And the port is free again soon after.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpListener::bind(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "the port stays taken");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_batch_of_durations_lands_in_its_buckets_in_seconds() {
        let h = SecondsHistogram::default();
        let mut r = Registry::default();
        r.register_with_unit(
            "took",
            "How long",
            prometheus_client::registry::Unit::Seconds,
            h.clone(),
        );
        let mut b = SecondsBatch::default();
        for us in [0, 100, 101, 2_000_000, 5_000_000_000] {
            b.observe_us(us);
        }
        assert_eq!(h.count(), 0, "nothing until it is moved");
        b.move_into(&h);
        b.move_into(&h);
        assert_eq!(h.count(), 5, "moved once");
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &r).unwrap();
        for line in [
            "# TYPE took_seconds histogram",
            "took_seconds_bucket{le=\"0.0001\"} 2", // 0 and 100 µs: le is inclusive
            "took_seconds_bucket{le=\"0.00025\"} 3",
            "took_seconds_bucket{le=\"1\"} 3",
            "took_seconds_bucket{le=\"2.5\"} 4",
            "took_seconds_bucket{le=\"1000\"} 4",
            "took_seconds_bucket{le=\"+Inf\"} 5",
            "took_seconds_sum 5002.000201",
            "took_seconds_count 5",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_mirror_follows_a_total_and_never_goes_down() {
        let c: Counter = Counter::default();
        let mut m = Mirror::new(c.clone());
        m.set(5);
        m.set(5);
        m.set(8);
        assert_eq!(c.get(), 8);
        m.set(2); // a new batch's count
        assert_eq!(c.get(), 8);
        m.set(4);
        assert_eq!(c.get(), 10);
    }
}
