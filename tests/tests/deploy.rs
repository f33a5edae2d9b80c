//! deploy/ on the stack's real API server: every overlay passes a server-side dry run, RBAC
//! grants each ServiceAccount exactly what it needs in each of the two namespaces, and the
//! scans' admission policy admits what the worker builds and nothing else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_tests::kube_support::{self, TestNamespace};
use fleet_tests::stack;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(stack::tool("kubectl"));
    cmd.arg("--kubeconfig").arg(stack::kubeconfig()).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn every_overlay_passes_a_server_side_dry_run() {
    let crd = root().join("tests/fixtures/keda-scaledobject-crd.yaml");
    ok(
        &kubectl(
            &["apply", "--server-side", "-f", crd.to_str().unwrap()],
            None,
        ),
        "applying the KEDA CRD",
    );
    ok(
        &kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/scaledobjects.keda.sh",
                "--timeout=60s",
            ],
            None,
        ),
        "waiting for the CRD",
    );
    // Namespaced objects are checked against namespaces that exist.
    for ns in ["scorecard-fleet", "scorecard-scans"] {
        let _ = kubectl(&["create", "namespace", ns], None);
    }
    for overlay in [
        "base",
        "overlays/dev",
        "overlays/keda",
        "overlays/production",
    ] {
        let dir = root().join("deploy").join(overlay);
        let rendered = ok(
            &kubectl(&["kustomize", dir.to_str().unwrap()], None),
            &format!("kustomize {overlay}"),
        );
        assert!(
            rendered.contains("kind: Deployment"),
            "{overlay} renders Deployments"
        );
        let applied = ok(
            &kubectl(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(rendered.as_bytes()),
            ),
            &format!("server-side dry run of {overlay}"),
        );
        assert!(
            applied.contains("deployment.apps/scorecard-fleet-worker"),
            "{overlay}: {applied}"
        );
        if overlay.ends_with("keda") {
            assert!(
                applied.contains("scaledobject.keda.sh/scorecard-fleet-worker"),
                "{applied}"
            );
        }
    }
    // A broken manifest is refused by the same check, so the check can fail.
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: scorecard-fleet}\nspec: {replicas: -1}\n";
    assert!(
        !kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(broken.as_bytes())
        )
        .status
        .success()
    );
}

/// `key` of the ConfigMap `overlay` renders.
fn config_value(overlay: &str, key: &str) -> Option<String> {
    let dir = root().join("deploy").join(overlay);
    let rendered = ok(
        &kubectl(&["kustomize", dir.to_str().unwrap()], None),
        &format!("kustomize {overlay}"),
    );
    serde_yaml_ng::Deserializer::from_str(&rendered)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .find(|doc: &serde_yaml_ng::Value| {
            doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "scorecard-fleet"
        })
        .and_then(|config| config["data"][key].as_str().map(str::to_owned))
}

/// KEDA scales on the stream and consumer the fleet's NATS_PREFIX names: a prefix changed in
/// one place only would have KEDA read a consumer that does not exist and never scale.
#[test]
fn keda_reads_the_consumer_the_configured_prefix_names() {
    let prefix = config_value("overlays/keda", "NATS_PREFIX").expect("NATS_PREFIX in config");
    let topology = fleet_runtime::topology::Topology::new(fleet_runtime::topology::TopologyArgs {
        nats_prefix: prefix,
        ..Default::default()
    })
    .unwrap();
    let text =
        std::fs::read_to_string(root().join("deploy/overlays/keda/scaledobject.yaml")).unwrap();
    let scaled: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let trigger = &scaled["spec"]["triggers"][0]["metadata"];
    assert_eq!(
        trigger["stream"].as_str(),
        Some(topology.work_stream().as_str())
    );
    assert_eq!(
        trigger["consumer"].as_str(),
        Some(fleet_runtime::topology::WORKER_SCHEDULED)
    );
}

/// Production runs every stream with three replicas on a seed list of the three servers; the
/// values parse as the services parse them.
#[test]
fn production_replicates_every_stream_three_times_on_three_seeds() {
    let replicas = config_value("overlays/production", "NATS_STREAM_REPLICAS");
    assert_eq!(replicas.as_deref(), Some("3"));
    let url = config_value("overlays/production", "NATS_URL").unwrap();
    assert_eq!(fleet_runtime::nats::seeds(&url).len(), 3, "{url}");
    assert_eq!(
        config_value("overlays/dev", "NATS_STREAM_REPLICAS"),
        None,
        "the dev overlay stays single-node (the default, 1)"
    );
}

