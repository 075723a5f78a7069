//! The end of a batch and of the pool: END to the workers (control PUB)
//! and DONE to the ventilator (feedback ROUTER), repeated until every worker
//! said BYE and the ventilator said BYE, or their time is up; a START that
//! comes meanwhile is kept for the next batch (`--serve`). And KILL, which
//! ends a standing pool.

use std::time::{Duration, Instant};

use common::Shutdown;
use common::protocol::Message;
use common::sockets::{self, Recv};

use crate::{Collecting, Error};

/// How often END and DONE are said again while finishing: a PUB drops
/// what a subscriber that is reconnecting would miss.
const SAY_AGAIN: Duration = Duration::from_millis(100);

/// How long finishing waits: for the workers' BYE a second, for the
/// ventilator's three.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    workers_until: Instant,
    ventilator_until: Instant,
    /// A standing pool's workers stay (END ends only the batch): there is
    /// no BYE of theirs to wait for.
    standing: bool,
}

impl Ending {
    /// Finishing that starts `now`.
    pub(crate) fn new(now: Instant, standing: bool) -> Ending {
        Ending {
            workers_until: now + Duration::from_secs(1),
            ventilator_until: now + Duration::from_secs(3),
            standing,
        }
    }

    /// A new ventilator asked for the batch at `now`: it gets the time the
    /// first one had to hear DONE.
    pub(crate) fn ventilator_again(&mut self, now: Instant) {
        self.ventilator_until = now + Duration::from_secs(3);
    }

    /// Whether finishing is over, with `alive` workers not yet gone and
    /// the ventilator's BYE heard or not.
    pub(crate) fn is_over(&self, now: Instant, alive: usize, ventilator_bye: bool) -> bool {
        let waiting = if self.standing { 0 } else { alive };
        (waiting == 0 || now >= self.workers_until)
            && (ventilator_bye || now >= self.ventilator_until)
    }
}

/// What a message on the feedback ROUTER is while a batch finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meanwhile {
    /// The next batch's ventilator, already here (`--serve`): its START
    /// waits for the next collector rather than for its own repetition.
    NextStart,
    /// For the link (only BYE matters now).
    Link,
}

/// Where a message read while finishing `batch` goes: a standing pool
/// keeps the START of another batch for the next collector; the START of
/// this one (its ventilator started again) is the link's.
pub(crate) fn meanwhile(standing: bool, batch: u64, message: &Message) -> Meanwhile {
    match message {
        Message::Start(info) if standing && info.batch != batch => Meanwhile::NextStart,
        _ => Meanwhile::Link,
    }
}

impl Collecting {
    /// END to the workers and DONE to the ventilator, repeated until every
    /// worker said BYE or a second has passed (PUB drops what a subscriber
    /// that is reconnecting would miss), and until the ventilator said BYE
    /// or three seconds have passed.
    pub(crate) fn finish(
        &mut self,
        control: &zmq::Socket,
        results: &zmq::Socket,
        feedback: &zmq::Socket,
        frames: &mut Vec<zmq::Message>,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let Some(b) = &self.batch else { return Ok(()) };
        let end = Message::End { batch: b.id() }.frames();
        log::info!(
            "batch {} complete: {} ok, {} failed; publishing END",
            b.hex(),
            b.received().ok(),
            b.received().failed()
        );
        let standing = self.serve_dir.is_some();
        let mut ending = Ending::new(Instant::now(), standing);
        // END and DONE go out again every SAY_AGAIN; between, both sockets
        // are waited on together and finishing ends at the BYE that
        // completes it, not at the end of a slice.
        let mut say_at = Instant::now();
        loop {
            let now = Instant::now();
            if now >= say_at {
                let _ = control.send_multipart(end.iter().map(|f| &f[..]), zmq::DONTWAIT);
                if let Some(b) = &self.batch {
                    self.link.send_done(feedback, b);
                }
                say_at = now + SAY_AGAIN;
            }
            if shutdown.is_triggered()
                || ending.is_over(
                    now,
                    self.workers.alive(now) + self.workers.unheard(),
                    self.link.heard_bye(),
                )
            {
                break;
            }
            self.clock.refresh();
            {
                let mut items = [
                    results.as_poll_item(zmq::POLLIN),
                    feedback.as_poll_item(zmq::POLLIN),
                ];
                let wait = say_at.saturating_duration_since(Instant::now());
                match zmq::poll(&mut items, wait.as_millis() as i64 + 1) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(zmq::Error::ETERM) => break,
                    Err(e) => return Err(common::Error::zmq("polling", e).into()),
                }
            }
            while let Recv::Message(()) = sockets::recv_frames_now(results, frames)? {
                self.on_results_socket(frames)?;
            }
            while let Recv::Message(()) = sockets::recv_frames_now(feedback, frames)? {
                if let Some((identity, rest)) = frames.split_first()
                    && let Ok(message) = Message::decode(rest)
                {
                    let batch = self.batch.as_ref().map_or(0, |b| b.id());
                    match meanwhile(standing, batch, &message) {
                        Meanwhile::NextStart => {
                            self.next_start = Some(frames.iter().map(|f| f.to_vec()).collect());
                        }
                        Meanwhile::Link => {
                            if self.link.on_finishing(identity, &message, batch) {
                                ending.ventilator_again(Instant::now());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// KILL to every worker: the pool ends. Said a few times over a moment,
/// since a PUB drops what a subscriber that is reconnecting would miss.
pub(crate) fn kill_pool(control: &zmq::Socket) {
    log::info!("the pool ends: KILL to every worker");
    let kill = Message::Kill { batch: 0 }.frames();
    for _ in 0..3 {
        let _ = control.send_multipart(kill.iter().map(|f| &f[..]), zmq::DONTWAIT);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the last one leave before the socket closes.
    let _ = control.set_linger(500);
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::{BatchInfo, Dispatch};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_batch_waits_a_second_for_the_workers_bye_and_three_for_the_ventilators() {
        let t0 = Instant::now();
        let e = Ending::new(t0, false);
        assert!(!e.is_over(t0, 2, true), "workers still there");
        assert!(e.is_over(t0, 0, true), "all said BYE, and the ventilator");
        assert!(e.is_over(t0 + 1000 * MS, 2, true), "a second is enough");
        assert!(!e.is_over(t0, 0, false), "the ventilator's BYE not yet");
        assert!(!e.is_over(t0 + 2999 * MS, 0, false));
        assert!(e.is_over(t0 + 3000 * MS, 2, false), "all time is up");
    }

    #[test]
    fn a_standing_pool_does_not_wait_for_its_workers() {
        let t0 = Instant::now();
        let e = Ending::new(t0, true);
        assert!(e.is_over(t0, 5, true));
        assert!(!e.is_over(t0, 5, false), "but for its ventilator");
    }

    #[test]
    fn a_start_while_finishing_is_kept_only_by_a_standing_pool() {
        let start = Message::Start(BatchInfo {
            batch: 2,
            tasks: 1,
            expected_ms: 0,
            dispatch: Dispatch::Credit,
            resync: false,
        });
        assert_eq!(meanwhile(true, 1, &start), Meanwhile::NextStart);
        assert_eq!(meanwhile(false, 1, &start), Meanwhile::Link);
        assert_eq!(meanwhile(true, 1, &Message::Bye(None)), Meanwhile::Link);
        // The batch being finished, asked for again: the link answers.
        assert_eq!(meanwhile(true, 2, &start), Meanwhile::Link);
    }
}
