//! The output: results as JSON Lines, written in completion order or
//! (`--ordered`) input order, and read back by `--resume`. One [`Line`]
//! type serves both ways.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::collector::{self, Held, Tap};
use crate::{Config, Error};

/// One line of output:
///
/// ```text
/// {"task":3,"batch":"9f…","attempt":1,"worker":"host:123","thread":0,"status":"ok","exit_code":0,
///  "duration_ms":10.123,"start_ms":4.210,"end_ms":14.333,"latency_ms":10.456,"output":"…","error":""}
/// ```
///
/// `exit_code` and `latency_ms` are left out when unknown. `start_ms` and
/// `end_ms` place the run in the batch, on the sink's clock: `end_ms` is
/// when the sink received the result, from GO (the batch's start, which
/// the sink hears as the first task leaves), and `start_ms` is `end_ms`
/// less the run time the worker measured (never below 0). So hosts'
/// clocks need not agree; the price is that the delivery is counted in:
/// a result packed with others (RESULTS) can wait up to a millisecond on
/// its worker, one queued while the sink was away arrives late, and the
/// sink reads its clock once for a burst of up to 16 messages. They are
/// left out when no GO came before the result (a sink started with
/// `--resume` counts from the GO it heard). The ventilator's verdict on a
/// task it gave up (worker `"ventilator"`, thread 0) is placed when the
/// sink received it, with no run time: `start_ms` equals `end_ms`.
///
/// Reading a line back needs only `task`, `batch` and `status` (what
/// `--resume` uses); the rest is read when present (what `sink plot`
/// draws) and left at its default when absent, as in files written before
/// a field was added.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Line<'a> {
    /// The task's id.
    pub task: u64,
    /// The batch id, in hex.
    pub batch: &'a str,
    /// The attempt whose result this is.
    #[serde(default)]
    pub attempt: u32,
    /// The worker's name, already a JSON string (quoted and escaped).
    #[serde(default, rename = "worker", deserialize_with = "raw_json")]
    pub worker_json: &'a str,
    /// The worker thread that ran it (0 for the ventilator's verdict).
    #[serde(default)]
    pub thread: u16,
    /// `ok`, `failed`, `timed_out`, `panicked` or `rejected`.
    pub status: &'a str,
    /// The command's exit code, when it exited.
    #[serde(skip)]
    pub exit_code: Option<i32>,
    /// How long the task ran on its worker.
    #[serde(default, rename = "duration_ms", deserialize_with = "micros")]
    pub duration_us: u64,
    /// When it started, from the batch's start (see above).
    #[serde(default, rename = "start_ms", deserialize_with = "some_micros")]
    pub start_us: Option<u64>,
    /// When its result reached the sink, from the batch's start.
    #[serde(default, rename = "end_ms", deserialize_with = "some_micros")]
    pub end_us: Option<u64>,
    /// From the ventilator sending the task to the sink receiving its result.
    #[serde(skip)]
    pub latency_us: Option<u64>,
    /// Its output (invalid UTF-8 is replaced).
    #[serde(skip)]
    pub output: &'a [u8],
    /// Its error text (invalid UTF-8 is replaced).
    #[serde(skip)]
    pub error: &'a [u8],
}

/// Reads a JSON value as its text, borrowed from the line (how the
/// worker's name is kept: as the JSON string the line wrote).
fn raw_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
    let raw: &'de serde_json::value::RawValue = Deserialize::deserialize(d)?;
    Ok(raw.get())
}

/// Reads milliseconds (as written, three decimals) as microseconds.
fn micros<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let ms = f64::deserialize(d)?;
    Ok((ms * 1000.0).round().max(0.0) as u64)
}

/// [`micros`], for a field that may be absent.
fn some_micros<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    micros(d).map(Some)
}

/// Quotes and escapes `text` as a JSON string.
pub(crate) fn json_string(text: &str) -> String {
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
        out.extend_from_slice(b",\"thread\":");
        out.extend_from_slice(int.format(self.thread).as_bytes());
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.push(b'"');
        if let Some(code) = self.exit_code {
            out.extend_from_slice(b",\"exit_code\":");
            out.extend_from_slice(int.format(code).as_bytes());
        }
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration_us);
        if let Some(us) = self.start_us {
            out.extend_from_slice(b",\"start_ms\":");
            millis(out, us);
        }
        if let Some(us) = self.end_us {
            out.extend_from_slice(b",\"end_ms\":");
            millis(out, us);
        }
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

