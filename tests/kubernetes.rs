//! `deploy/k8s/`: both overlays render with kubectl's kustomize, every object validates
//! against the Kubernetes 1.31 schemas (kubernetes-validate, strict), a static policy
//! check (checkov) fails nothing, and what a rollout relies on is there: probes, the
//! shutdown delay inside the termination grace period, the routes ConfigMap mounted as a
//! directory and watched, secrets as files, names the gateway actually reads.
//!
//! The tools: `kubectl` on the machine; kubernetes-validate and checkov in
//! `target/k8s-venv` (scripts/setup.sh --test).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: [&str; 2] = ["dev", "prod"];

fn venv_tool(name: &str) -> PathBuf {
    let path = Path::new(ROOT).join("target/k8s-venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/setup.sh --test (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `kubectl kustomize DIR`, as text.
fn render(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is not installed (with it, its kustomize)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

fn overlay(name: &str) -> String {
    render(&Path::new(ROOT).join("deploy/k8s/overlays").join(name))
}

/// prod with the optional TLS component, as an operator would compose it.
fn prod_with_tls() -> String {
    // kustomize takes relative paths only: a directory two levels under the checkout.
    let dir = Path::new(ROOT)
        .join("target/k8s-test")
        .join(format!("prod-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../../../deploy/k8s/overlays/prod\n\
         components:\n  - ../../../deploy/k8s/components/tls\n",
    )
    .unwrap();
    let text = render(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    text
}

fn objects(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = support::temp_path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// kubernetes-validate, strict, against 1.31: (passed, what it printed).
fn validate(path: &Path) -> (bool, String) {
    let out = Command::new(venv_tool("kubernetes-validate"))
        .args(["--kubernetes-version", "1.31.0", "--strict", "--quiet"])
        .arg(path)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn both_overlays_render_and_every_object_validates_against_kubernetes_1_31() {
    for (name, text) in [
        ("dev", overlay("dev")),
        ("prod", overlay("prod")),
        ("prod+tls", prod_with_tls()),
    ] {
        let kinds: Vec<String> = objects(&text)
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or("?").to_owned())
            .collect();
        assert!(kinds.len() >= 6, "{name}: only {kinds:?}");
        let (ok, out) = validate(&write_temp(&format!("{name}.yaml"), &text));
        assert!(ok, "{name} does not validate:\n{out}");
    }
    // The validator is strict: a field the schema does not have is refused.
    let mut bad = objects(&overlay("prod"));
    let deployment = bad.iter_mut().find(|o| o["kind"] == "Deployment").unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        .as_mapping_mut()
        .unwrap()
        .insert("pathh".into(), "/readyz".into());
    let text = serde_yaml_ng::to_string(deployment).unwrap();
    let (ok, out) = validate(&write_temp("bad.yaml", &text));
    assert!(!ok, "an unknown field passed:\n{out}");
}

#[test]
fn the_static_policy_check_fails_nothing() {
    let dir = support::temp_path("k8s-checkov");
    std::fs::create_dir_all(&dir).unwrap();
    for name in OVERLAYS {
        std::fs::write(dir.join(format!("{name}.yaml")), overlay(name)).unwrap();
    }
    std::fs::write(dir.join("prod-tls.yaml"), prod_with_tls()).unwrap();
    let out = Command::new(venv_tool("checkov"))
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--directory",
        ])
        .arg(&dir)
        // Offline: no guideline mappings from the vendor's API.
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("run checkov");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov's report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let results = &report["results"];
    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} {} ({})", c["check_id"], c["check_name"], c["resource"]))
                .collect()
        })
        .unwrap_or_default();
    assert!(failed.is_empty(), "checkov: {failed:#?}");
    let passed = results["passed_checks"].as_array().map_or(0, Vec::len);
    assert!(
        passed > 100,
        "checkov passed only {passed} checks: {report}"
    );
    // What is skipped is skipped on purpose, with its reason in the manifests.
    let skipped: BTreeSet<String> = results["skipped_checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["check_id"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let allowed: BTreeSet<String> = ["CKV_K8S_43", "CKV_K8S_15"].map(String::from).into();
    assert!(skipped.is_subset(&allowed), "skipped: {skipped:?}");
}

/// Every environment variable the gateway reads: what `Settings::resolve` asks for under
/// a few shapes of environment, plus the logger's and the TLS roots'.
fn names_the_gateway_reads() -> BTreeSet<String> {
    let asked = std::sync::Mutex::new(BTreeSet::new());
    let record = |given: &[(&str, &str)]| {
        let _ = beat_gateway::settings::Settings::resolve(None, |k| {
            asked.lock().unwrap().insert(k.to_owned());
            given
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        });
    };
    record(&[]);
    record(&[
        ("PROXY_TLS_CERT", "/x.pem"),
        ("PROXY_TLS_KEY", "/x.key"),
        ("JWKS_URL", "http://auth-service:2000/.well-known/jwks.json"),
        ("JWT_ISSUER", "i"),
        ("JWT_AUDIENCE", "a"),
        ("CORS_ORIGINS", "https://app.example"),
        ("ADMIN_HOST", "0.0.0.0"),
        ("ADMIN_TOKEN", "a-long-enough-token"),
    ]);
    let mut names = asked.into_inner().unwrap();
    for extra in ["RUST_LOG", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
        names.insert(extra.to_owned());
    }
    names
}

/// The environment a container gets: its `env` names and its env ConfigMaps' keys.
fn env_names(objects: &[Value], container: &Value) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("env from ConfigMaps only (secrets are files)");
        let map = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("envFrom names {name}, which is not rendered"));
        for key in map["data"].as_mapping().unwrap().keys() {
            names.insert(key.as_str().unwrap().to_owned());
        }
    }
    names
}

