//! Deployment (issue 14): the runtime image installs every shared library the binary links (and CA certificates),
//! runs as a non-root user with a stripped binary and a HEALTHCHECK, and the Kubernetes example's pipeline
//! config loads and its probes point at Ferry's endpoints.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Packages every Debian image has (bookworm-slim included).
const BASE: [&str; 2] = ["libc6", "libgcc-s1"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Debian package that ships `path` on this machine.
fn package_of(path: &str) -> String {
    let real = std::fs::canonicalize(path).expect("a library ldd names exists");
    for candidate in [
        path.to_owned(),
        real.display().to_string(),
        real.display().to_string().replacen("/usr/lib/", "/lib/", 1),
    ] {
        let out = Command::new("dpkg")
            .args(["-S", &candidate])
            .output()
            .expect("dpkg");
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let package = text.split(':').next().unwrap_or("").trim();
            return package.to_owned();
        }
    }
    panic!("no Debian package ships {path}");
}

#[test]
fn the_runtime_image_installs_what_the_binary_links_and_runs_unprivileged() {
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .output()
        .expect("ldd");
    assert!(ldd.status.success());
    let text = String::from_utf8_lossy(&ldd.stdout);
    let libraries: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .collect();
    assert!(libraries.iter().any(|l| l.contains("libssl")), "{text}");
    let needed: BTreeSet<String> = libraries.iter().map(|l| package_of(l)).collect();

    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let runtime = dockerfile
        .split("FROM debian:bookworm-slim")
        .nth(1)
        .expect("a debian:bookworm-slim runtime stage");
    let declared: BTreeSet<String> = runtime
        .lines()
        .find_map(|l| l.strip_prefix("# runtime-packages:"))
        .expect("a '# runtime-packages:' line")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for package in &declared {
        assert!(
            runtime.contains(&format!(" {package}")) && runtime.contains("apt-get install"),
            "{package} is declared but not installed"
        );
    }
    for package in needed.iter().filter(|p| !BASE.contains(&p.as_str())) {
        assert!(
            declared.contains(package),
            "the binary links a library of {package}, which the runtime image does not install ({declared:?})"
        );
    }
    assert!(
        declared.contains("ca-certificates"),
        "no CA certificates for https / TLS"
    );
    assert!(
        runtime.contains("\nUSER ")
            && !runtime.contains("\nUSER root")
            && !runtime.contains("\nUSER 0")
    );
    assert!(runtime.contains("HEALTHCHECK") && runtime.contains("/healthz"));
    assert!(dockerfile.contains("strip target/release/ferry"));
}

#[test]
fn the_kubernetes_example_loads_and_probes_ferrys_endpoints() {
    let manifest =
        std::fs::read_to_string(root().join("examples/kubernetes/ferry-sidecar.yaml")).unwrap();
    for needed in [
        "kind: ConfigMap",
        "kind: Deployment",
        "path: /healthz",
        "path: /readyz",
        "secretKeyRef",
        "runAsNonRoot: true",
        "containerPort: 9187",
        "value: \"0.0.0.0:9187\"",
    ] {
        assert!(manifest.contains(needed), "{needed} missing");
    }
    // The pipeline config inside the ConfigMap, as Ferry will read it (its ${VAR}s from the Secret).
    let block = manifest
        .split("pipeline.toml: |\n")
        .nth(1)
        .expect("a pipeline.toml entry");
    let config: String = block
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let loaded = ferry_config::load_str(Path::new("/etc/ferry/pipeline.toml"), &config, &|var| {
        (var.ends_with("_PASSWORD")).then(|| "secret".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(loaded.name, "orders");
    assert!(loaded.alerts.readyz);
}
