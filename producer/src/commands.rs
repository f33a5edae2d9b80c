//! The producer's commands. Each one-shot command returns what it prints, so `main` only parses
//! and dispatches, and a test can run a command without a process.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use fleet_proto::RepoName;
use fleet_proto::v1::FailureClass;
use fleet_runtime::config::{DbArgs, NatsArgs};
use fleet_runtime::{db, manual};

use crate::config::Command;
use crate::{import, replay};

/// Rejected lines printed one by one before the rest are only counted.
const SHOW_REJECTED: usize = 50;

/// Runs `command`, printing what it prints.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let printed = match command {
        Command::Run(args) => {
            return fleet_runtime::shutdown::run_until_signal(|stop| crate::run(args, stop)).await;
        }
        Command::Migrate { db } => migrate(&db).await?,
        Command::Import { db, file } => import(&db, &file).await?,
        Command::Enqueue {
            db,
            nats,
            lease_secs,
            repos,
        } => enqueue(&db, &nats, lease_secs, &repos).await?,
        Command::Replay {
            nats,
            since,
            classes,
            repo,
            dry_run,
        } => {
            let filter = replay_filter(since, &classes, repo.as_deref())?;
            replay(&nats, &filter, dry_run).await?
        }
    };
    print!("{printed}");
    Ok(())
}

pub async fn migrate(args: &DbArgs) -> anyhow::Result<String> {
    let pool = db::connect_once(args).await?;
    db::migrate(&pool, args.database_pooling).await?;
    Ok(format!("schema at version {}\n", db::expected_version()))
}

/// Imports `file` (`-` for standard input). Rejected lines go to stderr as they are found, before
/// the database is reached, so a person sees them even when it is down.
pub async fn import(args: &DbArgs, file: &Path) -> anyhow::Result<String> {
    let (name, bytes) = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        ("stdin".to_owned(), buf)
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        (file.display().to_string(), bytes)
    };
    let parsed = import::parse(&name, &bytes)?;
    for r in parsed.rejected.iter().take(SHOW_REJECTED) {
        eprintln!("{name}:{}: rejected: {}", r.line, r.reason);
    }
    if parsed.rejected.len() > SHOW_REJECTED {
        eprintln!(
            "... and {} more rejected lines",
            parsed.rejected.len() - SHOW_REJECTED
        );
    }
    let pool = db::connect_once(args).await?;
    db::check_schema(&pool).await?;
    let started = std::time::Instant::now();
    let done = import::write_parsed(&pool, &parsed).await?;
    Ok(format!(
        "imported {} new, {} already known, {} rejected, in {:.1}s\n",
        done.new,
        done.existing,
        parsed.rejected.len(),
        started.elapsed().as_secs_f64()
    ))
}

/// One line per request: its work id and repository.
pub async fn enqueue(
    db_args: &DbArgs,
    nats: &NatsArgs,
    lease_secs: u32,
    repos: &[String],
) -> anyhow::Result<String> {
    let repos = repos
        .iter()
        .map(|r| RepoName::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let pool = db::connect_once(db_args).await?;
    db::check_schema(&pool).await?;
    let (js, topology) = crate::connect_nats_once(nats).await?;
    let lease = chrono::TimeDelta::seconds(i64::from(lease_secs.max(1)));
    let db = db::Db::new(pool, db_args.database_pooling);
    let items = manual::enqueue(&db, &js, &topology, &repos, lease).await?;
    Ok(items
        .iter()
        .map(|item| format!("{}\t{}\n", item.id, item.repo))
        .collect())
}

/// The dead letters `replay` picks, from its flags.
pub fn replay_filter(
    since: Option<std::time::Duration>,
    classes: &[String],
    repo: Option<&str>,
) -> anyhow::Result<replay::Filter> {
    let classes = classes
        .iter()
        .map(|c| FailureClass::parse(c).with_context(|| format!("unknown failure class {c:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(replay::Filter {
        since: since
            .map(|d| chrono::Utc::now() - chrono::TimeDelta::from_std(d).unwrap_or_default()),
        classes,
        repo: repo.map(RepoName::parse).transpose()?,
    })
}

/// One line per dead letter looked at, then the count.
pub async fn replay(
    nats: &NatsArgs,
    filter: &replay::Filter,
    dry_run: bool,
) -> anyhow::Result<String> {
    let (js, topology) = crate::connect_nats_once(nats).await?;
    let entries = replay::replay(&js, &topology, filter, dry_run).await?;
    let mut out = String::new();
    let mut replayed = 0;
    for entry in &entries {
        match entry {
            replay::Entry::Replayed {
                sequence,
                failure,
                item,
            } => {
                replayed += 1;
                let class = FailureClass::try_from(failure.class)
                    .unwrap_or_default()
                    .name();
                let done = if dry_run { "would replay" } else { "replayed" };
                out += &format!("{done} #{sequence} {} {class} -> {}\n", item.repo, item.id);
            }
            replay::Entry::Redelivered {
                sequence,
                failure,
                webhook_id,
            } => {
                replayed += 1;
                let done = if dry_run {
                    "would redeliver"
                } else {
                    "redelivered"
                };
                out += &format!(
                    "{done} #{sequence} webhook {webhook_id} ({})\n",
                    failure.message
                );
            }
            replay::Entry::Skipped { sequence, reason } => {
                out += &format!("skipped #{sequence}: {reason}\n");
            }
        }
    }
    let summary = if dry_run {
        "to replay (dry run)"
    } else {
        "replayed"
    };
    out += &format!("{replayed} {summary}\n");
    Ok(out)
}
