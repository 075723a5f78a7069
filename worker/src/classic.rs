//! `--classic`: the guide's taskwork / taskwork2 wire format.
//!
//! A task is one frame holding the workload in decimal milliseconds ("42");
//! the result is an empty frame; any message on the control socket means kill.

use common::drops::Drops;
use common::work::Work;

use crate::executor::Executor;
use crate::{Handler, TaskInfo};

impl<H: Handler> Executor<H> {
    /// Runs one classic task. Returns false for a message that is not a task
    /// at all (several frames), which is dropped. A workload that is not a
    /// number is logged and counted, and still answered (as 0 ms), because the
    /// guide's sink counts replies and would otherwise wait forever.
    pub(crate) fn classic_task(&self, frames: &[zmq::Message], drops: &mut Drops) -> bool {
        if frames.len() != 1 {
            drops.note(
                "tasks",
                "not classic",
                format!("{} frames where the guide sends one", frames.len()),
            );
            return false;
        }
        let text = std::str::from_utf8(&frames[0]).unwrap_or("").trim();
        let ms = match text.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => {
                drops.note(
                    "tasks",
                    "not a number",
                    format!(
                        "workload {:?} is not decimal milliseconds; answered as 0 ms",
                        String::from_utf8_lossy(&frames[0])
                    ),
                );
                0
            }
        };
        let info = TaskInfo {
            batch: 0,
            task: 0,
            attempt: 1,
            stop: &self.stop,
        };
        let _ = self.handler.run(&info, &Work::Sleep { ms });
        true
    }
}
