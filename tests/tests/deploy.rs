//! deploy/ on the stack's real API server: every overlay passes a server-side dry run, and
//! RBAC grants each ServiceAccount exactly what it needs.

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
    // Namespaced objects are checked against a namespace that exists.
    let _ = kubectl(&["create", "namespace", "scorecard-fleet"], None);
    for overlay in ["base", "overlays/dev", "overlays/keda"] {
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

/// `kubectl auth can-i` as the ServiceAccount, in the namespace deploy/'s RBAC was applied to.
fn can(ns: &str, sa: &str, verb: &str, resource: &str, extra: &[&str]) -> bool {
    let who = format!("system:serviceaccount:{ns}:{sa}");
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

#[tokio::test]
async fn service_accounts_can_do_exactly_what_they_need() {
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "rbac").await;
    let base = root().join("deploy/base");
    for file in ["worker-rbac.yaml", "serviceaccounts.yaml"] {
        let path = base.join(file);
        ok(
            &kubectl(
                &["apply", "-n", &ns.name, "-f", path.to_str().unwrap()],
                None,
            ),
            file,
        );
    }
    let worker = "scorecard-fleet-worker";
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
    ];
    for (verb, resource, extra) in allowed {
        assert!(
            can(&ns.name, worker, verb, resource, extra),
            "worker must be able to {verb} {resource} {extra:?}"
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
        ("create", "pods", &["--subresource=exec"]),
        ("create", "deployments.apps", &[]),
        ("create", "rolebindings.rbac.authorization.k8s.io", &[]),
        ("list", "jobs.batch", &["--all-namespaces"]),
        ("list", "nodes", &[]),
        ("list", "namespaces", &[]),
    ];
    for (verb, resource, extra) in denied {
        assert!(
            !can(&ns.name, worker, verb, resource, extra),
            "worker must not {verb} {resource} {extra:?}"
        );
    }
    for sa in [
        "scorecard-scan",
        "scorecard-fleet-producer",
        "scorecard-fleet-sink",
    ] {
        for (verb, resource, extra) in allowed.iter().chain(denied) {
            assert!(
                !can(&ns.name, sa, verb, resource, extra),
                "{sa} must not {verb} {resource} {extra:?}"
            );
        }
    }
}
