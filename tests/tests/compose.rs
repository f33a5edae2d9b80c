//! Static checks of the Docker path CI cannot run (no Docker engine here): docker-compose.yml,
//! the Dockerfile and deploy/ agree with each other and with the binaries' real flags.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fleet_tests::stack;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// Every environment variable a binary (or its subcommand) reads, from its own `--help`.
fn env_vars(binary: &str, subcommand: Option<&str>) -> BTreeSet<String> {
    let mut cmd = Command::new(stack::workspace_binary(binary));
    if let Some(sub) = subcommand {
        cmd.arg(sub);
    }
    let out = cmd.arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{binary} --help");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_sets_only_real_flags_and_agrees_with_the_image() {
    let compose = &yaml_docs(&root().join("docker-compose.yml"))[0];
    let services = compose["services"].as_mapping().expect("services");
    let mut seen = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if !["producer", "worker", "sink", "api"].contains(&name) {
            continue;
        }
        seen.insert(name.to_owned());
        let command = str_list(&service["command"]);
        assert_eq!(
            command[0],
            format!("/usr/local/bin/{name}"),
            "{name}: the image's binary"
        );
        let flags = env_vars(name, command.get(1).map(String::as_str));
        let env = service["environment"].as_mapping().expect("environment");
        assert!(!env.is_empty());
        for key in env.keys() {
            let key = key.as_str().unwrap();
            assert!(
                flags.contains(key),
                "compose sets {key} for {name}, which is no flag of it: {flags:?}"
            );
        }
        assert_eq!(
            env["HTTP_ADDR"].as_str(),
            Some("0.0.0.0:9090"),
            "{name} serves on the port deploy/ probes"
        );
    }
    assert_eq!(seen.len(), 4, "compose runs producer, worker, sink and api");

    // The same NATS and PostgreSQL images as deploy/'s dev overlay.
    let dev: Vec<Value> = ["nats.yaml", "postgres.yaml"]
        .iter()
        .flat_map(|f| yaml_docs(&root().join("deploy/overlays/dev").join(f)))
        .collect();
    for svc in ["nats", "postgres"] {
        let image = services[svc]["image"].as_str().unwrap();
        let in_dev = dev.iter().any(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"].as_str() == Some(image)
        });
        assert!(
            in_dev,
            "compose's {svc} image {image} differs from deploy/overlays/dev"
        );
    }
}

#[test]
fn dockerfile_and_deploy_agree_on_binaries_ports_and_config() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 9090"));
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "the image runs as non-root"
    );
    let base = root().join("deploy/base/fleet");
    let config = &yaml_docs(&base.join("config.yaml"))[0]["data"];
    let mut all_flags = BTreeSet::new();
    for (bin, sub) in [
        ("producer", Some("run")),
        ("worker", None),
        ("sink", Some("run")),
        ("api", Some("run")),
    ] {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "the image builds {bin}"
        );
        let flags = env_vars(bin, sub);
        all_flags.extend(flags.iter().cloned());
        let deployment = &yaml_docs(&base.join(format!("{bin}.yaml")))[0];
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"].as_str(),
            Some(
                format!(
                    "ghcr.io/scorecard-fleet/scorecard-fleet:{}",
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            ),
            "{bin} runs the release's version tag, never :latest"
        );
        assert_eq!(
            str_list(&container["command"]),
            [format!("/usr/local/bin/{bin}")]
        );
        assert_eq!(
            str_list(&container["args"]).first().map(String::as_str),
            sub
        );
        assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9090));
        for env in container["env"].as_sequence().into_iter().flatten() {
            let key = env["name"].as_str().unwrap();
            assert!(
                flags.contains(key),
                "deploy/ sets {key} for {bin}, which is no flag of it"
            );
        }
    }
    for key in config.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            all_flags.contains(key),
            "ConfigMap key {key} is no flag of any binary"
        );
    }
}

/// The export's CronJob runs the image's export binary with only its real flags, and the api
/// serves the volume the export writes.
#[test]
fn the_export_cronjob_runs_the_export_and_the_api_serves_its_volume() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("target/release/export"),
        "the image builds export"
    );
    let base = root().join("deploy/base/fleet");
    let docs = yaml_docs(&base.join("export.yaml"));
    let cron = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("CronJob"))
        .expect("the export CronJob");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(str_list(&container["command"]), ["/usr/local/bin/export"]);
    assert_eq!(str_list(&container["args"]), ["run"]);
    let flags = env_vars("export", Some("run"));
    let mut to = None;
    for env in container["env"].as_sequence().into_iter().flatten() {
        let key = env["name"].as_str().unwrap();
        assert!(
            flags.contains(key),
            "deploy/ sets {key} for export, which is no flag of it"
        );
        if key == "EXPORT_TO" {
            to = env["value"].as_str();
        }
    }
    let api = &yaml_docs(&base.join("api.yaml"))[0]["spec"]["template"]["spec"]["containers"][0];
    let served = api["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some("EXPORT_DIR"))
        .and_then(|e| e["value"].as_str());
    assert!(to.is_some());
    assert_eq!(served, to, "the api serves the directory the export writes");
    let mounted = |c: &Value, path: &str| {
        c["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"].as_str() == Some(path))
    };
    assert!(mounted(container, to.unwrap()) && mounted(api, to.unwrap()));
}

/// The worker's scan settings in deploy/ and the admission policy's parameters are one set of
/// values: a drift would have every Job denied.
#[test]
fn the_worker_config_and_the_policy_parameters_agree() {
    let config = &yaml_docs(&root().join("deploy/base/fleet/config.yaml"))[0]["data"];
    let params = yaml_docs(&root().join("deploy/base/scans/scan.yaml"))
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("scorecard-scan-policy"))
        .expect("the policy parameters");
    let params = &params["data"];
    for (key, param) in [
        ("SCORECARD_IMAGE", "image"),
        ("SCAN_SERVICE_ACCOUNT", "serviceAccount"),
        ("TOKEN_SECRET", "tokenSecret"),
        ("GITHUB_APP_SECRET", "appSecret"),
    ] {
        assert_eq!(
            config[key].as_str(),
            params[param].as_str(),
            "{key} and the policy's {param}"
        );
    }
    let deadline: i64 = config["JOB_DEADLINE_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cap: i64 = params["maxDeadlineSeconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline <= cap,
        "JOB_DEADLINE_SECS {deadline} over the cap {cap}"
    );
    assert_eq!(config["WORKER_NAMESPACE"].as_str(), Some("scorecard-scans"));
    let help = std::process::Command::new(fleet_tests::stack::workspace_binary("worker"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("[default: scorecard-scans]"),
        "the worker's WORKER_NAMESPACE default is deploy/'s scans namespace"
    );
}
