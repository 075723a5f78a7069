use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = sink::Config::parse();
    common::cli::init_logging();
    common::cli::exit::<sink::Error>(run(&config), "sink")
}

fn run(config: &sink::Config) -> anyhow::Result<ExitCode> {
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    let out = sink::open_output_for(config)?;
    let report = sink::run(config, &zmq::Context::new(), &shutdown, out)?;
    sink::print_report(config, &report)?;
    // 130: stopped by a signal before the batch was complete.
    Ok(if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    })
}