#[tokio::test]
async fn service_accounts_can_do_exactly_what_they_need_in_each_namespace() {
    let admin = kube_support::admin().await;
    let fleet = TestNamespace::create(&admin, "rbac-fleet").await;
    let scans = TestNamespace::create(&admin, "rbac-scans").await;
    kube_support::install_scans(&scans.name, &fleet.name).await;
    let worker = "scorecard-fleet-worker";
    let can_worker = |ns: &str, verb: &str, resource: &str, extra: &[&str]| {
        can_as(&fleet.name, worker, ns, verb, resource, extra)
    };
    let allowed: &[(&str, &str, &[&str])] = &[
        ("create", "jobs.batch", &[]),
        ("get", "jobs.batch", &[]),
        ("list", "jobs.batch", &[]),
        ("watch", "jobs.batch", &[]),
        ("delete", "jobs.batch", &[]),
        ("get", "pods", &[]),
        ("list", "pods", &[]),
        ("get", "pods", &["--subresource=log"]),
        ("list", "events", &[]),
        ("get", "configmaps/scorecard-scan-policy", &[]),
    ];
    for (verb, resource, extra) in allowed {
        assert!(
            can_worker(&scans.name, verb, resource, extra),
            "worker must be able to {verb} {resource} {extra:?} in the scans namespace"
        );
    }
    let denied: &[(&str, &str, &[&str])] = &[
        ("patch", "jobs.batch", &[]),
        ("update", "jobs.batch", &[]),
        ("deletecollection", "jobs.batch", &[]),
        ("create", "pods", &[]),
        ("delete", "pods", &[]),
        ("watch", "pods", &[]),
        ("create", "events", &[]),
        ("delete", "events", &[]),
        ("get", "secrets", &[]),
        ("list", "secrets", &[]),
        ("get", "secrets/scorecard-fleet-db", &[]),
        ("get", "secrets/scorecard-github-tokens", &[]),
        ("get", "configmaps", &[]),
        ("list", "configmaps", &[]),
        ("update", "configmaps/scorecard-scan-policy", &[]),
        ("create", "pods", &["--subresource=exec"]),
        ("create", "deployments.apps", &[]),
        ("create", "rolebindings.rbac.authorization.k8s.io", &[]),
        ("list", "jobs.batch", &["--all-namespaces"]),
        ("list", "secrets", &["--all-namespaces"]),
        ("list", "nodes", &[]),
        ("list", "namespaces", &[]),
        (
            "create",
            "validatingadmissionpolicies.admissionregistration.k8s.io",
            &[],
        ),
    ];
    for (verb, resource, extra) in denied {
        assert!(
            !can_worker(&scans.name, verb, resource, extra),
            "worker must not {verb} {resource} {extra:?} in the scans namespace"
        );
    }
    // The fleet's own namespace (the database Secret, the producer and sink) grants it nothing.
    for (verb, resource, extra) in allowed.iter().chain(denied) {
        assert!(
            !can_worker(&fleet.name, verb, resource, extra),
            "worker must not {verb} {resource} {extra:?} in the fleet's namespace"
        );
    }
    for (ns, sa) in [
        (&scans.name, "scorecard-scan"),
        (&fleet.name, "scorecard-fleet-producer"),
        (&fleet.name, "scorecard-fleet-sink"),
        (&fleet.name, "scorecard-fleet-api"),
    ] {
        for target in [&scans.name, &fleet.name] {
            for (verb, resource, extra) in allowed.iter().chain(denied) {
                assert!(
                    !can_as(ns, sa, target, verb, resource, extra),
                    "{sa} must not {verb} {resource} {extra:?} in {target}"
                );
            }
        }
    }
}

