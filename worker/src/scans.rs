//! The fleet-wide scan register: per repository, the work item that last started a scan of it
//! and whether that item's outcome is published, in a JetStream key-value bucket every worker
//! replica shares (compare-and-set, no extra service).
//!
//! It is what makes "no double scans" hold across the doors a repository can come through
//! (the producer's claim, `producer enqueue`, a hand-written `nats pub`, a replay) and beyond
//! JetStream's two-minute duplicate window: before a worker starts a Job it asks [`decide`],
//! a pure function of the record and the item.
//!
//! Every decision to scan is a compare-and-set write, never a read alone: reads of a replicated
//! bucket may be answered by a replica that is behind (a server back from a partition), and only
//! a write at the revision read proves the record was still what the decision saw. The record
//! also counts the deliveries that claimed the scan: while a second one may be about to create
//! the item's Job, the Job must stay (see [`AfterDone`]).
//!
//! A redelivery of an item whose outcome is out is not run again. Another item's scan of the
//! same repository *covers* a scheduled item if it started no earlier than one Job deadline
//! (and 5 min) before the item was enqueued ([`slack`]): that is how a `nats pub` request and
//! the producer's claim of the same due repository end as one scan. A person's request
//! (manual, replay) is covered only by a scan that started after it, so asking again after a
//! fix rescans. Both times are JetStream's clock.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fleet_proto::v1::{WorkItem, WorkReason};
use serde::{Deserialize, Serialize};

/// The record of the latest scan of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub work_id: String,
    /// The outcome (result or final failure) is published: a redelivery has nothing to do.
    pub done: bool,
    /// When the scan started, by the stream's clock: the time of the record's first write,
    /// carried over when the record is marked done (a rewrite has a time of its own).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Deliveries of this work item that decided to scan it (the first, then each redelivery
    /// that found it running or ended and not yet published).
    #[serde(default = "one")]
    pub claims: u32,
}

fn one() -> u32 {
    1
}

impl ScanRecord {
    fn after_done(&self) -> AfterDone {
        if self.claims <= 1 {
            AfterDone::Remove
        } else {
            AfterDone::Keep
        }
    }
}

/// What becomes of an item's Job once its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDone {
    /// One delivery alone claimed the scan, and it has ended: nobody can be about to create the
    /// Job again, so it goes now.
    Remove,
    /// Several deliveries claimed it (a redelivery while it ran, a retry). One of them may still
    /// be about to create the Job, and must find it, ended, rather than start a second scan:
    /// the Job stays for its TTL (`JOB_TTL_SECS` after it ended).
    Keep,
}

/// What to do with a work item, given the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it (first scan, a retry, or a redelivery that adopts the running Job).
    Scan,
    /// Its outcome is already published: ack, scan nothing.
    AlreadyDone(AfterDone),
    /// Another work item's scan, started late enough to answer this one, covers it.
    Covered { by: String },
}

/// How far before a scheduled item was enqueued another scan may have started and still
/// answer it. A claim happens while the database does not yet know of a running or just
/// finished scan (a `nats pub` request never touches it; a result takes seconds to be
/// stored), so a scan that started up to one Job deadline earlier covers a scheduled item.
/// A person's request (manual, replay) is covered only by a scan that started after it: they
/// may be asking precisely because something changed.
pub fn slack(item: &WorkItem, job_deadline: Duration) -> Duration {
    match WorkReason::try_from(item.reason).unwrap_or_default() {
        WorkReason::Manual | WorkReason::Replay => Duration::ZERO,
        _ => job_deadline + Duration::from_secs(300),
    }
}

