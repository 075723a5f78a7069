//! What every binary shares: flag parsing (with `--generate` for man pages
//! and shell completions), logging set-up and exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// What `--generate` prints: a man page or a shell's completion script,
/// each made from the same clap definitions that parse the flags, so they
/// never drift from `--help`. (ripgrep's `--generate` is the model.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The man page (roff), for `man -l` or a `man1` directory.
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
    /// Completions for elvish.
    CompleteElvish,
    /// Completions for PowerShell.
    CompletePowershell,
}

/// The id of the `--generate` flag that [`command`] adds.
const GENERATE: &str = "generate";

/// A binary's clap command with `--generate` added (the flag is the
/// binary's, not its library `Config`'s: libraries run batches, binaries
/// install themselves).
pub fn command<C: CommandFactory>() -> clap::Command {
    C::command()
        .arg(
            clap::Arg::new(GENERATE)
                .long(GENERATE)
                .value_name("WHAT")
                .value_parser(clap::builder::EnumValueParser::<Generate>::new())
                .help("Print this program's man page or a shell's completion script on stdout, and exit")
                .long_help(
                    "Print this program's man page or a shell's completion script on stdout, and exit; \
                     the README's \"Shell completions and man pages\" says where each one goes",
                )
                .global(true),
        )
        // `devices --generate man` needs no subcommand; a missing one is
        // still refused, by `from_arg_matches` below.
        .subcommand_required(false)
}

/// Parses the flags of a binary: on `--generate WHAT` prints it and exits
/// 0; on a bad flag prints clap's message and exits 2, as `C::parse` does.
/// After a subcommand (`devices streamer --generate man`) the man page is
/// that subcommand's own, named `devices-streamer`.
pub fn parse<C: CommandFactory + FromArgMatches>() -> C {
    let mut cmd = command::<C>();
    let matches = cmd.clone().get_matches();
    if let Some(what) = asked(&matches) {
        let mut out = std::io::stdout().lock();
        let page = match what {
            Generate::Man => subcommand_page(cmd, &matches),
            _ => cmd,
        };
        match generate(what, page, &mut out).and_then(|()| out.flush()) {
            // `--generate man | head` is no failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("cannot write the {what:?} output: {e}");
                std::process::exit(1);
            }
            _ => std::process::exit(0),
        }
    }
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

/// `--generate`'s value, wherever it came on the line.
fn asked(matches: &clap::ArgMatches) -> Option<Generate> {
    let here = matches.get_one::<Generate>(GENERATE).copied();
    here.or_else(|| matches.subcommand().and_then(|(_, sub)| asked(sub)))
}

/// The command whose man page was asked for: the deepest subcommand given.
fn subcommand_page(cmd: clap::Command, matches: &clap::ArgMatches) -> clap::Command {
    let Some((name, sub_matches)) = matches.subcommand() else {
        return cmd;
    };
    let Some(sub) = cmd.find_subcommand(name) else {
        return cmd;
    };
    let page = format!("{}-{name}", cmd.get_name());
    let mut sub = sub.clone().name(page);
    if let Some(version) = cmd.get_version() {
        sub = sub.version(version.to_owned());
    }
    subcommand_page(sub, sub_matches)
}

/// Writes `what` for `cmd` (its name is the binary's).
pub fn generate(
    what: Generate,
    mut cmd: clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let shell = match what {
        Generate::Man => return clap_mangen::Man::new(cmd).render(out),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
        Generate::CompleteElvish => Shell::Elvish,
        Generate::CompletePowershell => Shell::PowerShell,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// The progress bars on stderr: log lines are printed above them, not
/// through them (see [`init_logging`]).
fn bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// Starts `env_logger` at `info` (or `RUST_LOG`), writing to stderr; while
/// a [`progress_bar`] is shown, each log line is printed above it.
pub fn init_logging() {
    let env = env_logger::Env::default().filter_or("RUST_LOG", "info");
    let logger = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .build();
    let level = logger.filter();
    if indicatif_log_bridge::LogWrapper::new(bars().clone(), logger)
        .try_init()
        .is_ok()
    {
        log::set_max_level(level);
    }
}

/// A bar of `len` steps drawn with `template` (indicatif's) on stderr when
/// stderr is a terminal; `None` otherwise, so that logs and pipes get no
/// control characters.
pub fn progress_bar(len: u64, template: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    Some(bars().add(indicatif::ProgressBar::new(len).with_style(style)))
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

    /// A binary's flags as the tests see them.
    #[derive(Parser)]
    #[command(name = "role")]
    struct Role {
        /// Where tasks go.
        #[arg(long, default_value = "tcp://*:5557")]
        task_endpoint: String,
    }

    #[test]
    fn generate_writes_a_man_page_and_completions_with_every_flag() {
        let text = |what| {
            let mut out = Vec::new();
            generate(what, command::<Role>(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let man = text(Generate::Man);
        assert!(man.contains("\n.TH role 1 "), "{man}");
        assert!(man.contains("\\fB\\-\\-task\\-endpoint\\fR"), "{man}");
        assert!(
            man.contains("complete\\-bash: Completions for bash"),
            "{man}"
        );
        for what in [
            Generate::CompleteBash,
            Generate::CompleteZsh,
            Generate::CompleteFish,
        ] {
            let script = text(what);
            assert!(script.contains("task-endpoint"), "{what:?}: {script}");
            assert!(
                script.contains("complete-bash"),
                "{what:?} offers --generate's values"
            );
        }
        // The flag parses beside the binary's own, and is not the library's.
        let m = command::<Role>()
            .try_get_matches_from(["role", "--generate", "complete-zsh"])
            .unwrap();
        assert_eq!(
            m.get_one::<Generate>(GENERATE),
            Some(&Generate::CompleteZsh)
        );
        let e = command::<Role>()
            .try_get_matches_from(["role", "--generate", "tcsh"])
            .unwrap_err();
        assert!(e.to_string().contains("complete-bash"), "{e}");
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
