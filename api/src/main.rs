use anyhow::Context as _;
use api::config::{Cli, Command};
use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fleet_runtime::exit::status(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleet_runtime::telemetry::init(&cli.log)?;
    match cli.command {
        Command::Run(args) => {
            let shutdown =
                fleet_runtime::shutdown::on_signal().context("installing signal handlers")?;
            api::run(args, shutdown).await
        }
        Command::Openapi => {
            println!("{}", api::openapi::json());
            Ok(())
        }
    }
}
