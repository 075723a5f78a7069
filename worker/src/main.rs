use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = worker::Config::parse();
    common::cli::init_logging();
    let shutdown = common::Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("worker: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = worker::run(&config, &zmq::Context::new(), &shutdown).map(|_| ());
    common::cli::finish(result, "worker")
}
