//! What a task asks a worker to do, and what comes back.

use serde::{Deserialize, Serialize};

/// The body of one task.
///
/// Input files and stdin give one task per line: a plain line is an
/// [`Work::Exec`] command (or, with the ventilator's `--plain sleep` or
/// `--plain data`, a sleep or a data task); a JSON object names its kind
/// (`{"kind":"sleep","ms":10}`, see [`Work`]'s serde form). On the wire it
/// is the task body of [`crate::protocol`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Work {
    /// Do nothing and reply at once (measures the pipeline itself).
    Noop,
    /// Sleep this many milliseconds: the guide's workload.
    Sleep {
        /// How long, in ms.
        ms: u64,
    },
    /// Count the primes in `from..to` by trial division: CPU-bound work that
    /// scales with cores.
    Primes {
        /// The first number tried.
        from: u64,
        /// One past the last number tried.
        to: u64,
    },
    /// Run a shell command (`sh -c`; a command of plain words is started
    /// directly, as the shell would start it), capturing exit code, stdout
    /// and stderr.
    Exec {
        /// The command line, given to `sh -c` as it is.
        command: String,
        /// Kill the command's whole process group after this long; the
        /// worker's `--exec-timeout` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// What the command reads on its standard input; none (`/dev/null`)
        /// when absent. Written while its output is read, so a large one
        /// cannot deadlock against a command that writes before it reads.
        /// (Boxed: most commands have none, and the ventilator keeps every
        /// task of a batch, so a task costs one word for it, not three.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<Box<String>>,
    },
    /// Opaque data for a user's own handler (see the `worker` crate).
    Data {
        /// Any JSON value; the handler decides what it means.
        data: serde_json::Value,
    },
}

impl Work {
    /// The known cost in milliseconds, where the task tells it (`sleep`).
    pub fn expected_ms(&self) -> Option<u64> {
        match self {
            Work::Sleep { ms } => Some(*ms),
            _ => None,
        }
    }

    /// A short name of the kind, for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Noop => "noop",
            Work::Sleep { .. } => "sleep",
            Work::Primes { .. } => "primes",
            Work::Exec { .. } => "exec",
            Work::Data { .. } => "data",
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Status {
    /// Done; for `exec`, the command exited 0.
    Ok = 0,
    /// The task ran and failed (non-zero exit, handler error).
    Failed = 1,
    /// The task ran past its time limit and was killed.
    TimedOut = 2,
    /// The handler panicked; the worker lives on.
    Panicked = 3,
    /// The worker could not read the task (malformed payload).
    Rejected = 4,
}

impl Status {
    /// From the wire byte.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Failed,
            2 => Status::TimedOut,
            3 => Status::Panicked,
            4 => Status::Rejected,
            _ => return None,
        })
    }

    /// The name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Panicked => "panicked",
            Status::Rejected => "rejected",
        }
    }
}

/// What a task body produced: the part of a result the handler decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How the task ended.
    pub status: Status,
    /// The exit code of an `exec` command, when it exited normally.
    pub exit_code: Option<i32>,
    /// Standard output, or the handler's result.
    pub output: Vec<u8>,
    /// Standard error, or the reason of a failure.
    pub error: Vec<u8>,
}

impl Outcome {
    /// A success with this output.
    pub fn ok(output: impl Into<Vec<u8>>) -> Self {
        Outcome {
            status: Status::Ok,
            exit_code: None,
            output: output.into(),
            error: Vec::new(),
        }
    }

    /// A failure with this reason.
    pub fn failed(status: Status, reason: impl Into<String>) -> Self {
        Outcome {
            status,
            exit_code: None,
            output: Vec::new(),
            error: reason.into().into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_stays_six_words_at_most() {
        // The ventilator keeps every task of a batch until its result is
        // in: ten million of them must fit in well under a gigabyte.
        assert!(
            std::mem::size_of::<Work>() <= 48,
            "{}",
            std::mem::size_of::<Work>()
        );
    }

    #[test]
    fn input_lines_read_as_the_readme_writes_them() {
        let read = |line: &str| serde_json::from_str::<Work>(line);
        assert_eq!(
            read(r#"{"kind":"sleep","ms":42}"#).unwrap(),
            Work::Sleep { ms: 42 }
        );
        assert_eq!(read(r#"{"kind":"noop"}"#).unwrap(), Work::Noop);
        assert_eq!(
            read(r#"{"kind":"primes","from":0,"to":1000000}"#).unwrap(),
            Work::Primes {
                from: 0,
                to: 1_000_000
            }
        );
        assert_eq!(
            read(r#"{"kind":"exec","command":"make -C proj test","timeout_ms":600000}"#).unwrap(),
            Work::Exec {
                command: "make -C proj test".into(),
                timeout_ms: Some(600_000),
                stdin: None,
            }
        );
        assert_eq!(
            read(r#"{"kind":"exec","command":"wc -c","stdin":"hello"}"#).unwrap(),
            Work::Exec {
                command: "wc -c".into(),
                timeout_ms: None,
                stdin: Some(Box::new("hello".into())),
            }
        );
        assert_eq!(
            read(r#"{"kind":"data","data":{"any":"json"}}"#).unwrap(),
            Work::Data {
                data: serde_json::json!({"any": "json"})
            }
        );
        // A typo is an error, not a default.
        assert!(read(r#"{"kind":"sleep","msec":42}"#).is_err());
        assert!(read(r#"{"kind":"sleep","ms":42,"extra":1}"#).is_err());
        assert!(read(r#"{"kind":"nap","ms":42}"#).is_err());
        // Written back, an exec without a timeout says nothing of one.
        let exec = Work::Exec {
            command: "true".into(),
            timeout_ms: None,
            stdin: None,
        };
        assert_eq!(
            serde_json::to_string(&exec).unwrap(),
            r#"{"kind":"exec","command":"true"}"#
        );
        assert_eq!((exec.kind(), exec.expected_ms()), ("exec", None));
        assert_eq!(Work::Sleep { ms: 9 }.expected_ms(), Some(9));
    }

    #[test]
    fn statuses_keep_their_wire_byte_and_their_name() {
        let all = [
            Status::Ok,
            Status::Failed,
            Status::TimedOut,
            Status::Panicked,
            Status::Rejected,
        ];
        for s in all {
            assert_eq!(Status::from_u8(s as u8), Some(s));
            // The JSON output's name is the one serde writes.
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(all.map(|s| s as u8), [0, 1, 2, 3, 4], "the wire bytes");
        assert_eq!(Status::from_u8(5), None);
        let failed = Outcome::failed(Status::TimedOut, "killed after 5s");
        assert_eq!(
            (failed.status, &failed.error[..]),
            (Status::TimedOut, &b"killed after 5s"[..])
        );
        assert!(Outcome::ok("x").error.is_empty());
    }
}
