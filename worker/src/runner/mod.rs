//! Runners run one scan for a work item: the Kubernetes runner (a Job; the default in a
//! cluster) and the process runner (a local `scorecard` binary, for people without a cluster).
//! Both end in the same [`RunResult`]: a [`RunLog`] read by the same rules (`logs.rs`), or an
//! INFRA failure.

pub mod kubernetes;
pub mod process;

use fleet_proto::v1::WorkItem;

use crate::logs::RunLog;

/// Why a scan's Job could not be taken to its end, or out of the way: what was being done, to
/// which Job. Its text becomes an INFRA failure's message.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "no Job {0} of a previous delivery to re-attach to, and no GitHub credential to start one"
    )]
    NothingToAdopt(String),
    #[error("creating Job {job}: {source}")]
    Create { job: String, source: kube::Error },
    #[error("Job {0} was deleted while being created again")]
    DeletedWhileCreated(String),
    #[error("reading existing Job {job}: {source}")]
    ReadExisting { job: String, source: kube::Error },
    #[error("Job {job} exists but belongs to work item {owner:?}, not {item}")]
    NotOurs {
        job: String,
        owner: Option<String>,
        item: String,
    },
    #[error("Job {0} of a previous attempt is still being deleted")]
    StillDeleting(String),
    #[error("Job {0} was deleted while running")]
    DeletedWhileRunning(String),
    #[error("Job {0} disappeared while running")]
    Disappeared(String),
    #[error("the Job watch stopped")]
    WatchStopped,
    /// Its pod cannot start, in the words of the pod's status and events.
    #[error("{0}")]
    Stuck(String),
    #[error("Job {job} has not ended {seconds}s past its deadline")]
    Overdue { job: String, seconds: u64 },
    #[error("Job {0} is gone, and the watch never reported its end")]
    Gone(String),
    #[error("reading Job {job} after its deadline: {source}")]
    ReadAfterDeadline { job: String, source: kube::Error },
    #[error("listing the pod of Job {job}: {source}")]
    ListPod { job: String, source: kube::Error },
    #[error("reading Job {job}: {source}")]
    Read { job: String, source: kube::Error },
    #[error("Job {job} was still there {seconds}s after its delete")]
    StillThere { job: String, seconds: u64 },
    #[error("deleting Job {job}: {source}")]
    Delete { job: String, source: kube::Error },
}

#[derive(Debug, Clone)]
pub enum RunResult {
    /// The scan ran to an end (success or not). `adopted`: a previous delivery had started it;
    /// `ended_before`: and it had already ended before this delivery came.
    Ended {
        run: RunLog,
        adopted: bool,
        ended_before: bool,
    },
    /// The scan could not be run (API errors, image pulls, scheduling): an INFRA failure.
    /// `created`: this delivery had created the Job, so its pod may have called GitHub.
    Infra {
        message: String,
        job_name: String,
        created: bool,
    },
}

impl RunResult {
    /// Whether this delivery's credential was spent: a Job it created ran (or may have), not
    /// one an earlier delivery started, nor a scan that never got a Job.
    pub fn spent_credential(&self) -> bool {
        match self {
            RunResult::Ended { adopted, .. } => !adopted,
            RunResult::Infra { created, .. } => *created,
        }
    }
}

#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Starts the scan with `credential` (a key of the credential pool; the process runner
    /// uses its own token) or re-attaches to the one a previous delivery started, and waits
    /// for its end. Dropping the future leaves the scan running: the next delivery adopts it.
    /// Without a credential the Kubernetes runner only re-attaches (see [`Runner::has_run`]).
    async fn run(&self, item: &WorkItem, credential: Option<&str>) -> RunResult;

    /// Whether a previous delivery of `item` left a run (running or ended) to re-attach to:
    /// such a delivery needs no credential, since it starts nothing on GitHub.
    async fn has_run(&self, _item: &WorkItem) -> bool {
        false
    }

    /// Removes what the scan left behind, once its outcome is durable (published) or the item
    /// is handed back for a fresh try. A failure is logged: the Job's TTL is the backstop.
    async fn cleanup(&self, item: &WorkItem);

    /// Removes a previous attempt's ended run and waits until it is gone, so the next
    /// [`Runner::run`] starts a fresh one instead of reading the old one again.
    async fn discard(&self, item: &WorkItem) -> Result<(), JobError> {
        self.cleanup(item).await;
        Ok(())
    }

    /// The run a previous delivery of `item` left behind, if it has ended: what a recorder of
    /// an exhausted item reads, so a scan that did finish is not thrown away.
    async fn ended(&self, _item: &WorkItem) -> Option<RunResult> {
        None
    }
}
