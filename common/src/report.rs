//! Pieces of the end-of-run reports: latency percentiles, aligned tables, and
//! the one way a report file is written ([`write_json_file`]).

use serde::Serialize;

/// Percentiles of a set of durations, recorded in microseconds.
#[derive(Debug)]
pub struct Latency(hdrhistogram::Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Three significant figures from 1 µs up to about a day, auto-resizing.
        let mut h = hdrhistogram::Histogram::new(3).expect("3 significant figures is valid");
        h.auto(true);
        Latency(h)
    }
}

/// p50, p99 and max of a [`Latency`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl Latency {
    /// Records one duration in µs (0 counts as 1).
    pub fn record_us(&mut self, us: u64) {
        let _ = self.0.record(us.max(1));
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p99 and max so far; all 0 when nothing was recorded.
    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(self.0.value_at_quantile(0.5)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// A plain-text table: the first row is the heading; columns after the first
/// are right-aligned.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        out.push_str("  ");
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            } else {
                out.push_str(&format!("  {cell:>w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// Writes `value` as one line of JSON to `path`, whole or not at all: it is
/// written beside the file and renamed over it, so whoever waits for a
/// report (a script, a test) never reads half of one. The one way every
/// role writes a report file.
pub fn write_json_file<T: Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    let mut json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    json.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_table() {
        let mut l = Latency::default();
        for us in 1..=1000 {
            l.record_us(us * 1000);
        }
        let p = l.percentiles();
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
        let t = table(&[
            vec!["worker".into(), "tasks".into()],
            vec!["a".into(), "1000".into()],
        ]);
        assert_eq!(t, "  worker  tasks\n  a        1000\n");
    }

    #[test]
    fn an_empty_latency_reads_zero_and_percentiles_print_in_ms() {
        let mut l = Latency::default();
        assert_eq!((l.count(), l.percentiles()), (0, Percentiles::default()));
        l.record_us(0);
        l.record_us(1500);
        assert_eq!(l.count(), 2, "0 µs is counted, as 1 µs");
        let p = l.percentiles();
        assert!((p.max_ms - 1.5).abs() < 0.01, "{p:?}");
        assert_eq!(
            p.to_string(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max 1.50 ms",
                p.p50_ms, p.p99_ms
            )
        );
        // Ragged rows: missing cells are left out, columns still line up.
        let t = table(&[
            vec!["worker".into(), "tasks".into(), "share".into()],
            vec!["a:1".into(), "7".into()],
        ]);
        assert_eq!(t, "  worker  tasks  share\n  a:1         7\n");
    }

    #[test]
    fn a_report_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_json_file(&path, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/r.json");
        assert!(write_json_file(&missing, &1).is_err());
    }
}
