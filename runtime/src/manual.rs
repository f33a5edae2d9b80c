//! `producer enqueue` (and the api's `POST .../scan`): a person's request, published to the
//! manual lane at once (workers pull it before any scheduled work). Unknown repositories get a
//! row first, and every one's due time is pushed forward as a claim would, so the scheduled lane
//! does not scan it meanwhile.

use crate::topology::Topology;
use anyhow::Context as _;
use async_nats::jetstream::Context;
use chrono::TimeDelta;
use fleet_proto::RepoName;
use fleet_proto::v1::{WorkItem, WorkReason};

use crate::db::Db;
use crate::publish::{publish_all, work_item};

/// The priority a manual item carries, above every tier a list gives. Priority orders the
/// producer's claims; a manual request runs first because workers pull the manual lane first
/// and keep slots for it.
pub const MANUAL_PRIORITY: i32 = 100;

pub async fn enqueue(
    db: &Db,
    js: &Context,
    topology: &Topology,
    repos: &[RepoName],
    lease: TimeDelta,
) -> anyhow::Result<Vec<WorkItem>> {
    request_scans(db, repos, lease)
        .await
        .context("recording the repositories and pushing their due time forward")?;
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

/// Before the publish: a producer claiming meanwhile finds the rows not due. Through the
/// database's `request_scans`, which the api's read-only role may call too.
async fn request_scans(db: &Db, repos: &[RepoName], lease: TimeDelta) -> Result<(), sqlx::Error> {
    let keys: Vec<String> = repos.iter().map(RepoName::key).collect();
    let owners: Vec<&str> = repos.iter().map(RepoName::owner).collect();
    let names: Vec<&str> = repos.iter().map(RepoName::name).collect();
    // In a transaction: one server behind a transaction pooler (see `db`).
    let mut tx = db.begin().await?;
    sqlx::query("SELECT request_scans($1, $2, $3, $4::interval)")
        .persistent(false)
        .bind(&keys)
        .bind(&owners)
        .bind(&names)
        .bind(crate::db::interval_text(lease))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
