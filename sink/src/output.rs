//! Results as JSON Lines, in completion order or (`--ordered`) input order.

use std::collections::BTreeMap;
use std::io::Write;

/// One line of output:
///
/// ```text
/// {"task":3,"batch":"9f…","attempt":1,"worker":"host:123","status":"ok","exit_code":0,
///  "duration_ms":10.123,"latency_ms":10.456,"output":"…","error":""}
/// ```
///
/// `exit_code` and `latency_ms` are left out when unknown.
#[derive(Debug)]
pub struct Line<'a> {
    pub task: u64,
    pub batch: &'a str,
    pub attempt: u32,
    /// The worker's name, already a JSON string (quoted and escaped).
    pub worker_json: &'a str,
    pub status: &'static str,
    pub exit_code: Option<i32>,
    pub duration_us: u64,
    pub latency_us: Option<u64>,
    pub output: &'a [u8],
    pub error: &'a [u8],
}

/// Quotes and escapes `text` as a JSON string.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

impl Line<'_> {
    /// Renders the line. Written by hand because the sink renders one line
    /// per task and serde's field-by-field writing was its largest cost.
    fn render(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(b"{\"task\":");
        out.extend_from_slice(int.format(self.task).as_bytes());
        out.extend_from_slice(b",\"batch\":\"");
        out.extend_from_slice(self.batch.as_bytes());
        out.extend_from_slice(b"\",\"attempt\":");
        out.extend_from_slice(int.format(self.attempt).as_bytes());
        out.extend_from_slice(b",\"worker\":");
        out.extend_from_slice(self.worker_json.as_bytes());
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.push(b'"');
        if let Some(code) = self.exit_code {
            out.extend_from_slice(b",\"exit_code\":");
            out.extend_from_slice(int.format(code).as_bytes());
        }
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration_us);
        if let Some(us) = self.latency_us {
            out.extend_from_slice(b",\"latency_ms\":");
            millis(out, us);
        }
        out.extend_from_slice(b",\"output\":");
        text(out, self.output)?;
        out.extend_from_slice(b",\"error\":");
        text(out, self.error)?;
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// Microseconds as milliseconds with three decimals.
fn millis(out: &mut Vec<u8>, us: u64) {
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(int.format(us / 1000).as_bytes());
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Bytes as a JSON string (invalid UTF-8 replaced).
fn text(out: &mut Vec<u8>, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        out.extend_from_slice(b"\"\"");
        return Ok(());
    }
    serde_json::to_writer(&mut *out, &String::from_utf8_lossy(bytes))?;
    Ok(())
}

/// Writes lines, holding back early arrivals when the order must follow the
/// input.
pub struct Output {
    out: Box<dyn Write + Send>,
    /// `Some` with `--ordered`: lines waiting for their predecessors.
    pending: Option<BTreeMap<u64, Vec<u8>>>,
    next: u64,
    /// One line is serialized here first, then written with one call: far
    /// cheaper than serde's many small writes through a boxed writer.
    line: Vec<u8>,
}

impl Output {
    pub fn new(out: Box<dyn Write + Send>, ordered: bool) -> Self {
        Output {
            out,
            pending: ordered.then(BTreeMap::new),
            next: 0,
            line: Vec::with_capacity(512),
        }
    }

    pub fn write(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        self.line.clear();
        line.render(&mut self.line)?;
        match &mut self.pending {
            None => self.out.write_all(&self.line),
            Some(pending) => {
                pending.insert(line.task, self.line.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_json_with_every_field() {
        let name = json_string("host \"a\":1");
        let line = Line {
            task: 7,
            batch: "00ff",
            attempt: 2,
            worker_json: &name,
            status: "failed",
            exit_code: Some(-1),
            duration_us: 12_005,
            latency_us: Some(3),
            output: b"tab\there\n",
            error: b"\xffbad",
        };
        let mut buf = Vec::new();
        line.render(&mut buf).unwrap();
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["task"], 7);
        assert_eq!(v["worker"], "host \"a\":1");
        assert_eq!(v["exit_code"], -1);
        assert_eq!(v["duration_ms"], 12.005);
        assert_eq!(v["latency_ms"], 0.003);
        assert_eq!(v["output"], "tab\there\n");
        assert_eq!(v["error"], "\u{fffd}bad");
        let plain = Line {
            exit_code: None,
            latency_us: None,
            output: b"",
            ..line
        };
        buf.clear();
        plain.render(&mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v.get("exit_code").is_none() && v.get("latency_ms").is_none());
    }
}
