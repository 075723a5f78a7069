use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = sink::Config::parse();
    common::cli::init_logging();
    let shutdown = common::Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("sink: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = sink::open_output(&config.output)
        .and_then(|out| sink::run(&config, &zmq::Context::new(), &shutdown, out))
        .and_then(|report| sink::print_report(&config, &report).map(|()| report));
    match result {
        Ok(report) if !report.complete => ExitCode::from(130),
        other => common::cli::finish(other.map(|_| ()), "sink"),
    }
}
