//! The scorecard stand-in of the local stack. KWOK runs no containers, so a "scan" is played
//! back: the pod's log becomes a recorded scorecard output, and the pod terminates with the
//! exit code scorecard would have given (see dev/kwok/stages.yaml).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, GroupVersionKind, LogParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};

/// The annotation KWOK's `pod-exit` stage waits for.
pub const EXIT_CODE_ANNOTATION: &str = "sim.scorecard-fleet.dev/exit-code";

/// Which stream a log line went to; Kubernetes merges both into the pod log.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Lines in the CRI log format KWOK reads: `<RFC 3339 nanos> <stream> F <line>`.
pub fn cri_log(lines: &[(Stream, &str)]) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut out = String::new();
    for (stream, line) in lines {
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        for part in line.split('\n') {
            out.push_str(&format!("{now} {stream} F {part}\n"));
        }
    }
    out
}

fn logs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs"),
        "logs",
    )
}

/// Plays a scan back on `pod`: its log becomes `lines`, then it exits with `exit_code`.
/// Returns once the log is served through the API server, so a reader never races KWOK.
pub async fn finish_pod(
    client: &Client,
    pod: &Pod,
    exit_code: i32,
    lines: &[(Stream, &str)],
) -> anyhow::Result<()> {
    let ns = pod.namespace().context("pod without namespace")?;
    let name = pod.name_any();
    let dir: PathBuf = crate::stack::stack_dir().join("sim-logs").join(&ns);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{name}.log"));
    std::fs::write(&file, cri_log(lines))?;

    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut logs = DynamicObject::new(&name, &logs_resource()).within(&ns);
    logs.data = serde_json::json!({
        "spec": {"logs": [{"containers": containers, "logsFile": file}]}
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &logs_resource())
        .create(&PostParams::default(), &logs)
        .await
        .context("registering the pod's log with KWOK")?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let container = containers.first().cloned();
    crate::kube_support::eventually("KWOK to serve the log", Duration::from_secs(30), || {
        let params = LogParams {
            container: container.clone(),
            limit_bytes: Some(1),
            ..Default::default()
        };
        let pods = pods.clone();
        let name = name.clone();
        async move { Ok(pods.logs(&name, &params).await.ok().map(|_| ())) }
    })
    .await?;

    let patch = serde_json::json!({
        "metadata": {"annotations": {EXIT_CODE_ANNOTATION: exit_code.to_string()}}
    });
    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("setting the exit code")?;
    Ok(())
}
