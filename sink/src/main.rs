use std::process::ExitCode;

fn main() -> ExitCode {
    let config: sink::Config = common::cli::parse();
    common::cli::init_logging();
    common::cli::exit::<sink::Error>(run(&config), "sink")
}

fn run(config: &sink::Config) -> anyhow::Result<ExitCode> {
    if let Some(sink::Command::Plot(plot)) = &config.command {
        sink::plot::run(plot)?;
        return Ok(ExitCode::SUCCESS);
    }
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    if config.serve {
        let served = sink::serve(config, &zmq::Context::new(), &shutdown)?;
        eprintln!(
            "sink: the pool ends after {} batch(es){}",
            served.batches,
            if served.cut_short.is_some() {
                "; one was cut short (its results so far and its report are written)"
            } else {
                ""
            }
        );
        // 130: a batch was being collected; 0: the pool was idle.
        return Ok(if served.cut_short.is_some() {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        });
    }
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
