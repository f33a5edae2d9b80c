//! The sink's commands: `main` parses and dispatches here. Each one-shot command returns what it
//! prints.

use fleet_proto::RepoName;
use fleet_runtime::config::DbArgs;

use crate::config::{Command, ScheduleArgs};

/// Runs `command`, printing what it prints.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let printed = match command {
        Command::Run(args) => {
            return fleet_runtime::shutdown::run_until_signal(|stop| crate::run(args, stop)).await;
        }
        Command::Status { db, schedule } => status(&db, &schedule).await?,
        Command::Plan {
            db,
            schedule,
            nats,
            calls_per_scan,
            calls_per_token_hour,
            scan_minutes,
            in_flight_per_worker,
        } => {
            let flags = crate::plan::Flags {
                calls_per_scan,
                calls_per_token_hour,
                scan_minutes,
                in_flight_per_worker,
            };
            crate::plan::command(&db, &schedule, &nats, flags).await?
        }
        Command::Show { db, repo } => show(&db, &repo).await?,
    };
    print!("{printed}");
    Ok(())
}

pub async fn status(db: &DbArgs, schedule: &ScheduleArgs) -> anyhow::Result<String> {
    let pool = fleet_runtime::db::connect_once(db).await?;
    fleet_runtime::db::check_schema(&pool).await?;
    let interval = schedule.schedule().interval;
    let db = fleet_runtime::db::Db::new(pool, db.database_pooling);
    let status = fleet_runtime::status::status(&db, interval).await?;
    Ok(crate::report::render_status(
        &status,
        interval,
        chrono::Utc::now(),
    ))
}

pub async fn show(db: &DbArgs, repo: &str) -> anyhow::Result<String> {
    let repo = RepoName::parse(repo)?;
    let pool = fleet_runtime::db::connect_once(db).await?;
    fleet_runtime::db::check_schema(&pool).await?;
    crate::report::show(&pool, &repo).await
}
