//! The scorecard Job for a work item: one pure function, so every field is unit-tested here.
//!
//! - Named from the work id ([`job_name`], `sc-<UUIDv5>`), so a redelivery finds the Job an
//!   earlier delivery started; labelled [`SELECTOR`] and with the work id, the repository and
//!   the credential key in annotations.
//! - `backoffLimit: 0` (retries belong to the queue), `activeDeadlineSeconds` from
//!   `JOB_DEADLINE_SECS`, and `ttlSecondsAfterFinished` as a safety net: the worker deletes the
//!   Job itself.
//! - The pinned image with `--repo=… --format=json --show-details [--checks=…] [--commit=…]`
//!   ([`scorecard_args`]).
//! - The credential the budget handed out, by reference, never a plain value
//!   ([`Credential`]): `GITHUB_AUTH_TOKEN` from a key of the token Secret, or an App
//!   installation's id with the App's key file mounted from its Secret.
//! - A locked-down pod: its own ServiceAccount with no mounted token, non-root, a read-only
//!   root filesystem with a `/tmp` emptyDir, every capability dropped, RuntimeDefault seccomp.

use std::collections::BTreeMap;

use fleet_proto::v1::WorkItem;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "scorecard-fleet";
pub const WORK_ID_LABEL: &str = "scorecard-fleet/work-id";
pub const WORK_ID_ANNOTATION: &str = "scorecard-fleet/work-id";
pub const REPO_ANNOTATION: &str = "scorecard-fleet/repo";
pub const TOKEN_KEY_ANNOTATION: &str = "scorecard-fleet/token-key";
pub const CONTAINER: &str = "scorecard";
/// The selector of the one shared watch: every Job this fleet creates, and only those.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=scorecard-fleet";

/// Namespace for Job names: a stable function of the work id.
const JOB_NAME_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c0e_ca2d_f1ee_7000_8000_0000_00c0_b5ed);

/// Where a scan's GitHub credential comes from. A pool key names one: a key of the token Secret
/// (`token-0`), or `app:<installation id>` (`:` cannot occur in a Secret key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Token(&'a str),
    App(&'a str),
}

/// Where the App's private key is mounted in a scan's pod (`GITHUB_APP_KEY_PATH`).
pub const APP_KEY_DIR: &str = "/etc/github-app";
const APP_KEY_FILE: &str = "private-key";
const APP_PREFIX: &str = "app:";

impl<'a> Credential<'a> {
    pub fn of(key: &'a str) -> Self {
        match key.strip_prefix(APP_PREFIX) {
            Some(installation) => Self::App(installation),
            None => Self::Token(key),
        }
    }

    /// The pool key (and the Job's token-key annotation).
    pub fn key(self) -> String {
        match self {
            Self::Token(key) => key.to_owned(),
            Self::App(installation) => format!("{APP_PREFIX}{installation}"),
        }
    }
}

/// Everything about the Job that comes from configuration rather than the work item.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub namespace: String,
    pub image: String,
    pub service_account: String,
    pub token_secret: String,
    /// The GitHub App's Secret (keys `app-id`, `private-key`), for App credentials.
    pub app_secret: String,
    pub active_deadline_secs: i64,
    pub ttl_after_finished_secs: i32,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub tmp_size_limit: String,
    /// scorecard's `--checks=`; empty, every check runs.
    pub checks: Vec<String>,
}

/// `sc-<hash of the work id>`: deterministic, so a redelivered item finds the Job it already
/// started; 35 characters of DNS-1123, whatever the id looks like.
pub fn job_name(work_id: &str) -> String {
    format!(
        "sc-{}",
        uuid::Uuid::new_v5(&JOB_NAME_NAMESPACE, work_id.as_bytes()).simple()
    )
}

/// The work id as a label value when it is one (UUIDs are), else its hash: labels allow 63
/// characters of `[A-Za-z0-9._-]`, the annotation keeps the id verbatim.
fn work_id_label(work_id: &str) -> String {
    let valid = !work_id.is_empty()
        && work_id.len() <= 63
        && work_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && work_id.as_bytes()[0].is_ascii_alphanumeric()
        && work_id.as_bytes()[work_id.len() - 1].is_ascii_alphanumeric();
    if valid {
        work_id.to_owned()
    } else {
        job_name(work_id)
    }
}