fn env_value<'a>(objects: &'a [Value], container: &Value, name: &str) -> Option<&'a str> {
    let map_name = container["envFrom"][0]["configMapRef"]["name"].as_str()?;
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == map_name)?["data"][name]
        .as_str()
}

#[test]
fn every_environment_name_in_the_manifests_and_compose_is_one_the_gateway_reads() {
    let reads = names_the_gateway_reads();
    assert!(
        reads.contains("PROXY_SHUTDOWN_DELAY_SECONDS") && reads.contains("ADMIN_TOKEN_FILE"),
        "{reads:?}"
    );
    for name in OVERLAYS {
        let objects = objects(&overlay(name));
        let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let unknown: Vec<_> = env_names(&objects, container)
            .into_iter()
            .filter(|n| !reads.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{name}: the gateway never reads {unknown:?}"
        );
    }
    let compose: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let unknown: Vec<_> = compose["services"]["proxy"]["environment"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .filter(|n| !reads.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "compose: the gateway never reads {unknown:?}"
    );
}

#[test]
fn the_routes_configmap_passes_check() {
    for name in OVERLAYS {
        let objects = objects(&overlay(name));
        let routes = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "beat-gateway-routes")
            .expect("the routes ConfigMap");
        let json = routes["data"]["services.json"]
            .as_str()
            .expect("services.json");
        let path = write_temp("services.json", json);
        let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The platform's services by their Service names, as compose names them.
        for host in ["auth-service", "core-service", "messaging-service"] {
            assert!(json.contains(&format!("\"host\": \"{host}\"")), "{host}");
        }
    }
}

