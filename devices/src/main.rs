use std::process::ExitCode;

use clap::{Parser, Subcommand};
use devices::pairs::SocketKind;
use devices::{DeviceArgs, Kind};

/// zpipe devices: the guide's QUEUE, FORWARDER and STREAMER, and which socket
/// types may be paired.
#[derive(Debug, Parser)]
#[command(name = "devices", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ROUTER frontend (clients, default @tcp://*:5559) / DEALER backend
    /// (services, default @tcp://*:5560): a request-reply broker.
    Queue(DeviceArgs),
    /// XSUB frontend (publishers, default @tcp://*:5564) / XPUB backend
    /// (subscribers, default @tcp://*:5565): subscriptions travel upstream.
    Forwarder(DeviceArgs),
    /// PULL frontend (upstream, default @tcp://*:5562) / PUSH backend
    /// (downstream, default @tcp://*:5563): a pipeline hop.
    Streamer(DeviceArgs),
    /// The allowed socket-type pairs, or `--try A B` to see a pair live.
    Pairs {
        /// Try this pair live: the first binds, the second connects.
        #[arg(long = "try", num_args = 2, value_names = ["BIND", "CONNECT"], ignore_case = true)]
        try_pair: Option<Vec<SocketKind>>,
        /// Where to try it: tcp (loopback), ipc (a temporary file) or inproc.
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "ipc", "inproc"])]
        transport: String,
    },
    /// Makes a CURVE key pair: writes it to FILE (for --curve-secret) and
    /// prints the public key (for --curve-server-key). Needs a libzmq with
    /// CURVE.
    Keygen {
        /// Where the pair goes (created with mode 0600; never overwritten).
        file: std::path::PathBuf,
    },
    /// Sends a command to a device's control socket and prints the answer:
    /// PAUSE, RESUME, TERMINATE or STATISTICS.
    Control {
        /// The device's --control endpoint.
        endpoint: String,
        command: String,
        #[command(flatten)]
        security: common::security::SecurityArgs,
    },
}

fn main() -> ExitCode {
    let cli: Cli = common::cli::parse();
    common::cli::init_logging();
    common::cli::exit::<devices::Error>(run(cli), "devices")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = zmq::Context::new();
    let device = |kind: Kind, args: &DeviceArgs| -> anyhow::Result<ExitCode> {
        let shutdown = common::Shutdown::new();
        common::cli::on_signals(&shutdown)?;
        devices::run(kind, args, &ctx, &shutdown)?;
        Ok(ExitCode::SUCCESS)
    };
    match &cli.command {
        Command::Queue(args) => device(Kind::Queue, args),
        Command::Forwarder(args) => device(Kind::Forwarder, args),
        Command::Streamer(args) => device(Kind::Streamer, args),
        Command::Pairs { try_pair: None, .. } => {
            print!("{}", devices::pairs::table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Pairs {
            try_pair: Some(pair),
            transport,
        } => {
            let dir = tempfile_dir()?;
            let endpoint = match transport.as_str() {
                "ipc" => format!("ipc://{}/pair", dir.display()),
                "inproc" => "inproc://pair".to_string(),
                _ => "tcp://127.0.0.1:*".to_string(),
            };
            let trial = devices::pairs::try_pair(&ctx, pair[0], pair[1], &endpoint)?;
            print!("{trial}");
            let _ = std::fs::remove_dir_all(&dir);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { file } => {
            let pair = common::security::KeyPair::generate().map_err(devices::Error::Common)?;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .map_err(|e| {
                    devices::Error::Common(common::Error::Usage(format!(
                        "cannot create {}: {e}",
                        file.display()
                    )))
                })?;
            f.write_all(pair.to_file_text().as_bytes())?;
            println!("{}", zmq::z85_encode(&pair.public)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Control {
            endpoint,
            command,
            security,
        } => {
            let reply = devices::control_secured(&ctx, endpoint, command, security)?;
            println!("{reply}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A private directory for an ipc:// endpoint.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("zpipe-pairs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
