//! `--classic`: the guide's taskvent.
//!
//! Binds PUSH for the workers, connects PUSH to the sink, sends "0" to the
//! sink to start its clock, then each workload as decimal milliseconds, and
//! prints `Total expected cost: N msec`.

use std::io::IsTerminal;
use std::time::Instant;

use common::Shutdown;
use common::sockets;
use common::work::Work;

use crate::{Config, Error, Report};

pub(crate) fn run(
    config: &Config,
    tasks: &[Work],
    sender: &zmq::Socket,
    sink: &zmq::Socket,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    let workloads: Vec<u64> = tasks
        .iter()
        .enumerate()
        .map(|(i, w)| match w {
            Work::Sleep { ms } => Ok(*ms),
            other => Err(Error::Usage(format!(
                "task {i} is a {} task: classic mode speaks the guide's format, which has sleep workloads only",
                other.kind()
            ))),
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    if std::io::stdin().is_terminal() {
        eprintln!("Press Enter when the workers are ready: ");
        // Read in a thread, so that Ctrl-C still stops us while we wait.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        while rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err()
        {
            if shutdown.is_triggered() {
                return Ok(report(0, 0, started));
            }
        }
    } else {
        while started.elapsed() < config.start_after {
            if shutdown.is_triggered() {
                return Ok(report(0, 0, started));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    eprintln!("Sending tasks to workers...");
    let wait_ms = started.elapsed();
    // "The first message is "0" and signals start of batch".
    sockets::send_frames(sink, &[b"0"], || !shutdown.is_triggered())?;
    let mut sent = 0;
    for ms in &workloads {
        if !sockets::send_frames(sender, &[ms.to_string().as_bytes()], || {
            !shutdown.is_triggered()
        })? {
            break;
        }
        sent += 1;
    }
    println!(
        "Total expected cost: {} msec",
        workloads.iter().sum::<u64>()
    );
    let mut r = report(workloads.len() as u64, sent, started);
    r.wait_ms = wait_ms.as_secs_f64() * 1000.0;
    Ok(r)
}

fn report(tasks: u64, sent: u64, started: Instant) -> Report {
    let mut r = Report::new("classic".into(), common::protocol::Dispatch::Push, tasks);
    r.sent = sent;
    r.send_ms = started.elapsed().as_secs_f64() * 1000.0;
    r
}
