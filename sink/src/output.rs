//! Results as JSON Lines, in completion order or (`--ordered`) input order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

/// One line of output.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub task: u64,
    pub batch: &'a str,
    pub attempt: u32,
    pub worker: &'a str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub output: Cow<'a, str>,
    pub error: Cow<'a, str>,
}

/// Writes lines, holding back early arrivals when the order must follow the
/// input.
pub struct Output {
    out: Box<dyn Write + Send>,
    /// `Some` with `--ordered`: lines waiting for their predecessors.
    pending: Option<BTreeMap<u64, Vec<u8>>>,
    next: u64,
}

impl Output {
    pub fn new(out: Box<dyn Write + Send>, ordered: bool) -> Self {
        Output { out, pending: ordered.then(BTreeMap::new), next: 0 }
    }

    pub fn write(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        match &mut self.pending {
            None => {
                serde_json::to_writer(&mut self.out, line)?;
                self.out.write_all(b"\n")
            }
            Some(pending) => {
                let mut buf = serde_json::to_vec(line)?;
                buf.push(b'\n');
                pending.insert(line.task, buf);
                while let Some(buf) = pending.remove(&self.next) {
                    self.out.write_all(&buf)?;
                    self.next += 1;
                }
                Ok(())
            }
        }
    }

    /// Writes whatever is held back (a stop before the batch completed), in
    /// order, then flushes.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(pending) = &mut self.pending {
            for buf in std::mem::take(pending).into_values() {
                self.out.write_all(&buf)?;
            }
        }
        self.out.flush()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
