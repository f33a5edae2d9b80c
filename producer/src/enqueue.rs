//! `producer enqueue`: a person's request, published to the manual lane at once (workers pull
//! it before any scheduled work). Unknown repositories get a row first, and every one's due
//! time is pushed forward as a claim would, so the scheduled lane does not scan it meanwhile.

use anyhow::Context as _;
use async_nats::jetstream::Context;
use chrono::TimeDelta;
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
    lease: TimeDelta,
) -> anyhow::Result<Vec<WorkItem>> {
    import::write(pool, repos)
        .await
        .context("recording the repositories")?;
    let keys: Vec<String> = repos.iter().map(RepoName::key).collect();
    // Before the publish: a producer claiming meanwhile finds the rows not due. Never pulls
    // a later due time closer.
    sqlx::query(
        "UPDATE repos SET next_due_at = greatest(next_due_at, now() + $2::interval),
             last_enqueued_at = now()
         WHERE id IN (SELECT id FROM repos WHERE repo_key = ANY($1) ORDER BY id FOR UPDATE)",
    )
    .bind(&keys)
    .bind(format!("{} seconds", lease.num_seconds()))
    .execute(pool)
    .await
    .context("pushing the due time forward")?;
    let items: Vec<WorkItem> = repos
        .iter()
        .map(|r| work_item(r, WorkReason::Manual, MANUAL_PRIORITY))
        .collect();
    let failed = publish_all(js, &topology.manual_subject(), &items).await;
    if let Some((i, e)) = failed.first() {
        anyhow::bail!(
            "publishing the work item for {} failed: {e} (it is scheduled again when its \
             lease runs out; run the command again to ask now)",
            items[*i].repo
        );
    }
    Ok(items)
}
