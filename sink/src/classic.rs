//! `--classic`: the guide's tasksink / tasksink2.
//!
//! The first message on the result socket (the ventilator's "0") starts the
//! clock; then `--tasks` results are counted, printing `:` every tenth and `.`
//! otherwise; then `Total elapsed time: N msec`, and KILL is published for
//! taskwork2's workers.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::Shutdown;
use common::report::Percentiles;
use common::sockets::{self, Recv};

use crate::{Config, Error, Report};

pub(crate) fn run(
    config: &Config,
    results: &zmq::Socket,
    control: &zmq::Socket,
    shutdown: &Shutdown,
    mut out: Box<dyn Write + Send>,
) -> Result<Report, Error> {
    log::info!(
        "classic sink listening: results {}, control {}",
        config.result_endpoint,
        config.control_endpoint
    );
    let mut frames = Vec::new();
    let mut started: Option<Instant> = None;
    let mut count = 0u64;
    while !shutdown.is_triggered() && count < config.tasks {
        match sockets::recv_frames(results, &mut frames, Duration::from_millis(100))? {
            Recv::Timeout => continue,
            Recv::Stopped => break,
            Recv::Message(()) => {}
        }
        if started.is_none() {
            // "Wait for start of batch".
            started = Some(Instant::now());
            continue;
        }
        count += 1;
        out.write_all(if count % 10 == 0 { b":" } else { b"." })?;
        out.flush()?;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    let complete = count == config.tasks;
    if complete {
        writeln!(out, "\nTotal elapsed time: {} msec", elapsed.as_millis())?;
        // tasksink2: tell the workers to stop.
        let _ = control.send("KILL", zmq::DONTWAIT);
    }
    out.flush()?;
    Ok(Report {
        batch: None,
        complete,
        tasks: config.tasks,
        ok: count,
        failed: 0,
        read_back: 0,
        duplicates: 0,
        dropped: BTreeMap::new(),
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        expected_ms: 0.0,
        threads: 0,
        ideal_ms: None,
        overhead_pct: None,
        tasks_per_s: if elapsed.is_zero() {
            0.0
        } else {
            count as f64 / elapsed.as_secs_f64()
        },
        latency: Percentiles::default(),
        run_time: Percentiles::default(),
        workers: Vec::new(),
        lost: Vec::new(),
    })
}
