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

impl Usage for crate::Error {
    fn is_usage(&self) -> bool {
        crate::Error::is_usage(self)
    }
}

/// Ends a binary: prints an error chain on one line (`role: error: a: b: c`)
/// and maps it to an exit code: 2 when the role's own error type `E` says it
/// is a usage error, 1 for anything else.
pub fn exit<E>(result: anyhow::Result<ExitCode>, role: &str) -> ExitCode
where
    E: Usage + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{role}: error: {e:#}");
            let usage = e.downcast_ref::<E>().is_some_and(Usage::is_usage);
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Raises `shutdown` on SIGINT and SIGTERM, or says why it cannot.
pub fn on_signals(shutdown: &crate::Shutdown) -> anyhow::Result<()> {
    use anyhow::Context;
    shutdown
        .on_signals()
        .context("installing the signal handlers")
}

/// Parses a duration for clap: `250ms`, `5s`, `10m`, `1h 30m`.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 250ms, 5s, 10m)"))
}

/// Socket flags every role takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// High-water mark: messages queued per connection before sends wait.
    #[arg(long, env = "ZPIPE_HWM", default_value_t = 1000)]
    pub hwm: i32,
    /// Largest message accepted from the network, in bytes; a larger one drops
    /// the sender's connection.
    #[arg(long, env = "ZPIPE_MAX_MSG_SIZE", default_value_t = 16 << 20)]
    pub max_msg_size: i64,
    /// The security flags (`--allow`, PLAIN, CURVE).
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

impl SocketArgs {
    /// These flags over the default [`Tuning`](crate::sockets::Tuning); a
    /// security flag that cannot be used (an unreadable file, CURVE on a
    /// build without it) is an error.
    pub fn tuning(&self) -> Result<crate::sockets::Tuning, crate::Error> {
        Ok(crate::sockets::Tuning {
            hwm: self.hwm,
            max_msg_size: self.max_msg_size,
            security: crate::security::Security::from_args(&self.security)?,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        socket: SocketArgs,
    }

    #[test]
    fn durations_are_written_as_people_write_them() {
        use std::time::Duration;
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let e = duration("5 parsecs").unwrap_err();
        assert!(e.contains("write e.g. 250ms"), "{e}");
        assert!(duration("").is_err());
    }

    #[test]
    fn usage_errors_exit_2_through_any_context_and_others_1() {
        use anyhow::Context;
        let usage = || Err(crate::Error::Usage("bad flag".into()));
        let code = |r| exit::<crate::Error>(r, "test");
        assert_eq!(code(Ok(ExitCode::from(130))), ExitCode::from(130));
        assert_eq!(code(usage().context("reading flags")), ExitCode::from(2));
        let zmq = crate::Error::zmq("polling", zmq::Error::EFAULT);
        assert_eq!(code(Err(zmq.into())), ExitCode::from(1));
        assert_eq!(code(Err(anyhow::anyhow!("disk full"))), ExitCode::from(1));
    }

    #[test]
    fn socket_flags_default_to_the_tuning_and_refuse_two_mechanisms() {
        let f = Flags::try_parse_from(["test"]).unwrap();
        let t = f.socket.tuning().unwrap();
        let d = crate::sockets::Tuning::default();
        assert_eq!((t.hwm, t.max_msg_size), (d.hwm, d.max_msg_size));
        assert_eq!((t.linger, t.heartbeat), (d.linger, d.heartbeat));
        assert!(t.security.is_none(), "no flag, no security");
        let f = Flags::try_parse_from(["test", "--hwm", "7", "--max-msg-size", "4096"]).unwrap();
        let t = f.socket.tuning().unwrap();
        assert_eq!((t.hwm, t.max_msg_size), (7, 4096));
        let f = Flags::try_parse_from(["test", "--allow", "10.0.0.0/8"]).unwrap();
        assert!(f.socket.tuning().unwrap().security.is_some());
        let f = Flags::try_parse_from(["test", "--auth-file", "u", "--curve-secret", "k"]).unwrap();
        assert!(f.socket.tuning().unwrap_err().is_usage());
    }
}
