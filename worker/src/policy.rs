//! The scans namespace's admission policy parameters (ConfigMap `scorecard-scan-policy`, what
//! deploy/base/scan-policy.yaml admits), checked against the worker's own settings at start-up:
//! a worker whose Jobs the policy would deny, every one, says so and does not start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::job::JobSettings;

/// The ConfigMap the policy binding reads its parameters from, in the scans namespace.
pub const PARAMS: &str = "scorecard-scan-policy";

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

/// Reads the parameters and fails on any mismatch. Without them (no policy installed, or no
/// permission to read them) the worker starts and says what it could not check.
pub async fn verify(client: Client, settings: &JobSettings) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, &settings.namespace);
    match api.get_opt(PARAMS).await {
        Ok(Some(params)) => {
            let found = mismatches(&params.data.unwrap_or_default(), settings);
            anyhow::ensure!(
                found.is_empty(),
                "the admission policy of namespace {} would deny every Job this worker builds: \
                 {} (align the worker's config with ConfigMap {PARAMS}, or use one `images:` \
                 entry in kustomize for both)",
                settings.namespace,
                found.join("; ")
            );
            tracing::info!(namespace = %settings.namespace, "Job settings match the scans' admission policy");
            Ok(())
        }
        Ok(None) => {
            tracing::warn!(namespace = %settings.namespace,
                "no ConfigMap {PARAMS}: Jobs are not checked against an admission policy here");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(namespace = %settings.namespace, error = %e,
                "could not read the admission policy's parameters; not checked");
            Ok(())
        }
    }
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
}