/// A line held back for `--ordered`, and its result for the collector.
type Waiting = (Vec<u8>, Option<Held>);

/// Writes lines, holding back early arrivals when the order must follow the
/// input; hands each line, as it is written, to a collector if there is
/// one.
pub(crate) struct Output {
    out: Box<dyn Write + Send>,
    /// `Some` with `--ordered`: lines waiting for their predecessors (with
    /// their result, for the collector).
    pending: Option<BTreeMap<u64, Waiting>>,
    next: u64,
    /// A library user's [`crate::Collector`], told of each line written.
    tap: Option<Box<dyn Tap>>,
    /// Lines are rendered straight into this buffer and handed to `out`
    /// a [`BUFFER`] at a time: one copy of each line, and one call through
    /// the boxed writer per many lines (serde's many small writes through
    /// it were once the sink's largest cost).
    buf: Vec<u8>,
    /// With `--ordered`, a line held back is rendered here first.
    line: Vec<u8>,
    /// When what was written is next handed to the operating system even
    /// if nothing asks for it (an ACK does).
    next_flush: Instant,
}

/// How long written lines may wait in our buffer when nothing is
/// acknowledged.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines gather in [`Output`]'s own buffer up to this size.
const BUFFER: usize = 64 * 1024;

impl Output {
    /// Writes to `out`; `ordered` holds early lines back.
    pub(crate) fn new(out: Box<dyn Write + Send>, ordered: bool) -> Self {
        Output {
            out,
            pending: ordered.then(BTreeMap::new),
            next: 0,
            tap: None,
            buf: Vec::with_capacity(BUFFER + 4096),
            line: Vec::with_capacity(512),
            next_flush: Instant::now(),
        }
    }

    /// Hands every line written from now on to `tap`.
    pub(crate) fn set_tap(&mut self, tap: Option<Box<dyn Tap>>) {
        self.tap = tap;
    }

    /// The collector, taken back at the end.
    pub(crate) fn take_tap(&mut self) -> Option<Box<dyn Tap>> {
        self.tap.take()
    }

    /// Writes one line of `batch` (or holds it back until its predecessors
    /// are out).
    pub(crate) fn write(&mut self, line: &Line<'_>, batch: u64) -> std::io::Result<()> {
        match &mut self.pending {
            None => {
                let start = self.buf.len();
                if let Err(e) = line.render(&mut self.buf) {
                    // No half line.
                    self.buf.truncate(start);
                    return Err(e);
                }
                if let Some(tap) = &mut self.tap {
                    collector::tell(&mut **tap, line, batch);
                }
            }
            Some(pending) => {
                self.line.clear();
                line.render(&mut self.line)?;
                let held = self.tap.is_some().then(|| Held::of(line, batch));
                pending.insert(line.task, (self.line.clone(), held));
                while let Some((text, held)) = pending.remove(&self.next) {
                    self.buf.extend_from_slice(&text);
                    if let (Some(tap), Some(held)) = (&mut self.tap, held) {
                        held.tell(&mut **tap);
                    }
                    self.next += 1;
                }
            }
        }
        if self.buf.len() >= BUFFER {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the buffered lines to the writer.
    fn hand_over(&mut self) -> std::io::Result<()> {
        let written = self.out.write_all(&self.buf);
        self.buf.clear();
        written
    }

    /// Writes whatever is held back (a stop before the batch completed), in
    /// order, then flushes.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        if let Some(pending) = &mut self.pending {
            for (text, held) in std::mem::take(pending).into_values() {
                self.buf.extend_from_slice(&text);
                if let (Some(tap), Some(held)) = (&mut self.tap, held) {
                    held.tell(&mut **tap);
                }
            }
        }
        self.flush()
    }