/// `checks` if each is one of scorecard's; otherwise which is not, for a person.
pub fn check_names(checks: &[String]) -> Result<(), String> {
    match checks.iter().find(|c| {
        !fleet_proto::scorecard::CHECKS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(c))
    }) {
        Some(unknown) => Err(format!(
            "SCORECARD_CHECKS: {unknown:?} is not a scorecard check; the checks are {}",
            fleet_proto::scorecard::CHECKS.join(", ")
        )),
        None => Ok(()),
    }
}

/// scorecard's command line for an item, running `checks` only (all when empty).
pub fn scorecard_args(item: &WorkItem, checks: &[String]) -> Vec<String> {
    let mut args = vec![
        format!("--repo={}", item.repo),
        "--format=json".to_owned(),
        "--show-details".to_owned(),
    ];
    if !checks.is_empty() {
        args.push(format!("--checks={}", checks.join(",")));
    }
    if let Some(commit) = item.commit.as_deref().filter(|c| !c.is_empty()) {
        args.push(format!("--commit={commit}"));
    }
    args
}

/// The environment and volume that give a scan its credential; never a plain secret value.
fn credential_env(
    settings: &JobSettings,
    credential: Credential<'_>,
) -> (Vec<EnvVar>, Option<(Volume, VolumeMount)>) {
    let from_secret = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let plain = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    };
    match credential {
        Credential::Token(key) => (
            vec![from_secret(
                "GITHUB_AUTH_TOKEN",
                &settings.token_secret,
                key,
            )],
            None,
        ),
        // scorecard signs its own installation tokens from the key file: GITHUB_APP_KEY_PATH,
        // GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID.
        Credential::App(installation) => (
            vec![
                from_secret("GITHUB_APP_ID", &settings.app_secret, "app-id"),
                plain("GITHUB_APP_INSTALLATION_ID", installation),
                plain(
                    "GITHUB_APP_KEY_PATH",
                    &format!("{APP_KEY_DIR}/{APP_KEY_FILE}"),
                ),
            ],
            Some((
                Volume {
                    name: "github-app".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(settings.app_secret.clone()),
                        items: Some(vec![KeyToPath {
                            key: APP_KEY_FILE.to_owned(),
                            path: APP_KEY_FILE.to_owned(),
                            ..Default::default()
                        }]),
                        // Readable by the scan's group (fsGroup) only.
                        default_mode: Some(0o440),
                        optional: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeMount {
                    name: "github-app".to_owned(),
                    mount_path: APP_KEY_DIR.to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                },
            )),
        ),
    }
}