/// `kubectl auth can-i` as ServiceAccount `sa` of namespace `home`, in namespace `ns`.
fn can_as(home: &str, sa: &str, ns: &str, verb: &str, resource: &str, extra: &[&str]) -> bool {
    let who = format!("system:serviceaccount:{home}:{sa}");
    let mut args = vec!["auth", "can-i", verb, resource, "--as", &who, "-n", ns];
    args.extend_from_slice(extra);
    let out = kubectl(&args, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {verb} {resource}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

fn scan_settings(ns: &str) -> worker::job::JobSettings {
    kube_support::scan_job_settings(ns, 3600)
}

/// As the worker's own token: every Job the worker builds (token or App credential) is admitted
/// in the scans namespace; each way to run something else is denied with the rule's name; and
/// the database Secret is out of reach by every path — reading it, referencing it from a Job,
/// or creating anything in the fleet's namespace.
#[tokio::test]
async fn the_admission_policy_admits_what_the_worker_builds_and_nothing_else() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{
        ConfigMap, EnvFromSource, EnvVar, EnvVarSource, HostPathVolumeSource, Pod, SecretEnvSource,
        SecretKeySelector, SecretVolumeSource, Volume,
    };
    use kube::api::{Api, PostParams};
    let admin = kube_support::admin().await;
    let fleet = TestNamespace::create(&admin, "vap-fleet").await;
    let scans = TestNamespace::create(&admin, "vap-scans").await;
    kube_support::install_scans(&scans.name, &fleet.name).await;
    let token = kube_support::service_account_token(&admin, &fleet.name, "scorecard-fleet-worker")
        .await
        .unwrap();
    let as_worker = kube_support::as_service_account(token).await;
    let jobs: Api<Job> = Api::namespaced(as_worker.clone(), &scans.name);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let settings = scan_settings(&scans.name);
    let item = fleet_proto::v1::WorkItem {
        id: "0190a8f2-7c4b-7d4e-9a4b-1c2d3e4f5a6b".into(),
        repo: "github.com/ossf/scorecard".into(),
        ..Default::default()
    };
    for credential in ["token-0", "app:4242"] {
        let job = worker::job::build(&item, &settings, credential);
        jobs.create(&dry, &job)
            .await
            .unwrap_or_else(|e| panic!("the worker's own Job ({credential}) is admitted: {e}"));
    }
    // The worker's settings agree with the parameters deploy/ installed.
    worker::policy::verify(as_worker.clone(), &settings)
        .await
        .unwrap();

    type Change = fn(&mut Job);
    fn spec(job: &mut Job) -> &mut k8s_openapi::api::core::v1::PodSpec {
        job.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
    }
    fn container(job: &mut Job) -> &mut k8s_openapi::api::core::v1::Container {
        &mut spec(job).containers[0]
    }
    let cases: &[(&str, Change, &str)] = &[
        (
            "another image",
            |j| container(j).image = Some("alpine:3".into()),
            "(image)",
        ),
        (
            "another ServiceAccount",
            |j| spec(j).service_account_name = Some("scorecard-fleet-worker".into()),
            "(service account)",
        ),
        (
            "a mounted ServiceAccount token",
            |j| spec(j).automount_service_account_token = Some(true),
            "(service account token)",
        ),
        (
            "a hostPath volume",
            |j| {
                spec(j).volumes.as_mut().unwrap().push(Volume {
                    name: "host".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            "(volumes)",
        ),
        (
            "the database Secret as a volume",
            |j| {
                spec(j).volumes.as_mut().unwrap().push(Volume {
                    name: "db".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("scorecard-fleet-db".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            "(volumes)",
        ),
        (
            "a privileged container",
            |j| {
                container(j).security_context.as_mut().unwrap().privileged = Some(true);
                container(j)
                    .security_context
                    .as_mut()
                    .unwrap()
                    .allow_privilege_escalation = None;
            },
            "(privileged)",
        ),
        (
            "an added capability",
            |j| {
                let caps = container(j)
                    .security_context
                    .as_mut()
                    .unwrap()
                    .capabilities
                    .as_mut()
                    .unwrap();
                caps.add = Some(vec!["NET_ADMIN".into()]);
            },
            "(capabilities)",
        ),
        (
            "the host network",
            |j| spec(j).host_network = Some(true),
            "(host)",
        ),
        (
            "envFrom the database Secret",
            |j| {
                container(j).env_from = Some(vec![EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "scorecard-fleet-db".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }])
            },
            "(envFrom)",
        ),
        (
            "a key of the database Secret",
            |j| {
                container(j).env.as_mut().unwrap().push(EnvVar {
                    name: "DATABASE_URL".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "scorecard-fleet-db".into(),
                            key: "database-url".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            "(env)",
        ),
        (
            "no deadline",
            |j| j.spec.as_mut().unwrap().active_deadline_seconds = None,
            "(deadline)",
        ),
        (
            "a deadline over the cap",
            |j| j.spec.as_mut().unwrap().active_deadline_seconds = Some(7200),
            "(deadline)",
        ),
        (
            "retries in the Job",
            |j| j.spec.as_mut().unwrap().backoff_limit = Some(6),
            "(backoffLimit)",
        ),
        (
            "without the fleet's label",
            |j| {
                j.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .remove("app.kubernetes.io/managed-by");
            },
            "(labels)",
        ),
    ];
    for (what, change, rule) in cases {
        let mut job = worker::job::build(&item, &settings, "token-0");
        change(&mut job);
        let denied = jobs
            .create(&dry, &job)
            .await
            .expect_err(&format!("a Job with {what} must be denied"));
        let message = denied.to_string();
        assert!(
            message.contains("scorecard-fleet-scans") && message.contains(rule),
            "{what}: the denial names rule {rule}: {message}"
        );
    }

    // Pods are held to the same rules, whoever creates them (here an admin).
    let mut bare = worker::job::build(&item, &settings, "token-0");
    container(&mut bare).image = Some("alpine:3".into());
    let template = bare.spec.unwrap().template;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("bare".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let denied = Api::<Pod>::namespaced(admin.clone(), &scans.name)
        .create(&dry, &pod)
        .await
        .expect_err("a pod with another image is denied");
    assert!(denied.to_string().contains("(image)"), "{denied}");

    // The fleet's namespace: nothing may be created there, and no Secret read anywhere.
    let job = worker::job::build(&item, &scan_settings(&fleet.name), "token-0");
    let refused = Api::<Job>::namespaced(as_worker.clone(), &fleet.name)
        .create(&dry, &job)
        .await
        .expect_err("no Job in the fleet's namespace");
    assert!(refused.to_string().contains("forbidden"), "{refused}");
    let refused = Api::<ConfigMap>::namespaced(as_worker.clone(), &fleet.name)
        .create(
            &dry,
            &ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some("x".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect_err("no ConfigMap in the fleet's namespace");
    assert!(refused.to_string().contains("forbidden"), "{refused}");
    for ns in [&fleet.name, &scans.name] {
        let refused = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_worker.clone(), ns)
            .get("scorecard-fleet-db")
            .await
            .expect_err("no Secret is readable");
        assert!(refused.to_string().contains("forbidden"), "{refused}");
    }
}
