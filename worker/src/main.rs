use std::process::ExitCode;

fn main() -> ExitCode {
    let config: worker::Config = common::cli::parse();
    common::cli::init_logging();
    common::cli::exit::<worker::Error>(run(&config), "worker")
}

fn run(config: &worker::Config) -> anyhow::Result<ExitCode> {
    let shutdown = common::Shutdown::new();
    common::cli::on_signals(&shutdown)?;
    worker::run(config, &zmq::Context::new(), &shutdown)?;
    Ok(ExitCode::SUCCESS)
}