/// The Job for `item`, its GitHub credential the one pool key `token_key` names
/// ([`Credential`]).
pub fn build(item: &WorkItem, settings: &JobSettings, token_key: &str) -> Job {
    let (env, app_key) = credential_env(settings, Credential::of(token_key));
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(settings.tmp_size_limit.clone())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    // scorecard clones and unpacks into /tmp; the root filesystem is read-only.
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..Default::default()
    }];
    if let Some((volume, mount)) = app_key {
        volumes.push(volume);
        mounts.push(mount);
    }
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "scorecard".to_owned()),
        (WORK_ID_LABEL.to_owned(), work_id_label(&item.id)),
    ]);
    let annotations = BTreeMap::from([
        (REPO_ANNOTATION.to_owned(), item.repo.clone()),
        (WORK_ID_ANNOTATION.to_owned(), item.id.clone()),
        (TOKEN_KEY_ANNOTATION.to_owned(), token_key.to_owned()),
    ]);
    let quantity = |s: &str| Quantity(s.to_owned());
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(scorecard_args(item, &settings.checks)),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&settings.cpu_request)),
                ("memory".to_owned(), quantity(&settings.memory_request)),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&settings.cpu_limit)),
                ("memory".to_owned(), quantity(&settings.memory_limit)),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&item.id)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries belong to the queue, where they are delayed, counted and dead-lettered.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(settings.active_deadline_secs),
            // A safety net: the worker deletes the Job itself once its result is published.
            ttl_seconds_after_finished: Some(settings.ttl_after_finished_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    service_account_name: Some(settings.service_account.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        // The distroless scorecard image's nonroot user.
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // The App's key file is group-readable by this group only.
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> JobSettings {
        JobSettings {
            namespace: "scorecard".into(),
            image: "ghcr.io/ossf/scorecard:v5.3.0".into(),
            service_account: "scorecard-scan".into(),
            token_secret: "github-tokens".into(),
            app_secret: "github-app".into(),
            active_deadline_secs: 3600,
            ttl_after_finished_secs: 3600,
            cpu_request: "250m".into(),
            cpu_limit: "1".into(),
            memory_request: "256Mi".into(),
            memory_limit: "1Gi".into(),
            tmp_size_limit: "2Gi".into(),
            checks: Vec::new(),
        }
    }

    fn item() -> WorkItem {
        WorkItem {
            id: "0190a8f2-7c4b-7d4e-9a4b-1c2d3e4f5a6b".into(),
            repo: "github.com/ossf/scorecard".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_name_is_a_stable_dns_label_from_the_work_id() {
        let a = job_name("w-1");
        assert_eq!(a, job_name("w-1"));
        assert_ne!(a, job_name("w-2"));
        assert!(a.len() <= 63 && a.starts_with("sc-"));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        let long = job_name(&"x".repeat(500));
        assert_eq!(long.len(), a.len());
    }

    #[test]
    fn labels_and_annotations_identify_the_work() {
        let job = build(&item(), &settings(), "token-0");
        let meta = &job.metadata;
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[WORK_ID_LABEL], item().id);
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[REPO_ANNOTATION], "github.com/ossf/scorecard");
        assert_eq!(annotations[WORK_ID_ANNOTATION], item().id);
        let template = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(
            template.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
            MANAGED_BY
        );

        let odd = WorkItem {
            id: "not a label/value".into(),
            ..item()
        };
        let job = build(&odd, &settings(), "token-0");
        let label = &job.metadata.labels.as_ref().unwrap()[WORK_ID_LABEL];
        assert_eq!(label, &job_name("not a label/value"));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[WORK_ID_ANNOTATION],
            "not a label/value"
        );
    }

    #[test]
    fn retries_belong_to_the_queue_and_deadlines_are_set() {
        let spec = build(&item(), &settings(), "token-0").spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn the_pod_is_hardened_and_the_token_comes_from_a_secret() {
        let pod = build(&item(), &settings(), "token-3")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("scorecard-scan"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/ossf/scorecard:v5.3.0"));
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--repo=github.com/ossf/scorecard",
                "--format=json",
                "--show-details"
            ]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
        let env = &c.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "GITHUB_AUTH_TOKEN");
        assert_eq!(env.value, None, "no token in the plain env");
        let key = env
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("github-tokens", "token-3")
        );
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"].0, "1Gi");
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/tmp");
        assert!(pod.volumes.unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn an_app_installation_gets_its_id_and_the_key_file_never_a_plain_secret() {
        let pod = build(&item(), &settings(), &Credential::App("4242").key())
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let c = &pod.containers[0];
        let env: Vec<(&str, Option<&str>)> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            env,
            [
                ("GITHUB_APP_ID", None),
                ("GITHUB_APP_INSTALLATION_ID", Some("4242")),
                ("GITHUB_APP_KEY_PATH", Some("/etc/github-app/private-key")),
            ]
        );
        let app_id = c.env.as_ref().unwrap()[0].value_from.as_ref().unwrap();
        let key = app_id.secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("github-app", "app-id")
        );
        let volume = &pod.volumes.as_ref().unwrap()[1];
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("github-app"));
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = &c.volume_mounts.as_ref().unwrap()[1];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/github-app", Some(true))
        );
        assert_eq!(pod.security_context.unwrap().fs_group, Some(65532));
        assert_eq!(Credential::of("app:4242"), Credential::App("4242"));
        assert_eq!(Credential::of("token-1"), Credential::Token("token-1"));
    }

    #[test]
    fn a_commit_is_passed_on() {
        let with = WorkItem {
            commit: Some("abc123".into()),
            ..item()
        };
        assert_eq!(
            scorecard_args(&with, &[]).last().unwrap(),
            "--commit=abc123"
        );
        let empty = WorkItem {
            commit: Some(String::new()),
            ..item()
        };
        assert_eq!(scorecard_args(&empty, &[]).len(), 3);
    }

    #[test]
    fn chosen_checks_are_passed_on_and_unknown_ones_refused() {
        let checks = vec!["Code-Review".to_owned(), "Maintained".to_owned()];
        assert!(
            scorecard_args(&item(), &checks)
                .contains(&"--checks=Code-Review,Maintained".to_owned())
        );
        assert!(check_names(&checks).is_ok());
        let wrong = check_names(&["Code-Reviews".to_owned()]).unwrap_err();
        assert!(
            wrong.contains("\"Code-Reviews\" is not a scorecard check"),
            "{wrong}"
        );
    }
}
