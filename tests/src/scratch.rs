//! Benchmarks' scratch space on the local stack: every measurement gets a migrated database
//! and a NATS topology of its own and removes both when done, so each starts from the same state
//! on every run and nothing is left behind.

use std::str::FromStr;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use fleet_runtime::topology::{Topology, TopologyArgs};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use crate::stack;

pub struct Stack {
    pub server: PgConnectOptions,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Replicas of every scratch stream: `BENCH_STREAM_REPLICAS` (1), for a run on the
    /// three-server cluster of `dev/stack up nats-cluster` (`BENCH_NATS_URL`).
    pub replicas: usize,
}

/// A migrated database and an ensured NATS topology of one measurement's own.
pub struct Scratch {
    pub opts: PgConnectOptions,
    pub pool: PgPool,
    pub topology: Topology,
    pub js: jetstream::Context,
}

impl Stack {
    pub async fn connect() -> anyhow::Result<Self> {
        let server =
            PgConnectOptions::from_str(&stack::database_url()).context("parsing DATABASE_URL")?;
        let url = std::env::var("BENCH_NATS_URL").unwrap_or_else(|_| stack::nats_url());
        let client = async_nats::connect(fleet_runtime::nats::seeds(&url))
            .await
            .with_context(|| format!("connecting to NATS at {url} (dev/stack up postgres nats)"))?;
        let js = jetstream::new(client.clone());
        let replicas = match std::env::var("BENCH_STREAM_REPLICAS") {
            Ok(n) => n.parse().context("BENCH_STREAM_REPLICAS")?,
            Err(_) => 1,
        };
        Ok(Self {
            server,
            client,
            js,
            replicas,
        })
    }

    pub async fn admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect_with(&self.server)
            .await
            .context("connecting to the stack's PostgreSQL (dev/stack up postgres nats)")
    }

    /// Runs `body` on a fresh scratch database and topology, and removes both afterwards
    /// whether or not it succeeded.
    pub async fn scratch<T>(
        &self,
        label: &str,
        body: impl AsyncFnOnce(&Scratch) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.scratch_with(label, TopologyArgs::default(), body)
            .await
    }

    /// [`Stack::scratch`] with topology settings of its own (the prefix is always unique).
    pub async fn scratch_with<T>(
        &self,
        label: &str,
        args: TopologyArgs,
        body: impl AsyncFnOnce(&Scratch) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let name = stack::unique(&format!("bench-{label}"));
        let args = TopologyArgs {
            nats_prefix: name.clone(),
            stream_replicas: self.replicas,
            ..args
        };
        let result = match self.create(&name, args).await {
            Ok(scratch) => {
                let result = body(&scratch).await;
                scratch.pool.close().await;
                result
            }
            Err(e) => Err(e),
        };
        let removed = self.remove(&name).await;
        let value = result.with_context(|| format!("measuring {label}"))?;
        removed.with_context(|| format!("removing the scratch database and streams {name}"))?;
        Ok(value)
    }

    async fn create(&self, name: &str, args: TopologyArgs) -> anyhow::Result<Scratch> {
        let db = db_name(name);
        let mut admin = self.admin().await?;
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {db}"))?;
        admin.close().await?;
        let opts = self.server.clone().database(&db);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts.clone())
            .await?;
        fleet_runtime::db::migrate(&pool, Default::default()).await?;
        let topology = Topology::new(args)?;
        topology.ensure(&self.js).await?;
        Ok(Scratch {
            opts,
            pool,
            topology,
            js: self.js.clone(),
        })
    }

    /// Tolerates what was never created, so it also cleans up after a failed `create`.
    async fn remove(&self, name: &str) -> anyhow::Result<()> {
        let t = Topology::new(TopologyArgs {
            nats_prefix: name.to_owned(),
            ..Default::default()
        })?;
        let scans = format!("KV_{}", t.scans_bucket());
        let budget = format!("KV_{}", t.budget_bucket());
        for stream in [
            budget,
            t.work_stream(),
            t.results_stream(),
            t.dead_stream(),
            t.events_stream(),
            t.exhausted_stream(),
            t.webhooks_stream(),
            scans,
        ] {
            if self.js.get_stream(&stream).await.is_ok() {
                self.js
                    .delete_stream(&stream)
                    .await
                    .with_context(|| format!("deleting stream {stream}"))?;
            }
        }
        let mut admin = self.admin().await?;
        // FORCE: a connection the body leaked must not keep the database alive.
        sqlx::query(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            db_name(name)
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

impl Scratch {
    pub async fn consumer(&self, stream: &str, name: &str) -> anyhow::Result<PullConsumer> {
        self.js
            .get_stream(stream)
            .await?
            .get_consumer(name)
            .await
            .map_err(|e| anyhow::anyhow!("opening consumer {name} of {stream}: {e}"))
    }
}

pub fn db_name(unique: &str) -> String {
    unique.replace('-', "_")
}
