use api::config::{Cli, Command};
use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fleet_runtime::tls::install_crypto_provider();
    fleet_runtime::exit::status(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleet_runtime::telemetry::init(&cli.log)?;
    match cli.command {
        Command::Run(args) => {
            fleet_runtime::shutdown::run_until_signal(|stop| api::run(args, stop)).await
        }
        Command::Openapi => {
            println!("{}", api::openapi::json());
            Ok(())
        }
    }
}
