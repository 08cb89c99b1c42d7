//! The files that run the platform stay true: compose files, .env.example, services.json,
//! the Dockerfile, the Justfile and the SQL init scripts, checked with real parsers and real
//! tools (docker-compose's own `config`, PostgreSQL, just). No container engine is needed.
//! The tools come from `scripts/setup.sh --test` (the README's test command runs it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const COMPOSE_FILES: [&str; 3] = [
    "docker-compose.yml",
    "docker-compose.dev.yml",
    "docker-compose.prod.yml",
];
const INFRASTRUCTURE: [&str; 4] = ["kafka-b", "postgres", "mongo", "redis"];
const SERVICES: [&str; 3] = ["auth-service", "core-service", "messaging-service"];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run scripts/setup.sh --test (scripts/test.sh does)"
    );
}

/// `.env.example` as a map; every line is `KEY=value`, a comment or blank.
fn env_example() -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (n, line) in read(".env.example").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!(".env.example:{}: not KEY=value", n + 1));
        assert!(
            vars.insert(k.to_owned(), v.to_owned()).is_none(),
            ".env.example: {k} twice"
        );
    }
    vars
}

/// Names used as `${NAME}`, `${NAME:-x}`, `${NAME?err}` (not the `$${...}` escape).
fn substituted_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("${") {
        let start = i + at;
        i = start + 2;
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "odd substitution at byte {start}");
        names.insert(name);
    }
    names
}

fn yaml(rel: &str) -> Value {
    let mut v: Value = serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
    v
}

/// The merged configuration as docker-compose computes it, with .env.example as the .env.
fn compose_config(files: &[&str]) -> Value {
    require("docker-compose");
    let dir = support::temp_path("compose");
    for rel in COMPOSE_FILES
        .iter()
        .chain(["config/services.json", "docker/postgres/Dockerfile"].iter())
    {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(ROOT).join(rel), &to).unwrap();
    }
    std::fs::create_dir_all(dir.join("docker/postgres/init")).unwrap();
    std::fs::copy(Path::new(ROOT).join(".env.example"), dir.join(".env")).unwrap();
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(&dir);
    for f in files {
        cmd.args(["-f", f]);
    }
    let out = cmd.arg("config").output().expect("run docker-compose");
    assert!(
        out.status.success(),
        "docker-compose {files:?} config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("docker-compose config prints YAML")
}

fn services(config: &Value) -> &serde_yaml_ng::Mapping {
    config["services"].as_mapping().expect("services")
}

