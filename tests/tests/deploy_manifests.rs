//! Deployment files stay valid: Kubernetes manifests against the API schemas
//! (kubernetes-validate, strict), every embedded or shipped configuration file accepted by the
//! binaries' own configuration loader.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sonde_tests::binary;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            "1.30.0",
        ])
        .args(files)
        .output()
        .expect("python3 -m kubernetes_validate (installed by cargo xtask setup)")
}

#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let files = manifests();
    assert!(files.len() >= 7, "{files:?}");
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator rejects a misspelt field (guards against a check that accepts anything).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(deploy().join("kubernetes/agent-daemonset.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostPID:", "hostPid:")).unwrap();
    assert!(!validate(&[bad]).status.success());
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization =
        std::fs::read_to_string(deploy().join("kubernetes/kustomization.yaml")).unwrap();
    for file in manifests() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(&format!("- {name}")),
            "{name} missing"
        );
    }
}

/// The `data` entries of the ConfigMaps in a manifest, via Python's YAML parser.
fn config_map_entries(file: &Path) -> Vec<(String, String)> {
    let script = "import json,sys,yaml\n\
        out=[]\n\
        for d in yaml.safe_load_all(open(sys.argv[1])):\n\
        \x20   if d and d.get('kind')=='ConfigMap':\n\
        \x20       out += sorted(d.get('data',{}).items())\n\
        print(json.dumps(out))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn accepts(binary_name: &str, print: &[&str], config: &Path) {
    let out = Command::new(binary(binary_name))
        .env_remove("RUST_BACKTRACE")
        .arg("--config")
        .arg(config)
        .args(print)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{binary_name} refused {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_configurations_are_accepted_by_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (manifest, binary_name, print) in [
        ("agent-config.yaml", "sonde-agent", &["--print-config"][..]),
        (
            "aggregator-config.yaml",
            "sonde-aggregator",
            &["print-config"][..],
        ),
    ] {
        for (key, text) in config_map_entries(&deploy().join("kubernetes").join(manifest)) {
            if !key.ends_with(".toml") {
                continue;
            }
            let path = dir.path().join(&key);
            std::fs::write(&path, text).unwrap();
            accepts(binary_name, print, &path);
            checked += 1;
        }
    }
    accepts(
        "sonde-agent",
        &["--print-config"],
        &deploy().join("etc/agent.toml"),
    );
    accepts(
        "sonde-aggregator",
        &["print-config"],
        &deploy().join("etc/aggregator.toml"),
    );
    assert_eq!(checked, 2);
}
