//! Task kinds: which tasks a worker serves, and how a task names its kind.
//!
//! A task's **kind** is the name that routes it. The built-in bodies are
//! their own kinds ([`BUILTIN`]: `noop`, `sleep`, `primes`, `exec`, `data`,
//! as [`crate::work::Work::kind`] says). A data task for a handler of your
//! own may name a kind of its own with `"type"`
//! (`{"kind":"data","type":"resize","data":...}`, py-zmq-pipeline's task
//! type): its kind is then that name, not `data`, and it travels as a
//! *named* data task (tag 5 of the task body in [`crate::protocol`]), which
//! a worker from before kinds refuses (a `rejected` result) rather than runs
//! as if it were any data task.
//!
//! A worker declares the kinds it serves (`worker --kinds exec,primes`, or
//! its handler's `kinds()`) in its HELLO and HEARTBEAT
//! ([`crate::protocol::WorkerInfo::kinds`]). One that declares nothing
//! serves the built-in kinds, as every worker did before kinds existed, and
//! never a named kind: a named kind goes only to a worker that said its
//! name.
//!
//! Names are short and plain (1 to [`MAX_NAME`] bytes of ASCII letters,
//! digits, `_`, `-` and `.`), so that they read the same in a flag, an
//! environment variable, a log line and JSON.

/// The built-in kinds: what a worker that declares nothing serves.
pub const BUILTIN: [&str; 5] = ["noop", "sleep", "primes", "exec", "data"];

/// The longest kind name, in bytes.
pub const MAX_NAME: usize = 64;

/// Checks a kind name (see the module doc).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "task kind {name:?}: a name is 1 to {MAX_NAME} bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(format!(
            "task kind {name:?}: {c:?} is not allowed (ASCII letters, digits, '_', '-' and '.')"
        ));
    }
    Ok(())
}

/// Checks the name a data task gives its own kind: a kind name, and not a
/// built-in one (a data task named `exec` would go to workers that run
/// commands).
pub fn check_type(name: &str) -> Result<(), String> {
    check_name(name)?;
    if BUILTIN.contains(&name) {
        return Err(format!(
            "\"type\": {name:?} is a built-in kind; a data task's own kind needs a name of its own"
        ));
    }
    Ok(())
}

/// Whether a worker that declared `declared` serves `kind` (`None`: it
/// declared nothing, and serves the built-in kinds).
pub fn serves(declared: Option<&[String]>, kind: &str) -> bool {
    match declared {
        None => BUILTIN.contains(&kind),
        Some(list) => list.iter().any(|k| k == kind),
    }
}

/// The kinds a worker serves, as `--kinds` writes them: a comma-separated
/// list of names (`exec,primes`), each checked, duplicates dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindList(pub Vec<String>);

impl std::str::FromStr for KindList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut list: Vec<String> = Vec::new();
        for name in s.split(',').map(str::trim) {
            check_name(name)?;
            if !list.iter().any(|k| k == name) {
                list.push(name.to_string());
            }
        }
        Ok(KindList(list))
    }
}

impl std::fmt::Display for KindList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_and_who_serves_what() {
        let list: KindList = "exec, primes,exec,resize.v2".parse().unwrap();
        assert_eq!(list.0, ["exec", "primes", "resize.v2"]);
        assert_eq!(list.to_string(), "exec,primes,resize.v2");
        for bad in ["", "a,,b", "a b", "é", &"x".repeat(65)] {
            assert!(bad.parse::<KindList>().is_err(), "{bad:?}");
        }
        assert!(check_type("A").is_ok());
        assert!(check_type("exec").unwrap_err().contains("built-in"));
        // Declaring nothing: the built-in kinds, never a named one.
        assert!(serves(None, "exec") && serves(None, "data"));
        assert!(!serves(None, "A"));
        let a = ["A".to_string()];
        assert!(serves(Some(&a), "A") && !serves(Some(&a), "exec"));
    }
}
