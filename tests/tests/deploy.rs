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
        Affinity, AppArmorProfile, ConfigMap, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
        EnvVar, EnvVarSource, HostAlias, HostPathVolumeSource, NodeAffinity, NodeSelector,
        NodeSelectorRequirement, NodeSelectorTerm, Pod, PodDNSConfig, PodSecurityContext,
        ResourceRequirements, SELinuxOptions, SeccompProfile, SecretEnvSource, SecretKeySelector,
        SecretVolumeSource, SecurityContext, Sysctl, Toleration, TopologySpreadConstraint, Volume,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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
    // So is the Job of a worker left at its defaults (SCAN_CPU_LIMIT, SCAN_MEMORY_LIMIT,
    // SCAN_TMP_SIZE, JOB_DEADLINE_SECS): the ceilings of the policy's parameters fit them.
    let defaults = <worker::config::Cli as clap::Parser>::try_parse_from(["worker"])
        .unwrap()
        .job_settings();
    let job = worker::job::build(
        &item,
        &worker::job::JobSettings {
            namespace: scans.name.clone(),
            ..defaults
        },
        "token-0",
    );
    jobs.create(&dry, &job)
        .await
        .unwrap_or_else(|e| panic!("the Job of a worker at its defaults is admitted: {e}"));
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
    fn pod_security(job: &mut Job) -> &mut PodSecurityContext {
        spec(job).security_context.as_mut().unwrap()
    }
    fn security(job: &mut Job) -> &mut SecurityContext {
        container(job).security_context.as_mut().unwrap()
    }
    fn resources(job: &mut Job) -> &mut ResourceRequirements {
        container(job).resources.as_mut().unwrap()
    }
    fn tmp(job: &mut Job) -> &mut EmptyDirVolumeSource {
        spec(job).volumes.as_mut().unwrap()[0]
            .empty_dir
            .as_mut()
            .unwrap()
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
        // Issue 28: the two shapes found admitted.
        (
            "root, with privilege escalation allowed",
            |j| {
                let sc = security(j);
                sc.run_as_user = Some(0);
                sc.run_as_non_root = Some(false);
                sc.allow_privilege_escalation = Some(true);
            },
            "(root)",
        ),
        (
            "a node of its choosing, tolerating every taint",
            |j| {
                spec(j).node_name = Some("kwok-node-0".into());
                spec(j).tolerations = Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]);
            },
            "(node)",
        ),
        // Each hardening setting of job.rs, one at a time.
        (
            "user 0 on the pod",
            |j| pod_security(j).run_as_user = Some(0),
            "(root)",
        ),
        (
            "runAsNonRoot false on the pod",
            |j| pod_security(j).run_as_non_root = Some(false),
            "(root)",
        ),
        (
            "no runAsNonRoot on the pod",
            |j| pod_security(j).run_as_non_root = None,
            "(root)",
        ),
        (
            "user 0 on the container",
            |j| security(j).run_as_user = Some(0),
            "(root)",
        ),
        (
            "runAsNonRoot false on the container",
            |j| security(j).run_as_non_root = Some(false),
            "(root)",
        ),
        (
            "group 0",
            |j| pod_security(j).run_as_group = Some(0),
            "(root)",
        ),
        (
            "fsGroup 0",
            |j| pod_security(j).fs_group = Some(0),
            "(root)",
        ),
        (
            "supplementary group 0",
            |j| pod_security(j).supplemental_groups = Some(vec![0]),
            "(root)",
        ),
        (
            "privilege escalation allowed",
            |j| security(j).allow_privilege_escalation = Some(true),
            "(privilege escalation)",
        ),
        (
            "privilege escalation left to the default",
            |j| security(j).allow_privilege_escalation = None,
            "(privilege escalation)",
        ),
        (
            "a writable root filesystem",
            |j| security(j).read_only_root_filesystem = Some(false),
            "(read-only root filesystem)",
        ),
        (
            "capabilities kept",
            |j| security(j).capabilities = None,
            "(capabilities)",
        ),
        (
            "no seccomp profile on the pod",
            |j| pod_security(j).seccomp_profile = None,
            "(seccomp)",
        ),
        (
            "an unconfined seccomp profile on the container",
            |j| {
                security(j).seccomp_profile = Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    ..Default::default()
                })
            },
            "(seccomp)",
        ),
        (
            "an SELinux type",
            |j| {
                security(j).se_linux_options = Some(SELinuxOptions {
                    type_: Some("spc_t".into()),
                    ..Default::default()
                })
            },
            "(security options)",
        ),
        (
            "an unconfined AppArmor profile",
            |j| {
                pod_security(j).app_armor_profile = Some(AppArmorProfile {
                    type_: "Unconfined".into(),
                    ..Default::default()
                })
            },
            "(security options)",
        ),
        (
            "a sysctl",
            |j| {
                pod_security(j).sysctls = Some(vec![Sysctl {
                    name: "net.ipv4.ip_unprivileged_port_start".into(),
                    value: "0".into(),
                }])
            },
            "(security options)",
        ),
        (
            "the host PID namespace",
            |j| spec(j).host_pid = Some(true),
            "(host)",
        ),
        (
            "the host IPC namespace",
            |j| spec(j).host_ipc = Some(true),
            "(host)",
        ),
        (
            "a host port",
            |j| {
                container(j).ports = Some(vec![ContainerPort {
                    container_port: 8080,
                    host_port: Some(8080),
                    ..Default::default()
                }])
            },
            "(host)",
        ),
        // Placement and scheduling the worker leaves to the cluster.
        (
            "a node name",
            |j| spec(j).node_name = Some("kwok-node-0".into()),
            "(node)",
        ),
        (
            "a toleration",
            |j| {
                spec(j).tolerations = Some(vec![Toleration {
                    key: Some("node-role.kubernetes.io/control-plane".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }])
            },
            "(node)",
        ),
        (
            "a node selector",
            |j| {
                spec(j).node_selector = Some(
                    [(
                        "kubernetes.io/hostname".to_owned(),
                        "kwok-node-0".to_owned(),
                    )]
                    .into(),
                )
            },
            "(node)",
        ),
        (
            "an affinity",
            |j| {
                spec(j).affinity = Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![NodeSelectorTerm {
                                match_fields: Some(vec![NodeSelectorRequirement {
                                    key: "metadata.name".into(),
                                    operator: "In".into(),
                                    values: Some(vec!["kwok-node-0".into()]),
                                }]),
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            "(node)",
        ),
        (
            "a topology spread",
            |j| {
                spec(j).topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "kubernetes.io/hostname".into(),
                    when_unsatisfiable: "DoNotSchedule".into(),
                    ..Default::default()
                }])
            },
            "(node)",
        ),
        (
            "another scheduler",
            |j| spec(j).scheduler_name = Some("my-scheduler".into()),
            "(node)",
        ),
        (
            "a priority class",
            |j| spec(j).priority_class_name = Some("system-node-critical".into()),
            "(priority class)",
        ),
        (
            "a runtime class",
            |j| spec(j).runtime_class_name = Some("runc-privileged".into()),
            "(runtime class)",
        ),
        (
            "host aliases",
            |j| {
                spec(j).host_aliases = Some(vec![HostAlias {
                    ip: "203.0.113.7".into(),
                    hostnames: Some(vec!["api.github.com".into()]),
                }])
            },
            "(host aliases)",
        ),
        (
            "a name server of its own",
            |j| {
                spec(j).dns_policy = Some("None".into());
                spec(j).dns_config = Some(PodDNSConfig {
                    nameservers: Some(vec!["203.0.113.53".into()]),
                    ..Default::default()
                });
            },
            "(dns)",
        ),
        (
            "a search domain of its own",
            |j| {
                spec(j).dns_config = Some(PodDNSConfig {
                    searches: Some(vec!["attacker.example".into()]),
                    ..Default::default()
                });
            },
            "(dns)",
        ),
        (
            "the node's resolver",
            |j| spec(j).dns_policy = Some("Default".into()),
            "(dns)",
        ),
        (
            "a pod priority",
            |j| spec(j).priority = Some(1_000_000_000),
            "(priority class)",
        ),
        (
            "an init container of another image",
            |j| {
                let mut init = container(j).clone();
                init.name = "init".into();
                init.image = Some("busybox:1.36".into());
                spec(j).init_containers = Some(vec![init]);
            },
            "(image)",
        ),
        (
            "an unmasked /proc",
            |j| {
                // The API server takes Unmasked only in a user namespace.
                spec(j).host_users = Some(false);
                security(j).proc_mount = Some("Unmasked".into());
            },
            "(security options)",
        ),
        // Resources within the ceiling of the policy's parameters.
        ("no limits", |j| resources(j).limits = None, "(resources)"),
        (
            "a CPU limit over the ceiling",
            |j| {
                resources(j)
                    .limits
                    .as_mut()
                    .unwrap()
                    .insert("cpu".into(), Quantity("64".into()));
            },
            "(resources)",
        ),
        (
            "a memory limit over the ceiling",
            |j| {
                resources(j)
                    .limits
                    .as_mut()
                    .unwrap()
                    .insert("memory".into(), Quantity("256Gi".into()));
            },
            "(resources)",
        ),
        (
            "a GPU",
            |j| {
                let r = resources(j);
                for list in [&mut r.requests, &mut r.limits] {
                    list.as_mut()
                        .unwrap()
                        .insert("nvidia.com/gpu".into(), Quantity("1".into()));
                }
            },
            "(resources)",
        ),
        (
            "an unbounded /tmp",
            |j| tmp(j).size_limit = None,
            "(emptyDir size)",
        ),
        (
            "a /tmp over the ceiling",
            |j| tmp(j).size_limit = Some(Quantity("1Ti".into())),
            "(emptyDir size)",
        ),
        (
            "many pods at once",
            |j| j.spec.as_mut().unwrap().parallelism = Some(100),
            "(one pod)",
        ),
        (
            "many completions",
            |j| j.spec.as_mut().unwrap().completions = Some(100),
            "(one pod)",
        ),
    ];
    // Every case is tried, so a failure lists all the shapes wrongly admitted at once.
    let mut wrong = Vec::new();
    for (what, change, rule) in cases {
        let mut job = worker::job::build(&item, &settings, "token-0");
        change(&mut job);
        match jobs.create(&dry, &job).await {
            Ok(_) => wrong.push(format!("a Job with {what} was admitted")),
            Err(denied) => {
                let message = denied.to_string();
                if !(message.contains("scorecard-fleet-scans") && message.contains(rule)) {
                    wrong.push(format!(
                        "{what}: the denial does not name rule {rule}: {message}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

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

    // A ConfigMap written before the policy grew a parameter: the denial says which ConfigMap
    // lacks what, not how a later rule failed to evaluate.
    ok(
        &kubectl(
            &[
                "patch",
                "configmap",
                "scorecard-scan-policy",
                "-n",
                &scans.name,
                "--type=json",
                "-p",
                r#"[{"op": "remove", "path": "/data/maxCpu"}]"#,
            ],
            None,
        ),
        "removing a parameter",
    );
    let job = worker::job::build(&item, &settings, "token-0");
    kube_support::eventually(
        "a denial naming the missing parameter",
        std::time::Duration::from_secs(30),
        || async {
            match jobs.create(&dry, &job).await {
                Ok(_) => Ok(None),
                Err(e) if e.to_string().contains("(parameters)") => Ok(Some(())),
                Err(e) => anyhow::bail!("denied, but not for the parameters: {e}"),
            }
        },
    )
    .await
    .unwrap();
}

/// The labels deploy/base/namespaces.yaml gives namespace `name`.
fn namespace_labels(name: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("deploy/base/namespaces.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| -> k8s_openapi::api::core::v1::Namespace {
            serde::Deserialize::deserialize(doc).unwrap()
        })
        .find(|ns| ns.metadata.name.as_deref() == Some(name))
        .and_then(|ns| ns.metadata.labels)
        .unwrap_or_else(|| panic!("namespaces.yaml labels namespace {name}"))
}

/// Beside the admission policy, Kubernetes' own Pod Security Admission holds the scans'
/// namespace to `restricted` (deploy/base/namespaces.yaml's labels, here without the policy):
/// it refuses a pod running as root and admits the pod of the Job the worker builds.
#[tokio::test]
async fn the_scans_namespace_enforces_restricted_pod_security() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let labels = namespace_labels("scorecard-scans");
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("restricted"),
            "{mode}"
        );
    }
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "psa-scans").await;
    let mut label = vec!["label", "namespace", ns.name.as_str(), "--overwrite"];
    let pairs: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    label.extend(pairs.iter().map(String::as_str));
    ok(&kubectl(&label, None), "labelling the namespace");
    let scan = root().join("deploy/base/scans/scan.yaml");
    ok(
        &kubectl(
            &["apply", "-n", &ns.name, "-f", scan.to_str().unwrap()],
            None,
        ),
        "the scan ServiceAccount",
    );

    let item = fleet_proto::v1::WorkItem {
        id: "0190a8f2-7c4b-7d4e-9a4b-1c2d3e4f5a6b".into(),
        repo: "github.com/ossf/scorecard".into(),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns.name);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod_of = |credential: &str, root: bool| {
        let template = worker::job::build(&item, &scan_settings(&ns.name), credential)
            .spec
            .unwrap()
            .template;
        let mut spec = template.spec.unwrap();
        if root {
            let sc = spec.containers[0].security_context.as_mut().unwrap();
            sc.run_as_user = Some(0);
            sc.run_as_non_root = Some(false);
            sc.allow_privilege_escalation = Some(true);
        }
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("scan-{}", credential.replace(':', "-"))),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    };
    for credential in ["token-0", "app:4242"] {
        pods.create(&dry, &pod_of(credential, false))
            .await
            .unwrap_or_else(|e| panic!("the worker's pod ({credential}) is restricted: {e}"));
    }
    let refused = pods
        .create(&dry, &pod_of("token-0", true))
        .await
        .expect_err("a root pod is refused by pod security");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted:"),
        "{refused}"
    );
}
