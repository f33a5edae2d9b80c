//! Kubernetes clients for tests and the small waits they need.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client with the stack's admin credentials.
pub async fn admin() -> Client {
    let path = crate::stack::kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e} (is the stack up?)", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    fleet_runtime::tls::install_crypto_provider();
    Client::try_from(config).expect("kube client")
}

/// A client that authenticates as a ServiceAccount (a bearer token), not as admin.
pub async fn as_service_account(token: String) -> Client {
    as_service_account_via(token, None).await
}

/// The API server's address, as the stack's kubeconfig names it.
pub fn apiserver_addr() -> std::net::SocketAddr {
    let kubeconfig = Kubeconfig::read_from(crate::stack::kubeconfig()).expect("kubeconfig");
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("a server URL");
    let authority = server.trim_start_matches("https://").trim_end_matches('/');
    authority.parse().expect("host:port of the API server")
}

/// As [`as_service_account`], reaching the API server through `via` (a proxy) if given.
pub async fn as_service_account_via(token: String, via: Option<std::net::SocketAddr>) -> Client {
    let path = crate::stack::kubeconfig();
    let mut kubeconfig = Kubeconfig::read_from(&path).expect("kubeconfig");
    if let Some(via) = via {
        for cluster in &mut kubeconfig.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(format!("https://{via}"));
            }
        }
    }
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.client_certificate = None;
            auth.client_key = None;
            auth.token = Some(token.clone().into());
        }
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    fleet_runtime::tls::install_crypto_provider();
    Client::try_from(config).expect("kube client")
}

/// A fresh namespace, deleted (with everything in it) when the guard drops.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = crate::stack::unique(prefix);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronously handed to kubectl: a task spawned here could die with the test's
        // runtime. The namespace controller removes the rest in the background.
        let _ = std::process::Command::new(crate::stack::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(crate::stack::kubeconfig())
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// Polls `check` every 100 ms until it yields a value, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_err {
                Some(e) => return Err(e.context(format!("timed out waiting for {what}"))),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one pod of a Job, once it exists and is Running.
pub async fn running_pod_of_job(pods: &Api<Pod>, job: &str) -> anyhow::Result<Pod> {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    eventually(
        &format!("a running pod of job {job}"),
        Duration::from_secs(60),
        || {
            let lp = ListParams::default().labels(&selector);
            async move {
                let list = pods.list(&lp).await.context("list pods")?;
                Ok(list.items.into_iter().find(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                }))
            }
        },
    )
    .await
}

/// A short-lived token for a ServiceAccount (the TokenRequest API, as a pod would get).
pub async fn service_account_token(client: &Client, ns: &str, sa: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for {ns}/{sa}"))?;
    issued
        .status
        .and_then(|s| s.token)
        .context("token request without a token")
}

/// Writes a kubeconfig that authenticates with `token` (a ServiceAccount's), for a process.
pub fn write_token_kubeconfig(token: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let mut kubeconfig = Kubeconfig::read_from(crate::stack::kubeconfig())?;
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.client_certificate = None;
            auth.client_key = None;
            auth.token = Some(token.to_owned().into());
        }
    }
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig)?)?;
    Ok(())
}

/// Writes the stack's (admin) kubeconfig with its server replaced by `via`, a proxy.
pub fn write_kubeconfig_via(
    via: std::net::SocketAddr,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut kubeconfig = Kubeconfig::read_from(crate::stack::kubeconfig())?;
    for cluster in &mut kubeconfig.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(format!("https://{via}"));
        }
    }
    std::fs::write(path, serde_yaml_ng::to_string(&kubeconfig)?)?;
    Ok(())
}

fn deploy_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/base")
        .join(path)
}

/// `kubectl` with the stack's admin kubeconfig; panics with its stderr on failure.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(crate::stack::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(crate::stack::kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The label that puts a namespace under the scans' admission policy.
pub const SCANS_LABEL: &str = "scorecard-fleet/scans=true";

/// Makes `scans` a scans namespace as deploy/ makes `scorecard-scans`: the scan ServiceAccount,
/// the policy's parameters, the worker's Role bound to the worker ServiceAccount of `fleet`
/// (created there), the admission policy (cluster-wide, from deploy/base/scan-policy.yaml) and
/// the label it selects by. Returns once the policy is enforced in `scans`.
pub async fn install_scans(scans: &str, fleet: &str) {
    let accounts = std::fs::read_to_string(deploy_file("fleet/serviceaccounts.yaml")).unwrap();
    kubectl(&["apply", "-n", fleet, "-f", "-"], Some(&accounts));
    let role = std::fs::read_to_string(deploy_file("scans/worker-role.yaml"))
        .unwrap()
        .replace("namespace: scorecard-fleet", &format!("namespace: {fleet}"));
    let scan = std::fs::read_to_string(deploy_file("scans/scan.yaml")).unwrap();
    kubectl(
        &["apply", "-n", scans, "-f", "-"],
        Some(&format!("{scan}\n---\n{role}")),
    );
    let policy = deploy_file("scan-policy.yaml");
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "fleet-tests",
            "-f",
            policy.to_str().unwrap(),
        ],
        None,
    );
    kubectl(
        &["label", "namespace", scans, SCANS_LABEL, "--overwrite"],
        None,
    );
    // The API server starts enforcing a new policy or binding within a second or so.
    let probe = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: policy-probe, namespace: {scans}}}\n\
         spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: x, image: busybox}}]\n"
    );
    eventually(
        "the scans' admission policy to be enforced",
        Duration::from_secs(60),
        || {
            let probe = probe.clone();
            async move {
                let out = std::process::Command::new(crate::stack::tool("kubectl"))
                    .arg("--kubeconfig")
                    .arg(crate::stack::kubeconfig())
                    .args(["create", "--dry-run=server", "-f", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        use std::io::Write as _;
                        child.stdin.take().unwrap().write_all(probe.as_bytes())?;
                        child.wait_with_output()
                    })?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                Ok(
                    (!out.status.success() && stderr.contains("scorecard-fleet-scans"))
                        .then_some(()),
                )
            }
        },
    )
    .await
    .unwrap();
}

/// The Job settings the tests' scans run with in `ns`, as deploy/ names its Secrets and the
/// scan ServiceAccount.
pub fn scan_job_settings(ns: &str, deadline_secs: i64) -> worker::job::JobSettings {
    worker::job::JobSettings {
        namespace: ns.into(),
        image: "ghcr.io/ossf/scorecard:v5.3.0".into(),
        service_account: "scorecard-scan".into(),
        token_secret: "scorecard-github-tokens".into(),
        app_secret: "scorecard-github-app".into(),
        active_deadline_secs: deadline_secs,
        ttl_after_finished_secs: 600,
        cpu_request: "100m".into(),
        cpu_limit: "1".into(),
        memory_request: "64Mi".into(),
        memory_limit: "1Gi".into(),
        tmp_size_limit: "1Gi".into(),
        checks: Vec::new(),
    }
}
