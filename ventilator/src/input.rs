//! Where a batch comes from: generated like the guide's, or read one task per
//! line from a file or stdin.
//!
//! Input lines: blank lines and lines starting with `#` are skipped; a line
//! starting with `{` is a JSON task (`{"kind":"sleep","ms":10}`,
//! `{"kind":"exec","command":"gzip -9 big.log","timeout_ms":60000}`,
//! `{"kind":"primes","from":0,"to":100000}`, `{"kind":"data","data":...}`);
//! any other line is a plain task, an `exec` command unless `--plain` says
//! otherwise. A malformed line stops the run before anything is sent, naming
//! its line number.

use std::io::BufRead;
use std::str::FromStr;

use common::work::Work;
use rand::{RngExt, SeedableRng};

/// What a plain (non-JSON) input line means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Plain {
    /// A shell command.
    Exec,
    /// Milliseconds to sleep (the guide's batch files).
    Sleep,
    /// A string for a custom handler.
    Data,
}

/// A generated task kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Sleep the workload in milliseconds (the guide's task).
    Sleep,
    /// Count primes in a range as wide as the workload; the ranges of a batch
    /// follow each other from 0.
    Primes,
    /// Nothing: measures the pipeline.
    Noop,
}

/// `N` (every task the same) or `random:A-B` (uniform, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Fixed(u64),
    Random(u64, u64),
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("workload {s:?}: expected a number (10) or random:A-B (random:1-100)");
        if let Some(range) = s.strip_prefix("random:") {
            let (a, b) = range.split_once('-').ok_or_else(bad)?;
            let (a, b) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(format!("workload {s:?}: the range is empty ({a} > {b})"));
            }
            return Ok(Workload::Random(a, b));
        }
        s.trim().parse().map(Workload::Fixed).map_err(|_| bad())
    }
}

/// A line of input that cannot be a task.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("cannot read the input")]
    Read(#[from] std::io::Error),
    #[error("the input holds no task")]
    Empty,
}

/// Makes `count` tasks the guide's way.
pub fn generate(count: u64, kind: Kind, workload: Workload, seed: u64) -> Vec<Work> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next_from = 0u64;
    (0..count)
        .map(|_| {
            let w = match workload {
                Workload::Fixed(n) => n,
                Workload::Random(a, b) => rng.random_range(a..=b),
            };
            match kind {
                Kind::Sleep => Work::Sleep { ms: w },
                Kind::Noop => Work::Noop,
                Kind::Primes => {
                    let from = next_from;
                    next_from = next_from.saturating_add(w);
                    Work::Primes {
                        from,
                        to: next_from,
                    }
                }
            }
        })
        .collect()
}

/// Reads every task from `reader`; refuses the whole input at its first
/// malformed line.
pub fn parse(
    reader: impl BufRead,
    plain: Plain,
    max_bytes: usize,
) -> Result<Vec<Work>, InputError> {
    let mut tasks = Vec::new();
    let mut scratch = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => InputError::Line {
                line: line_no,
                reason: "not valid UTF-8".into(),
            },
            _ => InputError::Read(e),
        })?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let bad = |reason: String| InputError::Line {
            line: line_no,
            reason,
        };
        let work = if text.starts_with('{') {
            serde_json::from_str::<Work>(text).map_err(|e| bad(format!("not a task: {e}")))?
        } else {
            match plain {
                Plain::Exec => Work::Exec {
                    command: text.to_string(),
                    timeout_ms: None,
                },
                Plain::Sleep => Work::Sleep {
                    ms: text
                        .parse()
                        .map_err(|_| bad(format!("{text:?} is not a number of milliseconds")))?,
                },
                Plain::Data => Work::Data {
                    data: serde_json::Value::String(text.to_string()),
                },
            }
        };
        if let Work::Primes { from, to } = work
            && from > to
        {
            return Err(bad(format!("primes range {from}..{to} is backwards")));
        }
        scratch.clear();
        common::protocol::encode_task(&mut scratch, 0, &work);
        if scratch.len() > max_bytes {
            return Err(bad(format!(
                "the task is {} bytes, more than a message may carry (--max-msg-size)",
                scratch.len()
            )));
        }
        tasks.push(work);
    }
    if tasks.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_json_comments() {
        let text = "# a batch\n\necho hi\n{\"kind\":\"sleep\",\"ms\":5}\n{\"kind\":\"primes\",\"from\":1,\"to\":9}\n";
        let tasks = parse(text.as_bytes(), Plain::Exec, usize::MAX).unwrap();
        assert_eq!(
            tasks,
            vec![
                Work::Exec {
                    command: "echo hi".into(),
                    timeout_ms: None
                },
                Work::Sleep { ms: 5 },
                Work::Primes { from: 1, to: 9 },
            ]
        );
        assert_eq!(
            parse("82\n15\n".as_bytes(), Plain::Sleep, usize::MAX).unwrap(),
            vec![Work::Sleep { ms: 82 }, Work::Sleep { ms: 15 }]
        );
    }

    #[test]
    fn malformed_lines_name_their_number() {
        for (text, line) in [
            ("echo ok\n{\"kind\":\"sleep\"}\n", 2),
            ("{\"kind\":\"nap\",\"ms\":1}\n", 1),
            ("1\n2\nthree\n", 3),
            ("{\"kind\":\"sleep\",\"ms\":1,\"extra\":2}", 1),
            ("{\"kind\":\"primes\",\"from\":9,\"to\":1}", 1),
        ] {
            let plain = if text.starts_with('1') {
                Plain::Sleep
            } else {
                Plain::Exec
            };
            match parse(text.as_bytes(), plain, usize::MAX) {
                Err(InputError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("# only\n\n".as_bytes(), Plain::Exec, usize::MAX),
            Err(InputError::Empty)
        ));
        assert!(matches!(
            parse(
                "echo small\necho this one is too long\n".as_bytes(),
                Plain::Exec,
                30
            ),
            Err(InputError::Line { line: 2, .. })
        ));
        assert!(matches!(
            parse(&b"\xff\n"[..], Plain::Exec, usize::MAX),
            Err(InputError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn generation_is_seeded_and_bounded() {
        let a = generate(100, Kind::Sleep, "random:1-100".parse().unwrap(), 7);
        assert_eq!(a, generate(100, Kind::Sleep, Workload::Random(1, 100), 7));
        assert_ne!(a, generate(100, Kind::Sleep, Workload::Random(1, 100), 8));
        assert!(
            a.iter()
                .all(|w| matches!(w, Work::Sleep { ms } if (1..=100).contains(ms)))
        );
        let p = generate(3, Kind::Primes, Workload::Fixed(10), 0);
        assert_eq!(
            p,
            vec![
                Work::Primes { from: 0, to: 10 },
                Work::Primes { from: 10, to: 20 },
                Work::Primes { from: 20, to: 30 }
            ]
        );
        assert!("random:5-1".parse::<Workload>().is_err());
        assert!("ten".parse::<Workload>().is_err());
    }
}
