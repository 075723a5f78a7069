//! What every binary shares: logging set-up and exit codes.

use std::process::ExitCode;

/// Starts `env_logger` at `info` (or `RUST_LOG`), writing to stderr.
pub fn init_logging() {
    let env = env_logger::Env::default().filter_or("RUST_LOG", "info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// Errors that know whether they are the user's to fix.
pub trait Usage {
    /// True for bad flags, endpoints, input: exit code 2.
    fn is_usage(&self) -> bool;
}

/// Prints an error chain on one line and maps it to an exit code: 2 for usage
/// errors, 1 for everything else.
pub fn finish<E: Usage + std::error::Error>(result: Result<(), E>, role: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                line.push_str(": ");
                line.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("{role}: error: {line}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

impl Usage for crate::Error {
    fn is_usage(&self) -> bool {
        crate::Error::is_usage(self)
    }
}

/// Parses a duration for clap: `250ms`, `5s`, `10m`, `1h 30m`.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 250ms, 5s, 10m)"))
}
