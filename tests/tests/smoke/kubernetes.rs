use std::time::Duration;

use anyhow::Context as _;
use fleet_proto::scorecard::{RunInfo, parse_result};
use fleet_tests::fixtures;
use fleet_tests::kube_support::{self, TestNamespace, eventually, running_pod_of_job};
use fleet_tests::sim::{self, Stream};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, ServiceAccount};
use kube::Client;
use kube::api::{Api, ListParams, LogParams, ObjectMeta, PostParams};

fn job(name: &str) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "scorecard".into(),
                        image: Some("ghcr.io/ossf/scorecard:v5.3.0".into()),
                        args: Some(vec!["--repo=github.com/ossf/scorecard".into()]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn job_condition(jobs: &Api<Job>, name: &str) -> anyhow::Result<String> {
    eventually(
        &format!("job {name} to finish"),
        Duration::from_secs(60),
        || async move {
            let job = jobs.get(name).await.context("get job")?;
            let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .into_iter()
                .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
                .map(|c| c.type_))
        },
    )
    .await
}

async fn run_job(
    client: &Client,
    ns: &str,
    name: &str,
    exit: i32,
    lines: &[(Stream, &str)],
) -> (String, Pod) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &job(name))
        .await
        .unwrap();
    let pod = running_pod_of_job(&pods, name).await.unwrap();
    sim::finish_pod(client, &pod, exit, lines).await.unwrap();
    let condition = job_condition(&jobs, name).await.unwrap();
    (condition, pod)
}

#[tokio::test]
async fn job_completes_and_its_pod_log_is_a_recorded_scorecard_output() {
    let client = kube_support::admin().await;
    let ns = TestNamespace::create(&client, "smoke-job").await;
    let (file, output) = fixtures::scorecard_outputs().remove(0);
    let lines = [
        (Stream::Stderr, "Starting [Binary-Artifacts]"),
        (Stream::Stdout, output.as_str()),
        (Stream::Stderr, "Finished [Binary-Artifacts]"),
    ];
    let (condition, pod) = run_job(&client, &ns.name, "sc-complete", 0, &lines).await;
    assert_eq!(
        condition, "Complete",
        "the real Job controller saw the pod succeed"
    );

    // Read back through the API server (which proxies to KWOK's kubelet endpoint).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let listed = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=sc-complete"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let log = pods
        .logs(&pod.metadata.name.clone().unwrap(), &LogParams::default())
        .await
        .unwrap();
    assert!(log.starts_with("Starting [Binary-Artifacts]\n"), "{log}");
    let json_line = log
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let result = parse_result(json_line, &RunInfo::default()).unwrap();
    assert_eq!(
        result.raw_json, output,
        "{file} survives the round trip byte for byte"
    );
    assert!(!result.checks.is_empty());
}

#[tokio::test]
async fn job_whose_pod_exits_1_is_failed() {
    let client = kube_support::admin().await;
    let ns = TestNamespace::create(&client, "smoke-fail").await;
    let lines = [(Stream::Stderr, "Error: check runtime error")];
    let (condition, _) = run_job(&client, &ns.name, "sc-fail", 1, &lines).await;
    assert_eq!(
        condition, "Failed",
        "backoffLimit 0: one failed pod fails the Job"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let status = jobs.get("sc-fail").await.unwrap().status.unwrap();
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.succeeded.unwrap_or(0), 0);
}

#[tokio::test]
async fn service_account_without_a_role_is_denied_by_rbac() {
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "smoke-rbac").await;
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let token = kube_support::service_account_token(&admin, &ns.name, "nobody")
        .await
        .unwrap();
    let nobody = kube_support::as_service_account(token).await;

    // Admin can list (so the denial below is RBAC, not a broken request).
    Api::<Job>::namespaced(admin.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    for result in [
        Api::<Job>::namespaced(nobody.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        Api::<Job>::namespaced(nobody.clone(), &ns.name)
            .create(&PostParams::default(), &job("sc-denied"))
            .await
            .map(|_| ()),
        Api::<Pod>::namespaced(nobody.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }
    }
}
