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
