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
//!
//! A JSON task may also carry `"id"` (a name other tasks refer to),
//! `"after"` (a list of ids, or of 0-based task indices, it must wait for),
//! `"stage"` (a number: later stages wait for all earlier ones) and `"cost"`
//! (a hint for `--order cost`); see [`crate::plan`]. A data task may name a
//! kind of its own with `"type"` (`{"kind":"data","type":"resize","data":...}`):
//! it then goes only to workers that serve that kind (see
//! [`common::kinds`]).

use std::io::BufRead;
use std::str::FromStr;

use common::work::Work;

use crate::plan::Plan;
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

/// `--command`: a command line that each input line fills (every line then
/// is a name, taken as it is: no comment, no JSON task, no trimming), as GNU
/// parallel's replacement strings do: `{}` is the line and `{.}` the line
/// without its extension, each shell-quoted so that the line is one
/// argument whatever it holds (spaces, quotes, `$(...)`); `{#}` is the
/// task's number (1, 2, ...). A command without `{}` or `{.}` gets the
/// quoted line at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

impl FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("an empty command".into());
        }
        Ok(Template(s.to_string()))
    }
}

impl Template {
    /// The command for `line`, the `number`th task (from 1).
    pub fn fill(&self, line: &str, number: u64) -> String {
        let mut out = String::with_capacity(self.0.len() + line.len() + 8);
        let mut rest = self.0.as_str();
        let mut placed = false;
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{}") {
                out.push_str(&shell_quote(line));
                placed = true;
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{.}") {
                out.push_str(&shell_quote(without_extension(line)));
                placed = true;
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{#}") {
                out.push_str(&number.to_string());
                rest = after;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        if !placed {
            out.push(' ');
            out.push_str(&shell_quote(line));
        }
        out
    }
}

/// `text` as one word for `sh`: as it is when it is plain, else in single
/// quotes (a quote inside closes them, is escaped, and opens them again).
pub fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:@%+=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A path without its extension: from the last dot of its last component
/// (a leading dot, as in `.profile`, is no extension).
fn without_extension(path: &str) -> &str {
    let name_at = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_at..].rfind('.') {
        Some(dot) if dot > 0 => &path[..name_at + dot],
        _ => path,
    }
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
    /// Every task the same.
    Fixed(u64),
    /// Uniform between the two, inclusive.
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
    /// A line that is not a task.
    #[error("input line {line}: {reason}")]
    Line {
        /// Its number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A task a [`crate::source::Source`] gave that cannot be sent.
    #[error("task {task} of the source: {reason}")]
    Task {
        /// Its number, from 0.
        task: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The input could not be read.
    #[error("cannot read the input")]
    Read(#[from] std::io::Error),
    /// Only blank lines and comments (or a source that gave nothing).
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
pub fn parse(reader: impl BufRead, plain: Plain, max_bytes: usize) -> Result<Plan, InputError> {
    parse_with(reader, plain, None, max_bytes)
}

/// [`parse`], with plain lines filled into `command` (`--command`) when
/// given. A line that holds a control character (a carriage return, say)
/// is refused then, naming it: it cannot be the one argument it would be.
pub fn parse_with(
    reader: impl BufRead,
    plain: Plain,
    command: Option<&Template>,
    max_bytes: usize,
) -> Result<Plan, InputError> {
    let mut tasks = Vec::new();
    let mut plan = Plan::default();
    // Per task: its line, and what it runs after as written.
    let mut refs: Vec<(usize, Vec<serde_json::Value>)> = Vec::new();
    let mut named = std::collections::HashMap::new();
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
        // With --command every line is a name, taken as it is (spaces,
        // a leading `#` or `{` included), as xargs and GNU parallel take
        // lines: only an empty line is skipped. Else lines are trimmed,
        // and comments skipped.
        let text = if command.is_some() {
            line.as_str()
        } else {
            line.trim()
        };
        if text.is_empty() || (command.is_none() && text.starts_with('#')) {
            continue;
        }
        let bad = |reason: String| InputError::Line {
            line: line_no,
            reason,
        };
        let (mut id, mut after, mut stage, mut cost) = (None, Vec::new(), 0u32, None);
        let mut own_kind: Option<String> = None;
        let work = if command.is_none() && text.starts_with('{') {
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|e| bad(not_a_task(&e)))?;
            if let Some(v) = map.remove("id") {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad("\"id\" must be a string".into()))?;
                if named.insert(v.to_string(), tasks.len() as u64).is_some() {
                    return Err(bad(format!("the id {v:?} is used twice")));
                }
                id = Some(v.to_string());
            }
            if let Some(v) = map.remove("after") {
                after = match v {
                    serde_json::Value::Array(a) => a,
                    one => vec![one],
                };
            }
            if let Some(v) = map.remove("stage") {
                stage = v
                    .as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .ok_or_else(|| bad("\"stage\" must be a whole number".into()))?;
            }
            if let Some(v) = map.remove("cost") {
                cost = Some(
                    v.as_u64()
                        .ok_or_else(|| bad("\"cost\" must be a whole number".into()))?,
                );
            }
            if let Some(v) = map.remove("type") {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad("\"type\" must be a string".into()))?;
                common::kinds::check_type(v).map_err(bad)?;
                own_kind = Some(v.to_string());
            }
            let work = serde_json::from_value::<Work>(serde_json::Value::Object(map))
                .map_err(|e| bad(not_a_task(&e)))?;
            if own_kind.is_some() && !matches!(work, Work::Data { .. }) {
                return Err(bad(format!(
                    "\"type\" names a data task's own kind; this task's kind is {:?} already",
                    work.kind()
                )));
            }
            work
        } else {
            match (plain, command) {
                (Plain::Exec, Some(template)) => {
                    if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\t') {
                        return Err(bad(format!(
                            "a control character (U+{:04X}) in the line: a name with one cannot be given as a line of input",
                            c as u32
                        )));
                    }
                    Work::Exec {
                        command: template.fill(text, tasks.len() as u64 + 1),
                        timeout_ms: None,
                        stdin: None,
                    }
                }
                (Plain::Exec, None) => Work::Exec {
                    command: text.to_string(),
                    timeout_ms: None,
                    stdin: None,
                },
                (Plain::Sleep, _) => Work::Sleep {
                    ms: text
                        .parse()
                        .map_err(|_| bad(format!("{text:?} is not a number of milliseconds")))?,
                },
                (Plain::Data, _) => Work::Data {
                    data: serde_json::Value::String(text.to_string()),
                },
            }
        };
        if let Work::Primes { from, to } = work
            && from > to
        {
            return Err(bad(format!("primes range {from}..{to} is backwards")));
        }
        // A command is a C string to exec: a NUL would end it there (or
        // fail on every worker), so it is refused here, with its line. A
        // newline in a JSON command is the user's own (`sh -c` runs each
        // line); a plain line cannot hold one.
        if let Work::Exec { command, .. } = &work
            && command.contains('\0')
        {
            return Err(bad(
                "a NUL character (U+0000) in the command: a shell command cannot hold one".into(),
            ));
        }
        scratch.clear();
        common::protocol::encode_named_task(&mut scratch, 0, own_kind.as_deref(), &work);
        if scratch.len() > max_bytes {
            return Err(bad(format!(
                "the task is {} bytes, more than a message may carry (--max-msg-size)",
                scratch.len()
            )));
        }
        plan.cost.push(cost);
        plan.ids.push(id);
        plan.stage.push(stage);
        plan.kinds.push(own_kind);
        refs.push((line_no, after));
        tasks.push(work);
    }
    if tasks.is_empty() {
        return Err(InputError::Empty);
    }
    if refs.iter().any(|(_, a)| !a.is_empty()) {
        for (line, after) in refs {
            let mut ids = Vec::with_capacity(after.len());
            for a in after {
                let task = match &a {
                    serde_json::Value::String(s) => named.get(s).copied(),
                    serde_json::Value::Number(n) => n.as_u64().filter(|&i| i < tasks.len() as u64),
                    _ => None,
                };
                ids.push(task.ok_or_else(|| InputError::Line {
                    line,
                    reason: format!("\"after\": {a} is not a task of this input"),
                })?);
            }
            plan.after.push(ids);
        }
    }
    plan.shed_unused();
    plan.works = tasks;
    Ok(plan)
}