/// The decision for `item`, enqueued at `enqueued` (the stream's clock), given the register's
/// `record` for its repository, whose scan started at `recorded` (the stream's clock too).
pub fn decide(
    item: &WorkItem,
    enqueued: DateTime<Utc>,
    record: Option<(&ScanRecord, DateTime<Utc>)>,
    slack: Duration,
) -> Decision {
    let Some((record, recorded)) = record else {
        return Decision::Scan;
    };
    if record.work_id == item.id {
        return if record.done {
            Decision::AlreadyDone(record.after_done())
        } else {
            Decision::Scan
        };
    }
    let slack = chrono::TimeDelta::from_std(slack).unwrap_or(chrono::TimeDelta::MAX);
    if recorded >= enqueued - slack {
        Decision::Covered {
            by: record.work_id.clone(),
        }
    } else {
        Decision::Scan
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the scan register ({bucket}): {message}")]
pub struct RegisterError {
    bucket: String,
    message: String,
}

#[derive(Clone)]
pub struct Register {
    store: Store,
    job_deadline: Duration,
}

/// Attempts at a compare-and-set before giving up: only workers racing for the same
/// repository at the same moment collide, and each loser re-reads and decides again.
const CAS_ATTEMPTS: usize = 5;

impl Register {
    pub fn new(store: Store, job_deadline: Duration) -> Self {
        Self {
            store,
            job_deadline,
        }
    }

    /// The key of a repository: a hash, since a repository name may hold what a key cannot
    /// (`..`, a trailing `.`).
    fn key(repo: &str) -> String {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            repo.to_ascii_lowercase().as_bytes(),
        )
        .simple()
        .to_string()
    }

    fn err(&self, e: impl std::fmt::Display) -> RegisterError {
        RegisterError {
            bucket: self.store.name.clone(),
            message: e.to_string(),
        }
    }

    /// The record, its revision and when its scan started.
    async fn read(
        &self,
        key: &str,
    ) -> Result<Option<(ScanRecord, u64, DateTime<Utc>)>, RegisterError> {
        let Some(entry) = self.store.entry(key).await.map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        // A record this version cannot read is treated as none: scanning is the safe side.
        let record = serde_json::from_slice::<ScanRecord>(&entry.value).ok();
        let written =
            DateTime::from_timestamp(entry.created.unix_timestamp(), entry.created.nanosecond())
                .unwrap_or_default();
        Ok(record.map(|r| {
            let started = r.started_at.unwrap_or(written);
            (r, entry.revision, started)
        }))
    }

    async fn write(
        &self,
        key: &str,
        record: &ScanRecord,
        revision: Option<u64>,
    ) -> Result<bool, RegisterError> {
        let value = Bytes::from(serde_json::to_vec(record).expect("a record serializes"));
        let written = match revision {
            Some(revision) => self
                .store
                .update(key, value, revision)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => self
                .store
                .create(key, value)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
        };
        match written {
            Ok(()) => Ok(true),
            Err((true, _)) => Ok(false),
            Err((false, e)) => Err(self.err(e)),
        }
    }

    /// Decides about `item` and, when it is to be scanned, records it as the repository's
    /// latest scan — atomically against every other worker.
    pub async fn begin(
        &self,
        item: &WorkItem,
        enqueued: DateTime<Utc>,
    ) -> Result<Decision, RegisterError> {
        let key = Self::key(&item.repo);
        let slack = slack(item, self.job_deadline);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(&key).await?;
            let decision = decide(
                item,
                enqueued,
                current.as_ref().map(|(r, _, at)| (r, *at)),
                slack,
            );
            if decision != Decision::Scan {
                return Ok(decision);
            }
            let mine = match &current {
                // A redelivery of a scan that is running or ended unpublished: one claim more.
                Some((r, _, started)) if r.work_id == item.id => ScanRecord {
                    claims: r.claims.saturating_add(1),
                    started_at: Some(*started),
                    ..r.clone()
                },
                _ => ScanRecord {
                    work_id: item.id.clone(),
                    done: false,
                    started_at: None,
                    claims: 1,
                },
            };
            if self
                .write(&key, &mine, current.map(|(_, rev, _)| rev))
                .await?
            {
                return Ok(decision);
            }
        }
        Err(self.err(format!(
            "{CAS_ATTEMPTS} workers raced for {}; try again later",
            item.repo
        )))
    }

    /// Whether `item`'s outcome is already recorded (by the recorder of exhausted items, while
    /// this delivery had lost its heartbeats): then this delivery's outcome must not be published.
    /// A done record is final (no claim follows it), so a stale read errs only towards "not yet".
    pub async fn done(&self, item: &WorkItem) -> Result<Option<AfterDone>, RegisterError> {
        let key = Self::key(&item.repo);
        Ok(match self.read(&key).await? {
            Some((r, _, _)) if r.work_id == item.id && r.done => Some(r.after_done()),
            _ => None,
        })
    }

    /// Records that `item`'s outcome is published, and says whether its Job may go. A newer
    /// scan that took the record leaves this item's claims unknown: its Job stays.
    pub async fn finish(&self, item: &WorkItem) -> Result<AfterDone, RegisterError> {
        let key = Self::key(&item.repo);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(&key).await?;
            let (revision, done) = match current {
                Some((r, _, _)) if r.work_id != item.id => return Ok(AfterDone::Keep),
                Some((r, _, _)) if r.done => return Ok(r.after_done()),
                Some((r, rev, started)) => (
                    Some(rev),
                    ScanRecord {
                        done: true,
                        started_at: Some(started),
                        ..r
                    },
                ),
                // Its record was lost (a bucket recreated): whoever else claimed it is unknown.
                None => (
                    None,
                    ScanRecord {
                        work_id: item.id.clone(),
                        done: true,
                        started_at: None,
                        claims: u32::MAX,
                    },
                ),
            };
            if self.write(&key, &done, revision).await? {
                return Ok(done.after_done());
            }
        }
        Err(self.err(format!("could not record {} as done", item.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, reason: WorkReason) -> WorkItem {
        WorkItem {
            id: id.into(),
            repo: "github.com/a/b".into(),
            reason: reason as i32,
            ..Default::default()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn record(id: &str, done: bool) -> ScanRecord {
        ScanRecord {
            work_id: id.into(),
            done,
            started_at: None,
            claims: 1,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_scan_of_a_repository_runs() {
        let i = item("w", WorkReason::Scheduled);
        assert_eq!(decide(&i, at(0), None, HOUR), Decision::Scan);
    }

    #[test]
    fn a_redelivery_resumes_until_its_outcome_is_published_then_does_nothing() {
        let i = item("w", WorkReason::Scheduled);
        let running = record("w", false);
        assert_eq!(
            decide(&i, at(0), Some((&running, at(5))), HOUR),
            Decision::Scan
        );
        let done = record("w", true);
        assert_eq!(
            decide(&i, at(0), Some((&done, at(5))), HOUR),
            Decision::AlreadyDone(AfterDone::Remove)
        );
    }

    #[test]
    fn a_job_that_several_deliveries_claimed_stays_after_the_outcome() {
        let i = item("w", WorkReason::Scheduled);
        let shared = ScanRecord {
            claims: 2,
            ..record("w", true)
        };
        assert_eq!(
            decide(&i, at(0), Some((&shared, at(5))), HOUR),
            Decision::AlreadyDone(AfterDone::Keep)
        );
    }

    #[test]
    fn a_record_written_before_claims_were_counted_reads_as_one_claim() {
        let old: ScanRecord =
            serde_json::from_str(r#"{"work_id":"w","done":true,"started_at":null}"#).unwrap();
        assert_eq!(old.claims, 1);
        assert_eq!(old.after_done(), AfterDone::Remove);
    }

    #[test]
    fn a_scheduled_item_claimed_during_or_just_after_a_manual_scan_is_covered() {
        let scheduled = item("s", WorkReason::Scheduled);
        let manual = record("m", false);
        let slack = slack(&scheduled, HOUR);
        // The manual scan started 50 minutes before the claim and is still running.
        assert_eq!(
            decide(&scheduled, at(3000), Some((&manual, at(0))), slack),
            Decision::Covered { by: "m".into() }
        );
        // A scan from days ago does not answer a new round.
        assert_eq!(
            decide(&scheduled, at(86_400 * 14), Some((&manual, at(0))), slack),
            Decision::Scan
        );
    }

    #[test]
    fn a_persons_request_is_covered_only_by_a_scan_that_started_after_it() {
        let manual = item("m", WorkReason::Manual);
        let slack = slack(&manual, HOUR);
        assert_eq!(slack, Duration::ZERO);
        let earlier = record("s", true);
        assert_eq!(
            decide(&manual, at(10), Some((&earlier, at(0))), slack),
            Decision::Scan,
            "asked after the last scan began: scan again"
        );
        assert_eq!(
            decide(&manual, at(10), Some((&earlier, at(20))), slack),
            Decision::Covered { by: "s".into() },
            "a scan that began after the request answers it"
        );
        let replay = item("r", WorkReason::Replay);
        assert_eq!(slack_of(&replay), Duration::ZERO);
    }

    fn slack_of(i: &WorkItem) -> Duration {
        slack(i, HOUR)
    }

    #[test]
    fn a_record_keeps_its_scan_start_through_the_done_rewrite() {
        let done = ScanRecord {
            work_id: "w".into(),
            done: true,
            started_at: Some(at(0)),
            claims: 2,
        };
        let back: ScanRecord = serde_json::from_slice(&serde_json::to_vec(&done).unwrap()).unwrap();
        assert_eq!(back, done);
        // A request made while that scan ran, pulled after it was done: a new question.
        let manual = item("m", WorkReason::Manual);
        assert_eq!(
            decide(
                &manual,
                at(10),
                Some((&back, back.started_at.unwrap())),
                Duration::ZERO
            ),
            Decision::Scan
        );
        let first: ScanRecord = serde_json::from_str(r#"{"work_id":"w","done":false}"#).unwrap();
        assert_eq!(
            first.started_at, None,
            "the first write's own time stands for it"
        );
    }

    #[test]
    fn repository_keys_are_valid_bucket_keys_whatever_the_name() {
        for repo in [
            "github.com/a/b..c",
            "github.com/a/b.",
            "github.com/A/.github",
        ] {
            let key = Register::key(repo);
            assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        }
        assert_eq!(
            Register::key("github.com/A/B"),
            Register::key("github.com/a/b"),
            "names match case-insensitively"
        );
    }
}
