use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = ventilator::Config::parse();
    common::cli::init_logging();
    common::cli::exit::<ventilator::Error>(run(&config), "ventilator")
}

fn run(config: &ventilator::Config) -> anyhow::Result<ExitCode> {
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    // Read (and check) the whole batch before any socket exists.
    let tasks = config.load_tasks()?;
    let report = ventilator::run(config, &tasks, &zmq::Context::new(), &shutdown)?;
    if !config.classic && report.done.is_none() {
        eprintln!(
            "ventilator: stopped before the sink said DONE ({} of {} tasks sent)",
            report.sent, report.tasks
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}