fn published_ports(service: &Value) -> Vec<(u64, u64)> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    (
                        p["published"].as_u64().unwrap_or(0),
                        p["target"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(source, target)` of each volume, in either of the forms compose prints.
fn mounts(service: &Value) -> Vec<(String, String)> {
    let Some(list) = service["volumes"].as_sequence() else {
        return Vec::new();
    };
    list.iter()
        .map(|v| match v.as_str() {
            Some(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                (source, parts.next().unwrap_or_default().to_owned())
            }
            None => (
                v["source"].as_str().unwrap_or_default().to_owned(),
                v["target"].as_str().unwrap_or_default().to_owned(),
            ),
        })
        .collect()
}

#[test]
fn every_variable_used_is_defined_in_env_example() {
    let defined = env_example();
    let mut used = BTreeSet::new();
    for f in COMPOSE_FILES {
        let _ = yaml(f); // parses
        used.extend(substituted_names(&read(f)));
    }
    let justfile = read("Justfile");
    used.extend(substituted_names(&justfile));
    for part in justfile.split("env(\"").skip(1) {
        used.insert(part.split('"').next().unwrap().to_owned());
    }
    let missing: Vec<_> = used.iter().filter(|v| !defined.contains_key(*v)).collect();
    assert!(
        missing.is_empty(),
        "used but not in .env.example: {missing:?}"
    );
    for needed in [
        "CONTAINER_TOOL",
        "PROXY_HOST",
        "PROXY_PORT",
        "RUST_LOG",
        "JWKS_URL",
        "POSTGRES_PASSWORD",
    ] {
        assert!(
            defined.contains_key(needed),
            "{needed} missing from .env.example"
        );
    }
}

#[test]
fn base_has_healthchecks_and_ordered_startup() {
    let base = compose_config(&["docker-compose.yml"]);
    let svcs = services(&base);
    for name in INFRASTRUCTURE {
        assert!(
            svcs[name]["healthcheck"]["test"].is_sequence(),
            "{name} has no healthcheck"
        );
    }
    // The gateway's own: its binary asks its admin listener's /readyz (no curl in the image).
    let probe = &svcs["proxy"]["healthcheck"]["test"];
    assert!(
        probe
            .as_sequence()
            .is_some_and(|t| t.iter().any(|a| a.as_str() == Some("--probe"))),
        "proxy healthcheck: {probe:?}"
    );
    for name in SERVICES {
        let deps = svcs[name]["depends_on"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name} depends_on"));
        assert!(!deps.is_empty());
        for (dep, how) in deps {
            assert_eq!(how["condition"], "service_healthy", "{name} -> {dep:?}");
        }
        assert_eq!(
            svcs[name]["image"].as_str(),
            Some(format!("localhost/{name}:1.0.0").as_str())
        );
    }
    for name in SERVICES {
        assert!(
            svcs["proxy"]["depends_on"][name].is_mapping(),
            "proxy must wait for {name}"
        );
    }
    // One network, everyone on it.
    assert_eq!(base["networks"].as_mapping().unwrap().len(), 1);
    for (name, svc) in svcs {
        assert!(
            svc["networks"]
                .as_mapping()
                .is_some_and(|n| n.contains_key("beat")),
            "{name:?}"
        );
    }
    // Only the gateway is published by the base file.
    for (name, svc) in svcs {
        if name != "proxy" {
            assert!(
                published_ports(svc).is_empty(),
                "{name:?} is published by the base file"
            );
        }
    }
    // No secret values baked into the compose files.
    for f in COMPOSE_FILES {
        assert!(
            !read(f).contains("change-me"),
            "{f} holds a placeholder secret"
        );
    }
}

#[test]
fn services_json_points_at_compose_services_on_their_ports() {
    let base = compose_config(&["docker-compose.yml"]);
    let svcs = services(&base);
    let env = env_example();
    let routes: serde_json::Value = serde_json::from_str(&read("config/services.json")).unwrap();
    for route in routes["services"].as_array().unwrap() {
        let host = route["host"].as_str().unwrap();
        let port = route["port"].as_u64().unwrap();
        let svc = svcs
            .get(host)
            .unwrap_or_else(|| panic!("services.json host {host} is not a compose service"));
        let exposed: Vec<u64> = svc["expose"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{host} exposes nothing"))
            .iter()
            .map(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .unwrap()
            })
            .collect();
        assert!(
            exposed.contains(&port),
            "{host} listens on {exposed:?}, services.json says {port}"
        );
    }
    let proxy = &svcs["proxy"];
    let want: u64 = env["PROXY_PORT"].parse().unwrap();
    let tls: u64 = env["PROXY_TLS_PUBLISHED_PORT"].parse().unwrap();
    assert_eq!(published_ports(proxy), [(want, 9000), (tls, 9443)]);
    assert_eq!(proxy["environment"]["PROXY_PORT"], "9000");
    let targets: Vec<String> = mounts(proxy).into_iter().map(|(_, t)| t).collect();
    assert!(
        targets.iter().any(|t| t == "/app/config/services.json"),
        "{targets:?}"
    );
}

#[test]
fn dev_adds_admin_uis_debug_logs_and_direct_ports() {
    let dev = compose_config(&["docker-compose.yml", "docker-compose.dev.yml"]);
    let svcs = services(&dev);
    assert_eq!(published_ports(&svcs["mongo-express"]), [(8081, 8081)]);
    assert!(
        svcs["redis"]["image"]
            .as_str()
            .unwrap()
            .contains("redis-stack")
    );
    assert!(published_ports(&svcs["redis"]).contains(&(8001, 8001)));
    assert_eq!(svcs["proxy"]["environment"]["RUST_LOG"], "debug");
    for (name, port) in [
        ("auth-service", 2000),
        ("core-service", 3000),
        ("messaging-service", 4000),
    ] {
        assert_eq!(published_ports(&svcs[name]), [(port, port)], "{name}");
    }
}

/// Dev: Prometheus scrapes the gateway's admin port (opened to the compose network, with a
/// token) and core's `/metrics`; Grafana has the gateway's dashboard provisioned, whose
/// queries name only metrics the gateway exports.
#[test]
fn dev_has_prometheus_and_grafana_with_the_gateways_dashboard() {
    let dev = compose_config(&["docker-compose.yml", "docker-compose.dev.yml"]);
    let svcs = services(&dev);
    let proxy = &svcs["proxy"]["environment"];
    assert_eq!(proxy["ADMIN_HOST"], "0.0.0.0");
    let token = proxy["ADMIN_TOKEN"].as_str().unwrap_or("");
    assert!(token.len() >= 16, "the dev admin token: {token:?}");
    assert_eq!(svcs["prometheus"]["environment"]["ADMIN_TOKEN"], token);
    assert_eq!(published_ports(&svcs["prometheus"]), [(9090, 9090)]);
    assert_eq!(published_ports(&svcs["grafana"]), [(3001, 3000)]);
    let mounted = |svc: &str, target: &str| {
        mounts(&svcs[svc])
            .into_iter()
            .find(|(_, t)| t == target)
            .map(|(source, _)| source)
            .unwrap_or_else(|| panic!("{svc} mounts nothing at {target}"))
    };
    assert!(
        mounted("prometheus", "/etc/prometheus/prometheus.yml")
            .ends_with("deploy/prometheus/prometheus.yml")
    );
    assert!(
        mounted("grafana", "/etc/grafana/provisioning").ends_with("deploy/grafana/provisioning")
    );
    assert!(
        mounted("grafana", "/var/lib/grafana/dashboards/beat-gateway.json")
            .ends_with("deploy/grafana/beat-gateway.json")
    );

    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let targets: Vec<String> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| {
            job["static_configs"][0]["targets"]
                .as_sequence()
                .unwrap()
                .clone()
        })
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let admin_port = env_example()["ADMIN_PORT"].clone();
    assert!(
        targets.contains(&format!("proxy:{admin_port}")),
        "{targets:?}"
    );
    assert!(
        targets.contains(&"core-service:3000".to_owned()),
        "{targets:?}"
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/beat-gateway.yml");
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );

    // Every metric the dashboard queries is one the gateway registers.
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/beat-gateway.json")).expect("dashboard JSON");
    let exported: BTreeSet<String> = read("src/metrics.rs")
        .split('"')
        .filter(|w| w.starts_with("beat_gateway_"))
        .map(str::to_owned)
        .collect();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("beat_gateway_").map(|_| word) {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name);
                    queried.insert(family.to_owned());
                }
            }
        }
    }
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries {unknown:?}");
    for needed in [
        "beat_gateway_requests_total",
        "beat_gateway_request_duration_seconds",
        "beat_gateway_upstream_healthy",
        "beat_gateway_websocket_tunnels",
        "beat_gateway_config_reloads_total",
        "beat_gateway_jwt_refusals_total",
    ] {
        assert!(queried.contains(needed), "the dashboard lacks {needed}");
    }
}

#[test]
fn prod_persists_data_restarts_limits_and_publishes_only_the_gateway() {
    let prod = compose_config(&["docker-compose.yml", "docker-compose.prod.yml"]);
    let svcs = services(&prod);
    for (name, svc) in svcs {
        assert_eq!(svc["restart"], "unless-stopped", "{name:?}");
        assert!(
            svc["deploy"]["resources"]["limits"]["memory"].is_string(),
            "{name:?} has no memory limit"
        );
        if name != "proxy" {
            assert!(
                published_ports(svc).is_empty(),
                "{name:?} is published in prod"
            );
        }
    }
    assert!(!svcs.contains_key("mongo-express"));
    assert!(!svcs["redis"]["image"].as_str().unwrap().contains("stack"));
    let volumes = prod["volumes"].as_mapping().unwrap();
    for (svc, volume) in [
        ("postgres", "postgres-data"),
        ("mongo", "mongo-data"),
        ("redis", "redis-data"),
        ("kafka-b", "kafka-data"),
    ] {
        assert!(volumes.contains_key(volume), "{volume}");
        let sources: Vec<String> = mounts(&svcs[svc]).into_iter().map(|(s, _)| s).collect();
        assert!(
            sources.iter().any(|s| s.ends_with(volume)),
            "{svc} does not use {volume}: {sources:?}"
        );
    }
}

#[test]
fn dockerfile_builds_with_cmake_and_runs_unprivileged() {
    let df = read("Dockerfile");
    let stages = df.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage build expected");
    assert!(df.contains("cmake"));
    assert!(
        df.contains("--mount=type=cache"),
        "dependency cache between builds"
    );
    let user = df
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "runs as {user}"
    );
    assert!(df.lines().any(|l| l.trim() == "EXPOSE 9000 9443"));
    assert!(df.contains("HEALTHCHECK") && df.contains("STOPSIGNAL SIGTERM"));
    let ignore = read(".dockerignore");
    for entry in ["target/", ".env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

/// The builder stage's `COPY`s are all cargo needs: the files they name, alone in a
/// directory, resolve with `--locked` (the vendored Pingora crates of `[patch.crates-io]`
/// included: an image built without them does not build at all).
#[test]
fn dockerfile_copies_everything_the_build_needs() {
    let df = read("Dockerfile");
    let builder: Vec<&str> = df
        .lines()
        .skip_while(|l| !l.starts_with("FROM "))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect();
    let ctx = std::env::temp_dir().join(format!("beat-docker-ctx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx).expect("scratch directory");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut copied = Vec::new();
    for line in &builder {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        let (dest, sources) = words.split_last().expect("COPY with a destination");
        for src in sources {
            let to = if dest.ends_with('/') {
                ctx.join(src)
            } else {
                ctx.join(dest.trim_start_matches("./"))
            };
            let status = Command::new("cp")
                .args(["-r", "--"])
                .arg(root.join(src))
                .arg(&to)
                .status()
                .expect("cp");
            assert!(status.success(), "COPY {src}: not in the repository");
            copied.push(*src);
        }
    }
    assert!(
        copied.contains(&"vendor"),
        "the builder stage copies {copied:?}"
    );
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(&ctx)
        .output()
        .expect("cargo metadata");
    let _ = std::fs::remove_dir_all(&ctx);
    assert!(
        out.status.success(),
        "the image's build context ({copied:?}) does not resolve: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway PostgreSQL cluster on a loopback port; stopped on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed: run scripts/setup.sh --test");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let data = PathBuf::from(format!(
            "/tmp/beat-pg-{}-{}",
            std::process::id(),
            support::free_port()
        ));
        std::fs::create_dir_all(&data).unwrap();
        let pg = Postgres {
            bin,
            data,
            port: support::free_port(),
            as_postgres,
        };
        if as_postgres {
            // initdb refuses to run as root.
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&pg.data)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            pg.port,
            pg.data.display()
        );
        let log = pg.data.join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run psql against `db` as the postgres image does (stop on the first error), with
    /// `input` on stdin if given (so the postgres user needs no access to this checkout).
    fn psql_with(&self, db: &str, args: &[&str], input: Option<&str>) -> String {
        use std::io::Write;
        use std::process::Stdio;
        let port = self.port.to_string();
        let mut child = self
            .command("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
            ])
            .args(["-U", "postgres", "-d", db])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql");
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn psql(&self, db: &str, args: &[&str]) -> String {
        self.psql_with(db, args, None)
    }

    fn psql_script(&self, db: &str, script: &str) {
        self.psql_with(db, &["-f", "-"], Some(script));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn sql_init_scripts_are_valid_and_idempotent() {
    let pg = Postgres::start();
    pg.psql("postgres", &["-c", "CREATE DATABASE beat"]);
    let postgis = Path::new(&pg.bin)
        .parent()
        .unwrap()
        .join("lib/postgis-3.so")
        .exists();
    let dir = Path::new(ROOT).join("docker/postgres/init");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scripts.sort();
    assert_eq!(scripts.len(), 2, "{scripts:?}");
    for round in 1..=2 {
        for script in &scripts {
            let mut text = std::fs::read_to_string(script).unwrap();
            if !postgis {
                eprintln!(
                    "PostGIS is not installed here: running {} without its CREATE EXTENSION lines",
                    script.display()
                );
                text = text
                    .lines()
                    .filter(|l| !l.contains("CREATE EXTENSION"))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            // As the postgres image runs them: psql, stop on the first error, in POSTGRES_DB.
            // Fed on stdin, so the postgres user needs no access to this checkout.
            pg.psql_script("beat", &text);
        }
        let dbs = pg.psql(
            "postgres",
            &["-At", "-c", "SELECT datname FROM pg_database ORDER BY 1"],
        );
        for db in ["auth_service", "core_service", "messaging_service"] {
            assert!(
                dbs.lines().any(|l| l == db),
                "round {round}: {db} missing in {dbs}"
            );
        }
    }
    if postgis {
        for db in ["beat", "auth_service", "core_service", "messaging_service"] {
            let v = pg.psql(db, &["-At", "-c", "SELECT postgis_lib_version()"]);
            assert!(v.starts_with('3'), "{db}: PostGIS {v}");
        }
    }
}

#[test]
fn just_lists_every_recipe() {
    require("just");
    let out = Command::new("just")
        .arg("--list")
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for recipe in [
        "serve",
        "build-images",
        "compose-dev",
        "compose-build",
        "dev",
        "prod",
        "down",
        "logs",
        "test",
        "check",
        "bench",
    ] {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(recipe)),
            "just --list lacks {recipe}:\n{listed}"
        );
    }
    // Every recipe that talks to containers goes through CONTAINER_TOOL.
    for tool in ["docker", "podman"] {
        let out = Command::new("just")
            .args(["--dry-run", "down"])
            .env("CONTAINER_TOOL", tool)
            .current_dir(ROOT)
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stderr);
        assert!(
            shown.contains(&format!("{tool} compose")),
            "{tool}: {shown}"
        );
    }
}

#[test]
fn just_serve_starts_the_gateway() {
    require("just");
    let port = support::free_port();
    let mut child = Command::new("just")
        .arg("serve")
        .current_dir(ROOT)
        .env("PROXY_HOST", "127.0.0.1")
        .env("PROXY_PORT", port.to_string())
        .env("ADMIN_PORT", support::free_port().to_string())
        .env("PROXY_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("just serve");
    let pgid = child.id();
    let stop = || {
        let _ = Command::new("kill")
            .args(["-INT", "--", &format!("-{pgid}")])
            .status();
    };
    // `cargo run` may have to build first: allow for it, but bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut answer = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("just serve exited early: {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            answer = support::raw_request(
                ([127, 0, 0, 1], port).into(),
                b"GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop();
    let _ = child.wait();
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "no answer from just serve on :{port}: {answer}"
    );
    assert!(answer.contains("\"request_id\""), "{answer}");
}

#[test]
fn nix_files_parse_and_name_every_service() {
    for rel in ["flake.nix", "nix/services.nix"] {
        let parse = rnix::Root::parse(&read(rel));
        assert!(parse.errors().is_empty(), "{rel}: {:?}", parse.errors());
    }
    let flake = read("flake.nix");
    for input in [
        "beat-ecoprove-auth",
        "beat-ecoprove-core",
        "beat-ecoprove-messaging",
    ] {
        assert!(
            flake.contains(&format!("github:BeatEcoprove/{input}")),
            "flake input {input}"
        );
    }
    assert!(
        flake.contains("dockerTools.buildLayeredImage") && flake.contains("CONTAINER_TOOL:-podman")
    );
    let services = read("nix/services.nix");
    for name in SERVICES {
        assert!(
            services.contains(&format!("{name} = {{")),
            "nix/services.nix lacks {name}"
        );
    }
}