    /// Hands what is written to the operating system: before an ACK, so a
    /// killed sink loses nothing it acknowledged.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.hand_over()?;
        self.out.flush()
    }

    /// Flushes when the last flush is [`FLUSH_EVERY`] old.
    pub(crate) fn flush_if_due(&mut self, now: Instant) -> std::io::Result<()> {
        if now >= self.next_flush {
            self.flush()?;
            self.next_flush = now + FLUSH_EVERY;
        }
        Ok(())
    }
}

impl Drop for Output {
    /// What is buffered goes to the writer (whose own buffer is flushed
    /// when it is dropped), as a `BufWriter` would.
    fn drop(&mut self) {
        let _ = self.hand_over();
    }
}

/// Opens `--output`.
pub fn open_output(path: &Path) -> Result<Box<dyn Write + Send>, Error> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let file = std::fs::File::create(path).map_err(|source| Error::OpenOutput {
        path: path.to_owned(),
        source,
    })?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

/// Opens `--output` as the configuration says: appending with `--resume`
/// (after [`Sink::bind`](crate::Sink::bind) has read it back), else from
/// empty.
pub fn open_output_for(config: &Config) -> Result<Box<dyn Write + Send>, Error> {
    if !config.resume {
        return open_output(&config.output);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.output)
        .map_err(|source| Error::OpenOutput {
            path: config.output.clone(),
            source,
        })?;
    Ok(Box::new(std::io::BufWriter::new(file)))
}

/// What a sink resuming finds in its output: one batch's results.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// The batch they belong to.
    pub batch: u64,
    /// Tasks whose result was ok.
    pub ok: Vec<u64>,
    /// Tasks whose result was not.
    pub failed: Vec<u64>,
}

impl Resumed {
    /// Results read back.
    pub(crate) fn len(&self) -> usize {
        self.ok.len() + self.failed.len()
    }
}

/// What `--resume` finds in `--output` (nothing without `--resume`): the
/// flags are checked first, since reading back needs a file that is
/// appended to as results come.
pub(crate) fn read_back_for(config: &Config) -> Result<Option<Resumed>, Error> {
    if !config.resume {
        return Ok(None);
    }
    if config.output.as_os_str() == "-" {
        return Err(Error::Usage(
            "--resume reads back --output: give it a file, not stdout".into(),
        ));
    }
    if config.ordered {
        return Err(Error::Usage(
            "--resume appends results as they come; it cannot be combined with --ordered".into(),
        ));
    }
    let resumed = read_back(&config.output)?;
    if let Some(r) = &resumed {
        log::info!(
            "resuming batch {:016x} from {}: {} results already there",
            r.batch,
            config.output.display(),
            r.len()
        );
    }
    Ok(resumed)
}

