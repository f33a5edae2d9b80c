use anyhow::Context as _;
use clap::Parser as _;
use fleet_proto::RepoName;
use sink::config::{Cli, Command};

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
            sink::run(args, shutdown).await
        }
        Command::Status { db, schedule } => {
            let pool = fleet_runtime::db::connect_once(&db).await?;
            fleet_runtime::db::check_schema(&pool).await?;
            let interval = schedule.schedule().interval;
            let status = fleet_runtime::status::status(&pool, interval).await?;
            print!(
                "{}",
                sink::report::render_status(&status, interval, chrono::Utc::now())
            );
            Ok(())
        }
        Command::Plan {
            db,
            schedule,
            nats,
            calls_per_scan,
            calls_per_token_hour,
            scan_minutes,
            in_flight_per_worker,
        } => {
            let flags = sink::plan::Flags {
                calls_per_scan,
                calls_per_token_hour,
                scan_minutes,
                in_flight_per_worker,
            };
            print!(
                "{}",
                sink::plan::command(&db, &schedule, &nats, flags).await?
            );
            Ok(())
        }
        Command::Show { db, repo } => {
            let repo = RepoName::parse(&repo)?;
            let pool = fleet_runtime::db::connect_once(&db).await?;
            fleet_runtime::db::check_schema(&pool).await?;
            print!("{}", sink::report::show(&pool, &repo).await?);
            Ok(())
        }
    }
}