/// Why a JSON line is not a task, placed by column only: serde reads one
/// line at a time, so its "at line 1" would contradict the input line
/// number the error already carries.
fn not_a_task(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let place = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&place) {
        Some(reason) => format!("not a task (column {}): {reason}", e.column()),
        None => format!("not a task: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_task_names_a_kind_of_its_own_with_type() {
        let text = "{\"kind\":\"data\",\"type\":\"resize\",\"data\":1}\necho hi\n";
        let plan = parse(text.as_bytes(), Plain::Exec, usize::MAX).unwrap();
        assert_eq!(plan.kind_of(0), "resize");
        assert_eq!(plan.kind_of(1), "exec");
        let (names, of) = plan.kind_table().unwrap();
        assert_eq!(
            (names, of),
            (vec!["resize".into(), "exec".into()], vec![0, 1])
        );
        // The name is part of the batch: another name, another batch.
        let other = parse(
            text.replace("resize", "crop").as_bytes(),
            Plain::Exec,
            usize::MAX,
        )
        .unwrap();
        assert_ne!(plan.fingerprint(), other.fingerprint());
        // No task with a type: the kinds stay empty (and the batch id is
        // what it was before kinds).
        let plain = parse(&b"echo hi\n"[..], Plain::Exec, usize::MAX).unwrap();
        assert!(plain.kinds.is_empty());
        for (line, says) in [
            (
                "{\"kind\":\"exec\",\"command\":\"x\",\"type\":\"A\"}",
                "data task",
            ),
            (
                "{\"kind\":\"data\",\"type\":\"exec\",\"data\":1}",
                "built-in",
            ),
            (
                "{\"kind\":\"data\",\"type\":\"a b\",\"data\":1}",
                "not allowed",
            ),
            (
                "{\"kind\":\"data\",\"type\":7,\"data\":1}",
                "must be a string",
            ),
        ] {
            let err = parse(line.as_bytes(), Plain::Exec, usize::MAX)
                .unwrap_err()
                .to_string();
            assert!(err.contains("input line 1") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn parses_plain_json_comments() {
        let text = "# a batch\n\necho hi\n{\"kind\":\"sleep\",\"ms\":5}\n{\"kind\":\"primes\",\"from\":1,\"to\":9}\n";
        let tasks = parse(text.as_bytes(), Plain::Exec, usize::MAX).unwrap();
        assert!(!tasks.has_constraints());
        assert_eq!(
            tasks.works,
            vec![
                Work::Exec {
                    command: "echo hi".into(),
                    timeout_ms: None,
                    stdin: None,
                },
                Work::Sleep { ms: 5 },
                Work::Primes { from: 1, to: 9 },
            ]
        );
        assert_eq!(
            parse("82\n15\n".as_bytes(), Plain::Sleep, usize::MAX)
                .unwrap()
                .works,
            vec![Work::Sleep { ms: 82 }, Work::Sleep { ms: 15 }]
        );
    }

    #[test]
    fn a_malformed_json_line_is_placed_by_its_input_line_and_column_only() {
        let e = parse(
            "echo ok\n\n{\"kind\": nap}\n".as_bytes(),
            Plain::Exec,
            usize::MAX,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("input line 3: not a task (column "), "{e}");
        assert!(!e.contains("at line"), "one line number only: {e}");
        // A well-formed object that is no task has no column to give.
        let e = parse("{\"kind\":\"nap\"}".as_bytes(), Plain::Exec, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("input line 1: not a task: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn a_command_template_makes_each_line_one_argument_whatever_it_holds() {
        let t: Template = "gzip -9 {} && echo {#} {.}".parse().unwrap();
        assert_eq!(t.fill("notes.txt", 1), "gzip -9 notes.txt && echo 1 notes");
        assert_eq!(
            t.fill("my file.tar.gz", 2),
            "gzip -9 'my file.tar.gz' && echo 2 'my file.tar'"
        );
        assert_eq!(t.fill("it's", 3), r"gzip -9 'it'\''s' && echo 3 'it'\''s'");
        assert_eq!(
            t.fill("$(rm -rf ~).txt", 4),
            "gzip -9 '$(rm -rf ~).txt' && echo 4 '$(rm -rf ~)'"
        );
        // No placeholder for the line: it goes at the end. Braces that are
        // no placeholder stay.
        let t: Template = "awk '{print}'".parse().unwrap();
        assert_eq!(t.fill("a b", 1), "awk '{print}' 'a b'");
        assert!("  ".parse::<Template>().is_err());
        assert_eq!(without_extension("dir.d/file"), "dir.d/file");
        assert_eq!(without_extension("dir/.profile"), "dir/.profile");
        assert_eq!(without_extension("a.b/c.d.e"), "a.b/c.d");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn a_command_template_fills_plain_lines_and_refuses_control_characters() {
        let t: Template = "cat {}".parse().unwrap();
        // Every line is a name as it is: a `#`, a JSON object, spaces.
        let text = "# files\na b\n\n{\"kind\":\"noop\"}\n c \n";
        let plan = parse_with(text.as_bytes(), Plain::Exec, Some(&t), usize::MAX).unwrap();
        let commands: Vec<String> = plan
            .works
            .iter()
            .map(|w| match w {
                Work::Exec { command, .. } => command.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            commands,
            vec![
                "cat '# files'",
                "cat 'a b'",
                r#"cat '{"kind":"noop"}'"#,
                "cat ' c '"
            ]
        );
        let e = parse_with(
            "ok\nbad\u{1b}name\n".as_bytes(),
            Plain::Exec,
            Some(&t),
            usize::MAX,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("input line 2: a control character (U+001B)"),
            "{e}"
        );
    }

    #[test]
    fn a_json_command_with_a_nul_is_refused_with_its_line_and_stdin_is_kept() {
        let text = "{\"kind\":\"exec\",\"command\":\"wc -c\",\"stdin\":\"a\\u0000b\\nc\"}\n{\"kind\":\"exec\",\"command\":\"echo a\\u0000rm x\"}\n";
        let e = parse(text.as_bytes(), Plain::Exec, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("input line 2: a NUL character"), "{e}");
        let plan = parse(
            text.lines().next().unwrap().as_bytes(),
            Plain::Exec,
            usize::MAX,
        )
        .unwrap();
        assert_eq!(
            plan.works,
            vec![Work::Exec {
                command: "wc -c".into(),
                timeout_ms: None,
                stdin: Some(Box::new("a\0b\nc".into())),
            }]
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
    fn dependencies_stages_and_costs_are_read() {
        let text = r#"{"kind":"noop","id":"fetch"}
{"kind":"sleep","ms":5,"after":["fetch"],"stage":1}
{"kind":"noop","after":[0, 1],"cost":7,"stage":2}
"#;
        let p = parse(text.as_bytes(), Plain::Exec, usize::MAX).unwrap();
        assert_eq!(p.after, vec![vec![], vec![0], vec![0, 1]]);
        assert_eq!(p.stage, vec![0, 1, 2]);
        let costs: Vec<Option<u64>> = (0..3).map(|t| p.cost_of(t)).collect();
        assert_eq!(costs, vec![None, Some(5), Some(7)]);
        assert!(p.check().is_ok());
        for (text, line) in [
            ("{\"kind\":\"noop\",\"after\":[\"nope\"]}", 1),
            ("{\"kind\":\"noop\"}\n{\"kind\":\"noop\",\"after\":[5]}", 2),
            (
                "{\"kind\":\"noop\",\"id\":\"a\"}\n{\"kind\":\"noop\",\"id\":\"a\"}",
                2,
            ),
            ("{\"kind\":\"noop\",\"stage\":-1}", 1),
        ] {
            match parse(text.as_bytes(), Plain::Exec, usize::MAX) {
                Err(InputError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
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