/// Reads back an output. A last line cut short (the sink was killed while
/// writing it) is cut off the file; any other line that is not a result of
/// the same batch is an error.
pub(crate) fn read_back(path: &Path) -> Result<Option<Resumed>, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::OpenOutput {
                path: path.to_owned(),
                source,
            });
        }
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        log::warn!(
            "{}: cutting off a last line left half-written ({} bytes)",
            path.display(),
            text.len() - whole
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole as u64));
        f.map_err(|source| Error::OpenOutput {
            path: path.to_owned(),
            source,
        })?;
    }
    let mut resumed: Option<Resumed> = None;
    for (i, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::Resume {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let l: Line =
            serde_json::from_slice(line).map_err(|e| bad(format!("not a result: {e}")))?;
        let batch = u64::from_str_radix(l.batch, 16)
            .map_err(|_| bad(format!("batch {:?} is not a batch id", l.batch)))?;
        let r = resumed.get_or_insert_with(|| Resumed {
            batch,
            ..Resumed::default()
        });
        if r.batch != batch {
            return Err(bad(format!(
                "results of two batches ({:016x} and {batch:016x}): resume works on one batch's output",
                r.batch
            )));
        }
        if l.status == "ok" {
            r.ok.push(l.task);
        } else {
            r.failed.push(l.task);
        }
    }
    Ok(resumed)
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
            thread: 3,
            status: "failed",
            exit_code: Some(-1),
            duration_us: 12_005,
            start_us: Some(1_000),
            end_us: Some(13_005),
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
        assert_eq!(
            (&v["thread"], &v["start_ms"], &v["end_ms"]),
            (&3.into(), &1.0.into(), &13.005.into())
        );
        // And back, as `sink plot` reads it.
        let back: Line = serde_json::from_slice(&buf).unwrap();
        assert_eq!((back.task, back.attempt, back.thread), (7, 2, 3));
        assert_eq!(
            back.worker_json, name,
            "the name as the JSON string written"
        );
        assert_eq!(
            (back.duration_us, back.start_us, back.end_us),
            (12_005, Some(1_000), Some(13_005))
        );
        let plain = Line {
            exit_code: None,
            latency_us: None,
            start_us: None,
            end_us: None,
            output: b"",
            ..line
        };
        buf.clear();
        plain.render(&mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v.get("exit_code").is_none() && v.get("latency_ms").is_none());
        assert!(v.get("start_ms").is_none() && v.get("end_ms").is_none());
        // A line of an older sink, without them, reads as before.
        let old: Line = serde_json::from_str(
            "{\"task\":1,\"batch\":\"aa\",\"attempt\":1,\"worker\":\"w:1\",\"status\":\"ok\",\"duration_ms\":2.5,\"output\":\"\",\"error\":\"\"}",
        )
        .unwrap();
        assert_eq!(
            (old.thread, old.duration_us, old.start_us, old.end_us),
            (0, 2_500, None, None)
        );
    }

    fn line(task: u64, status: &str) -> Line<'_> {
        Line {
            task,
            batch: "00000000000000aa",
            attempt: 1,
            worker_json: "\"w:1\"",
            status,
            ..Line::default()
        }
    }

    /// A writer the test can read after the output is done with it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn tasks_in(text: &[u8]) -> Vec<u64> {
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["task"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn ordered_output_holds_early_lines_back_until_finish() {
        let buf = Shared::default();
        let mut out = Output::new(Box::new(buf.clone()), true);
        for t in [2, 0, 4, 1] {
            out.write(&line(t, "ok"), 1).unwrap();
        }
        assert!(buf.0.lock().unwrap().is_empty(), "buffered until a flush");
        out.flush().unwrap();
        assert_eq!(tasks_in(&buf.0.lock().unwrap()), vec![0, 1, 2]);
        out.finish().unwrap();
        assert_eq!(tasks_in(&buf.0.lock().unwrap()), vec![0, 1, 2, 4]);
        let buf = Shared::default();
        let mut out = Output::new(Box::new(buf.clone()), false);
        for t in [2, 0] {
            out.write(&line(t, "ok"), 1).unwrap();
        }
        out.flush().unwrap();
        assert_eq!(tasks_in(&buf.0.lock().unwrap()), vec![2, 0]);
        // Dropped without a flush: what was written still reaches the
        // writer.
        out.write(&line(5, "ok"), 1).unwrap();
        drop(out);
        assert_eq!(tasks_in(&buf.0.lock().unwrap()), vec![2, 0, 5]);
    }

    #[test]
    fn what_is_written_reads_back_and_a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut out = Output::new(open_output(&path).unwrap(), false);
        out.write(&line(0, "ok"), 1).unwrap();
        out.write(&line(3, "timed_out"), 1).unwrap();
        out.write(&line(1, "ok"), 1).unwrap();
        out.finish().unwrap();
        drop(out);
        let whole = std::fs::read(&path).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"task\":2,\"batch\":\"00");
        std::fs::write(&path, &torn).unwrap();
        let r = read_back(&path).unwrap().unwrap();
        assert_eq!(
            r,
            Resumed {
                batch: 0xaa,
                ok: vec![0, 1],
                failed: vec![3],
            }
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "cut at the last whole line"
        );
        assert_eq!(read_back(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn reading_back_refuses_a_line_that_is_not_a_result_of_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        for (text, says) in [
            (
                "{\"task\":0,\"batch\":\"aa\",\"status\":\"ok\"}\nnot json\n",
                "line 2",
            ),
            (
                "{\"task\":0,\"batch\":\"zz\",\"status\":\"ok\"}\n",
                "not a batch id",
            ),
            (
                "{\"task\":0,\"batch\":\"aa\",\"status\":\"ok\"}\n\n{\"task\":1,\"batch\":\"bb\",\"status\":\"ok\"}\n",
                "line 3: results of two batches",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_back(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
