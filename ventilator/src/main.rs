use std::process::ExitCode;

fn main() -> ExitCode {
    let config: ventilator::Config = common::cli::parse();
    common::cli::init_logging();
    common::cli::exit::<ventilator::Error>(run(&config), "ventilator")
}

fn run(config: &ventilator::Config) -> anyhow::Result<ExitCode> {
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    // Bind first (a port in use is one line), then read the whole batch;
    // run_plan checks it before anything is sent.
    let vent = ventilator::Ventilator::bind(config, &zmq::Context::new())?;
    let tasks = config.load_tasks()?;
    let report = vent.run_plan(&tasks, &shutdown)?;
    if let Some(path) = &config.report {
        common::report::write_json_file(path, &report)
            .map_err(|e| anyhow::anyhow!("cannot write the report {}: {e}", path.display()))?;
    }
    if config.classic {
        return Ok(ExitCode::SUCCESS);
    }
    if report.sink_silent_ms.is_some() {
        println!("{}", report.summary());
        return Ok(ExitCode::from(ventilator::exit::SINK_SILENT));
    }
    let Some(done) = &report.done else {
        eprintln!(
            "ventilator: stopped before the sink said DONE ({} of {} tasks sent)",
            report.sent, report.tasks
        );
        return Ok(ExitCode::from(ventilator::exit::STOPPED));
    };
    // One line on stdout, for the script that submitted the batch.
    println!("{}", report.summary());
    Ok(ExitCode::from(if done.failed > 0 {
        ventilator::exit::SOME_FAILED
    } else {
        ventilator::exit::ALL_OK
    }))
}
