use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fleet_runtime::tls::install_crypto_provider();
    fleet_runtime::exit::status(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = webhooks::config::Cli::parse();
    fleet_runtime::telemetry::init(&cli.log)?;
    fleet_runtime::shutdown::run_until_signal(|stop| webhooks::run(cli, stop)).await
}
