use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = ventilator::Config::parse();
    common::cli::init_logging();
    let shutdown = common::Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("ventilator: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = config
        .load_tasks()
        .and_then(|tasks| ventilator::run(&config, &tasks, &zmq::Context::new(), &shutdown));
    match result {
        Ok(report) if !config.classic && report.done.is_none() => {
            eprintln!(
                "ventilator: stopped before the sink said DONE ({} of {} tasks sent)",
                report.sent, report.tasks
            );
            ExitCode::from(130)
        }
        other => common::cli::finish(other.map(|_| ()), "ventilator"),
    }
}
