use std::io::Read as _;

use anyhow::Context as _;
use clap::Parser as _;
use fleet_proto::RepoName;
use fleet_proto::v1::FailureClass;
use fleet_runtime::db;
use fleet_runtime::manual;
use producer::config::{Cli, Command};
use producer::{import, replay};

/// Rejected lines printed one by one before the rest are only counted.
const SHOW_REJECTED: usize = 50;

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
            producer::run(args, shutdown).await
        }
        Command::Migrate { db: args } => {
            let pool = db::connect_once(&args).await?;
            db::migrate(&pool, args.database_pooling).await?;
            println!("schema at version {}", db::expected_version());
            Ok(())
        }
        Command::Import { db: args, file } => {
            let (name, bytes) = if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading standard input")?;
                ("stdin".to_owned(), buf)
            } else {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
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
            let pool = db::connect_once(&args).await?;
            db::check_schema(&pool).await?;
            let started = std::time::Instant::now();
            let done = import::write(&pool, &parsed.repos).await?;
            println!(
                "imported {} new, {} already known, {} rejected, in {:.1}s",
                done.new,
                done.existing,
                parsed.rejected.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Enqueue {
            db: args,
            nats,
            lease_secs,
            repos,
        } => {
            let repos = repos
                .iter()
                .map(|r| RepoName::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let pool = db::connect_once(&args).await?;
            db::check_schema(&pool).await?;
            let (js, topology) = producer::connect_nats_once(&nats).await?;
            let lease = chrono::TimeDelta::seconds(i64::from(lease_secs.max(1)));
            for item in manual::enqueue(&pool, &js, &topology, &repos, lease).await? {
                println!("{}\t{}", item.id, item.repo);
            }
            Ok(())
        }
        Command::Replay {
            nats,
            since,
            classes,
            repo,
            dry_run,
        } => {
            let classes = classes
                .iter()
                .map(|c| {
                    FailureClass::parse(c).with_context(|| format!("unknown failure class {c:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let filter = replay::Filter {
                since: since.map(|d| {
                    chrono::Utc::now() - chrono::TimeDelta::from_std(d).unwrap_or_default()
                }),
                classes,
                repo: repo.as_deref().map(RepoName::parse).transpose()?,
            };
            let (js, topology) = producer::connect_nats_once(&nats).await?;
            let entries = replay::replay(&js, &topology, &filter, dry_run).await?;
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
                        println!(
                            "{} #{sequence} {} {class} -> {}",
                            if dry_run { "would replay" } else { "replayed" },
                            item.repo,
                            item.id
                        );
                    }
                    replay::Entry::Skipped { sequence, reason } => {
                        println!("skipped #{sequence}: {reason}")
                    }
                }
            }
            println!(
                "{replayed} {}",
                if dry_run {
                    "to replay (dry run)"
                } else {
                    "replayed"
                }
            );
            Ok(())
        }
    }
}
