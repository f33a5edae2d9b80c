//! The scans namespace's admission policy (deploy/base/scan-policy.yaml, its parameters the
//! ConfigMap `scorecard-scan-policy`), checked against the worker's own settings at start-up:
//! a worker whose Jobs the policy would deny, every one, says so and does not start.
//!
//! Two checks. The settings the parameters name one for one (image, ServiceAccount, Secrets,
//! deadline) are compared by name, for an error naming the setting and both values. Then the
//! API server is asked, by a server-side dry run, to create the Job the worker would build:
//! admission runs on dry runs, so this holds the Job to every rule of the policy as it is
//! deployed (the resource ceilings `maxCpu`, `maxMemory` and `maxTmpSize` among them, which
//! are quantities compared by the API server, not here), and cannot drift from it.

use std::collections::BTreeMap;

use fleet_proto::v1::WorkItem;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::job::{self, Credential, JobSettings};

/// The ConfigMap the policy binding reads its parameters from, in the scans namespace.
pub const PARAMS: &str = "scorecard-scan-policy";

/// The repository of the dry-run Job: any valid one builds the same shape.
const DRY_RUN_REPO: &str = "github.com/ossf/scorecard";

/// One credential of each kind, for a dry-run Job of each shape: an App credential adds the
/// App's Secret as a volume and env from it. Their key and installation are not the policy's
/// business; only the Secrets' names are.
const DRY_RUN_CREDENTIALS: [Credential<'static>; 2] =
    [Credential::Token("token"), Credential::App("1")];

/// Every way `settings` would build Jobs the policy with `params` denies; empty when none.
pub fn mismatches(params: &BTreeMap<String, String>, settings: &JobSettings) -> Vec<String> {
    let mut found = Vec::new();
    let mut same = |key: &str, flag: &str, ours: &str| match params.get(key) {
        Some(theirs) if theirs == ours => {}
        Some(theirs) => found.push(format!(
            "{flag} is {ours:?} but the policy admits {theirs:?}"
        )),
        None => found.push(format!("the policy parameters lack {key:?}")),
    };
    same("image", "SCORECARD_IMAGE", &settings.image);
    same(
        "serviceAccount",
        "SCAN_SERVICE_ACCOUNT",
        &settings.service_account,
    );
    same("tokenSecret", "TOKEN_SECRET", &settings.token_secret);
    same("appSecret", "GITHUB_APP_SECRET", &settings.app_secret);
    match params.get("maxDeadlineSeconds").map(|v| v.parse::<i64>()) {
        Some(Ok(max)) if settings.active_deadline_secs <= max => {}
        Some(Ok(max)) => found.push(format!(
            "JOB_DEADLINE_SECS is {} but the policy admits at most {max}",
            settings.active_deadline_secs
        )),
        Some(Err(_)) | None => {
            found.push("the policy parameters lack a numeric \"maxDeadlineSeconds\"".into())
        }
    }
    found
}

/// Fails if the policy would deny every Job `settings` build: first a mismatch with the
/// parameters, named; then whatever the API server says to a dry-run create of the Job, for
/// each kind of credential. What cannot be checked (no parameters, no permission to read them,
/// a dry run that failed on its way, not for its content) is said in a warning, and the worker
/// starts: a moment's trouble of the API server must not keep it down.
pub async fn verify(client: Client, settings: &JobSettings) -> anyhow::Result<()> {
    let ns = &settings.namespace;
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(PARAMS)
        .await
    {
        Ok(Some(params)) => {
            let found = mismatches(&params.data.unwrap_or_default(), settings);
            anyhow::ensure!(
                found.is_empty(),
                "the admission policy of namespace {ns} would deny every Job this worker builds: \
                 {} (align the worker's config with ConfigMap {PARAMS}, or use one `images:` \
                 entry in kustomize for both)",
                found.join("; ")
            );
        }
        Ok(None) => tracing::warn!(namespace = %ns,
            "no ConfigMap {PARAMS}: the Job settings are not compared with policy parameters"),
        Err(e) => tracing::warn!(namespace = %ns, error = %e,
            "could not read the admission policy's parameters; not compared"),
    }
    let jobs: Api<Job> = Api::namespaced(client, ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for credential in DRY_RUN_CREDENTIALS {
        let job = dry_run_job(settings, credential);
        match jobs.create(&dry_run, &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if refuses_every_job(status.code) => anyhow::bail!(
                "namespace {ns} would refuse every scan Job this worker builds: {} (the \
                 API server's answer to a dry-run create of its Job with a {} credential)",
                status.message,
                kind(credential)
            ),
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e,
                    "could not dry-run a scan Job; not checked against the namespace's admission");
                return Ok(());
            }
        }
    }
    tracing::info!(namespace = %ns, "the namespace admits the Jobs this worker builds");
    Ok(())
}

