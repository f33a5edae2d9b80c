//! `producer enqueue`: a person's request, published to the manual lane at once (workers pull
//! it before any scheduled work). Unknown repositories get a row first.

use anyhow::Context as _;
use async_nats::jetstream::Context;
use fleet_proto::RepoName;
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_runtime::topology::Topology;
use sqlx::PgPool;

use crate::import;
use crate::publish::{publish_all, work_item};

/// Manual requests run ahead of same-lane peers with a lower priority.
pub const MANUAL_PRIORITY: i32 = 100;

pub async fn enqueue(
    pool: &PgPool,
    js: &Context,
    topology: &Topology,
    repos: &[RepoName],
) -> anyhow::Result<Vec<WorkItem>> {
    import::write(pool, repos)
        .await
        .context("recording the repositories")?;
    let items: Vec<WorkItem> = repos
        .iter()
        .map(|r| work_item(r, WorkReason::Manual, MANUAL_PRIORITY))
        .collect();
    let failed = publish_all(js, &topology.manual_subject(), &items).await;
    if let Some((i, e)) = failed.first() {
        anyhow::bail!(
            "publishing the work item for {} failed: {e}",
            items[*i].repo
        );
    }
    let keys: Vec<String> = repos.iter().map(RepoName::key).collect();
    sqlx::query("UPDATE repos SET last_enqueued_at = now() WHERE repo_key = ANY($1)")
        .bind(&keys)
        .execute(pool)
        .await
        .context("recording the enqueue time")?;
    Ok(items)
}