#[test]
fn the_deployment_rolls_without_dropping_anything() {
    for name in OVERLAYS {
        let objects = objects(&overlay(name));
        let deployment = find(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let env = |n: &str| env_value(&objects, c, n);

        // Probes on the admin port, without credentials.
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert!(c["startupProbe"]["httpGet"]["path"].is_string(), "{name}");
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "admin", "{name} {probe}");
            assert!(
                c[probe]["httpGet"]["httpHeaders"].is_null(),
                "{name} {probe}"
            );
        }
        assert_eq!(env("ADMIN_HOST"), Some("0.0.0.0"));
        assert_eq!(env("ADMIN_PORT"), Some("9091"));
        let ports: Vec<(&str, u64)> = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(ports.contains(&("http", 9000)) && ports.contains(&("admin", 9091)));

        // SIGTERM: delay, then grace, then 2 s for the runtimes, all before SIGKILL.
        let secs = |n: &str| env(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        assert!(secs("PROXY_SHUTDOWN_DELAY_SECONDS") >= 5, "{name}");
        let needed = secs("PROXY_SHUTDOWN_DELAY_SECONDS") + secs("PROXY_GRACE_SECONDS") + 2;
        let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            termination > needed,
            "{name}: {termination} s <= {needed} s"
        );
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            0
        );

        // The routes: a ConfigMap mounted as a directory (no subPath: edits arrive),
        // read from there with --watch.
        let args: Vec<&str> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(args.contains(&"--watch"), "{args:?}");
        let services = args[args.iter().position(|a| *a == "--services").unwrap() + 1];
        let mount = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| services.starts_with(m["mountPath"].as_str().unwrap()))
            .expect("services.json on a mount");
        assert!(mount["subPath"].is_null(), "a subPath mount never updates");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["configMap"]["name"], "beat-gateway-routes");

        // Hardening.
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        assert!(
            pod["topologySpreadConstraints"]
                .as_sequence()
                .is_some_and(|t| !t.is_empty())
        );
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9091");

        // Secrets: files from a Secret object, never a literal in the manifests.
        assert!(
            objects.iter().all(|o| o["kind"] != "Secret"),
            "{name}: a Secret with data"
        );
        let secret_volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "beat-gateway")
            .expect("the Secret as a volume");
        let token_file = env("ADMIN_TOKEN_FILE").expect("ADMIN_TOKEN_FILE");
        let secret_mount = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == secret_volume["name"])
            .unwrap();
        assert!(token_file.starts_with(secret_mount["mountPath"].as_str().unwrap()));
        for var in c["env"].as_sequence().into_iter().flatten() {
            let n = var["name"].as_str().unwrap();
            assert!(
                !(n.contains("TOKEN") || n.contains("REDIS_URL")) || n.ends_with("_FILE"),
                "{name}: {n} given as a value"
            );
        }

        match name {
            "prod" => {
                assert_eq!(deployment["spec"]["replicas"], 3);
                let hpa = find(&objects, "HorizontalPodAutoscaler");
                assert_eq!(hpa["apiVersion"], "autoscaling/v2");
                assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 3);
                assert!(
                    find(&objects, "PodDisruptionBudget")["spec"]["minAvailable"].as_u64()
                        >= Some(2)
                );
                assert_eq!(env("LOG_FORMAT"), Some("json"));
                assert!(env("RATE_LIMIT_REDIS_URL_FILE").is_some(), "shared limits");
            }
            _ => {
                assert_eq!(deployment["spec"]["replicas"], 1);
                assert_eq!(env("RUST_LOG"), Some("debug"));
            }
        }
    }
    let base = objects(&render(&Path::new(ROOT).join("deploy/k8s/base")));
    let hpa = find(&base, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
}

#[test]
fn the_admin_port_is_open_to_prometheus_only() {
    let objects = objects(&overlay("prod"));
    let policy = find(&objects, "NetworkPolicy");
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    for rule in rules {
        let ports: Vec<u64> = rule["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        if ports.contains(&9091) {
            assert_eq!(ports, [9091], "the admin port shares no rule");
            let from = rule["from"].as_sequence().expect("admin port restricted");
            assert!(!from.is_empty());
            for peer in from {
                let namespace =
                    peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        .as_str();
                let prometheus =
                    peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str();
                assert!(
                    namespace == Some("monitoring") || prometheus == Some("prometheus"),
                    "{peer:?}"
                );
            }
        } else {
            assert!(ports.iter().all(|p| [9000, 9443].contains(p)), "{ports:?}");
        }
    }
    let egress_ports: BTreeSet<u64> = policy["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 2000, 3000, 4000, 6379]));
    // The public Service does not carry the admin port.
    let service = find(&objects, "Service");
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|p| p["port"] != 9091)
    );
}
