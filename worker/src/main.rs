use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fleet_runtime::exit::status(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = worker::config::Cli::parse();
    fleet_runtime::telemetry::init(&cli.log)?;
    let shutdown = fleet_runtime::shutdown::on_signal().context("installing signal handlers")?;
    worker::run(cli, shutdown).await
}
