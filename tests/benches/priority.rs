//! What honouring priority costs the claim, at 1,000,000 repositories (`PRIORITY_REPOS`),
//! claimed 5,000 at a time by the producer's own `claim`:
//!
//! 1. eleven priorities (criticality tiers 0–10), one in ten due and then every one due (as
//!    after an import), against the obvious single statement (`ORDER BY priority DESC,
//!    next_due_at LIMIT n`, planned by PostgreSQL with both the due index and the
//!    `(priority DESC, next_due_at)` index at hand);
//! 2. every repository of one priority (a list without criticality), one in ten due, against
//!    the claim before priorities (`ORDER BY next_due_at LIMIT n` on the due index): what the
//!    walk over priorities adds.
//!
//! Each pair claims alternately from one database, so both see the same rows and dead tuples.
//! Run with `cargo bench -p fleet-tests --bench priority` once `dev/stack up postgres nats` is
//! up; `dev/bench` runs it. It writes `target/bench-priority.json`.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use fleet_runtime::db::{self, Timeouts};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::{derive_repos, repo_list};
use fleet_tests::scratch::{Scratch, Stack};
use producer::claim::claim;
use producer::import;

const BATCH: i64 = 5_000;
/// Claimed by both together per measurement: enough batches for a steady rate.
const MOST: u64 = 200_000;

/// The single statement ordered by priority: what the tier walk replaces.
const BY_PRIORITY: &str = "WITH due AS (
         SELECT id FROM repos WHERE enabled AND next_due_at <= now()
         ORDER BY priority DESC, next_due_at LIMIT $1 FOR UPDATE SKIP LOCKED
     )
     UPDATE repos r SET next_due_at = now() + interval '1 day' FROM due WHERE r.id = due.id
     RETURNING r.id, r.owner, r.name, r.priority";

/// The claim before priorities: the oldest due, whatever their priority.
const BY_DUE_TIME: &str = "WITH due AS (
         SELECT id FROM repos WHERE enabled AND next_due_at <= now()
         ORDER BY next_due_at LIMIT $1 FOR UPDATE SKIP LOCKED
     )
     UPDATE repos r SET next_due_at = now() + interval '1 day' FROM due WHERE r.id = due.id
     RETURNING r.id, r.owner, r.name, r.priority";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let n: usize = match std::env::var("PRIORITY_REPOS") {
        Ok(v) => v.parse()?,
        Err(_) => 1_000_000,
    };
    let stack = Stack::connect().await?;
    let repos = derive_repos(&repo_list(), n);
    let mut rows = Vec::new();
    // (priorities, one in how many due)
    for (tiers, due_every) in [(11, 10), (11, 1), (1, 10)] {
        let (claim_rate, other_rate, claimed) = stack
            .scratch("priority", async |s| {
                measure(s, &repos, tiers, due_every).await
            })
            .await?;
        let due = if due_every == 1 {
            "every one due (as after an import)".to_owned()
        } else {
            format!("one in {due_every} due")
        };
        let (what, baseline_how) = if tiers > 1 {
            (
                format!("claim of {BATCH} from {tiers} priorities, {due} (producer `claim`)"),
                "one statement `ORDER BY priority DESC, next_due_at LIMIT n`, both indexes at hand",
            )
        } else {
            (
                format!(
                    "claim of {BATCH}, every repository of one priority, {due} (producer `claim`)"
                ),
                "the claim before priorities, `ORDER BY next_due_at LIMIT n` on the due index",
            )
        };
        eprintln!("{what}: {claim_rate:.0}/s; baseline {other_rate:.0}/s");
        rows.push(Row {
            what,
            unit: "items/s",
            value: claim_rate,
            baseline: other_rate,
            baseline_how: baseline_how.into(),
            better: Better::Higher,
            target: None,
            notes: format!(
                "{} repositories; {} claimed by each, alternating",
                number(n as f64),
                number(claimed as f64)
            ),
        });
    }
    let took = started.elapsed();
    println!("\n{}", report::markdown(&rows));
    let machine = vec![("repositories".to_owned(), number(n as f64))];
    let finished = serde_json::json!({ "finished_at": Utc::now().to_rfc3339() });
    let path = report::write_json("priority", &machine, &rows, finished, took)?;
    println!(
        "written to {} ({:.0} s)",
        path.display(),
        took.as_secs_f64()
    );
    Ok(())
}

/// Claims everything due (up to `MOST` each), batch by batch, alternating the producer's claim
/// with the other statement, each in a transaction as the producer's; the rate of each and how
/// many each claimed.
async fn measure(
    s: &Scratch,
    repos: &[fleet_proto::RepoName],
    tiers: i32,
    due_every: i64,
) -> anyhow::Result<(f64, f64, u64)> {
    import::write(&s.pool, repos).await?;
    // The due ones at times spread over a day, the rest over the next two weeks.
    sqlx::query(
        "UPDATE repos SET priority = id % $1,
             next_due_at = CASE WHEN id % $2 = 0 THEN now() - make_interval(secs => id % 86400)
                                ELSE now() + make_interval(secs => 3600 + id % 1209600) END",
    )
    .bind(tiers)
    .bind(due_every)
    .execute(&s.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE repos").execute(&s.pool).await?;
    let other = if tiers > 1 { BY_PRIORITY } else { BY_DUE_TIME };
    let (mut ours, mut theirs) = ((Duration::ZERO, 0u64), (Duration::ZERO, 0u64));
    while ours.1 + theirs.1 < MOST {
        let t = Instant::now();
        let got = claim(&s.pool, Default::default(), BATCH, TimeDelta::days(1)).await?;
        ours = (ours.0 + t.elapsed(), ours.1 + got.len() as u64);
        let t = Instant::now();
        let mut tx = db::begin(&s.pool, Timeouts::default()).await?;
        let done: Vec<(i64, String, String, i32)> = sqlx::query_as(other)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        theirs = (theirs.0 + t.elapsed(), theirs.1 + done.len() as u64);
        if got.is_empty() && done.is_empty() {
            break;
        }
    }
    let rate = |(took, n): (Duration, u64)| n as f64 / took.as_secs_f64();
    Ok((rate(ours), rate(theirs), ours.1.min(theirs.1)))
}