/// The Job the worker would build for a work item fresh from the producer (a UUIDv7 id, so
/// never the name of a real Job) with `credential`.
fn dry_run_job(settings: &JobSettings, credential: Credential<'_>) -> Job {
    let item = WorkItem {
        id: uuid::Uuid::now_v7().to_string(),
        repo: DRY_RUN_REPO.to_owned(),
        ..Default::default()
    };
    job::build(&item, settings, &credential.key())
}

fn kind(credential: Credential<'_>) -> &'static str {
    match credential {
        Credential::Token(_) => "token",
        Credential::App(_) => "App",
    }
}

/// Whether the API server's refusal of the dry run holds for every Job built the same way: a
/// denial (the admission policy, RBAC), an invalid Job, a missing namespace. Not a timeout, a
/// throttle or a conflict, which another request could pass, nor the server's own failure.
fn refuses_every_job(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 408 | 409 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JobSettings {
        JobSettings {
            namespace: "scorecard-scans".into(),
            image: "ghcr.io/ossf/scorecard:v5.3.0".into(),
            service_account: "scorecard-scan".into(),
            token_secret: "scorecard-github-tokens".into(),
            app_secret: "scorecard-github-app".into(),
            active_deadline_secs: 3600,
            ttl_after_finished_secs: 600,
            cpu_request: "1".into(),
            cpu_limit: "1".into(),
            memory_request: "1Gi".into(),
            memory_limit: "1Gi".into(),
            tmp_size_limit: "1Gi".into(),
            checks: Vec::new(),
        }
    }

    /// deploy/'s own parameters admit the worker's defaults.
    fn deployed() -> BTreeMap<String, String> {
        let text = include_str!("../../deploy/base/scans/scan.yaml");
        let params = text
            .split("\n---\n")
            .map(serde_yaml_ng::from_str::<ConfigMap>)
            .find_map(|cm| {
                cm.ok()
                    .filter(|cm| cm.metadata.name.as_deref() == Some(PARAMS))
            })
            .expect("deploy/base/scans/scan.yaml has the policy parameters");
        params.data.unwrap()
    }

    #[test]
    fn deploys_parameters_admit_the_defaults_and_a_drift_is_named() {
        assert_eq!(mismatches(&deployed(), &settings()), Vec::<String>::new());
        let mut drifted = settings();
        drifted.image = "ghcr.io/ossf/scorecard:v9".into();
        drifted.active_deadline_secs = 7200;
        let found = mismatches(&deployed(), &drifted);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("SCORECARD_IMAGE") && found[0].contains("v9"));
        assert!(found[1].contains("at most 3600"));
    }

    #[test]
    fn a_refusal_that_another_request_would_meet_again_stops_the_worker() {
        for code in [400, 401, 403, 404, 422] {
            assert!(refuses_every_job(code), "{code}");
        }
        for code in [408, 409, 429, 500, 503, 504] {
            assert!(!refuses_every_job(code), "{code}");
        }
    }

    #[test]
    fn the_dry_run_job_is_the_workers_own_for_each_kind_of_credential() {
        let settings = settings();
        let token = dry_run_job(&settings, DRY_RUN_CREDENTIALS[0]);
        let app = dry_run_job(&settings, DRY_RUN_CREDENTIALS[1]);
        let volumes = |job: &Job| {
            job.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .volumes
                .as_ref()
                .unwrap()
                .len()
        };
        assert_eq!(volumes(&token), 1, "the /tmp emptyDir");
        assert_eq!(volumes(&app), 2, "and the App's key");
        let annotations = token.metadata.annotations.as_ref().unwrap();
        let id = &annotations[job::WORK_ID_ANNOTATION];
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        let item = WorkItem {
            id: id.clone(),
            repo: DRY_RUN_REPO.into(),
            ..Default::default()
        };
        assert_eq!(token, job::build(&item, &settings, "token"));
        assert_ne!(
            token.metadata.name, app.metadata.name,
            "a fresh id, so never the name of a real Job"
        );
    }
}
