//! A rolling restart of three replicas under load, as Kubernetes does it, simulated with
//! three gateway processes behind HAProxy (Debian's package) health-checking `/readyz`
//! the way a Service's endpoints follow readiness, and retrying nothing (kube-proxy does
//! not retry). One replica gets SIGTERM while clients run, exits, and is started again on
//! the same ports; then the next. Nothing fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::load::Load;
use support::{Gateway, config, free_port, upstream};

const DELAY_SECONDS: u64 = 2;

/// HAProxy in front of the replicas; stopped on drop.
struct Haproxy {
    child: Child,
    port: u16,
    stats_port: u16,
}

impl Haproxy {
    fn start(replicas: &[(u16, u16)]) -> Haproxy {
        let (port, stats_port) = (free_port(), free_port());
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, (port, admin))| {
                format!("  server g{i} 127.0.0.1:{port} check port {admin}\n")
            })
            .collect();
        // Readiness every 200 ms, out after one 503, back after two 200s (a readiness
        // probe's periodSeconds/failureThreshold/successThreshold). `retries 0`: a
        // request that meets a refused connection fails, as it would through kube-proxy.
        let cfg = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 0\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n\
             \x20 default-server inter 200ms fall 1 rise 2\n{servers}\
             listen stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /stats\n"
        );
        let path: PathBuf = support::temp_path("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed: run scripts/setup.sh --test (scripts/test.sh does)");
        let haproxy = Haproxy {
            child,
            port,
            stats_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }

    /// Each server's (status, 2xx responses), from the stats CSV.
    async fn servers(&self) -> Vec<(String, u64)> {
        let url = format!("http://127.0.0.1:{}/stats;csv", self.stats_port);
        let csv = support::client()
            .get(url)
            .send()
            .await
            .expect("haproxy stats")
            .text()
            .await
            .expect("stats text");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .expect("CSV header")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
        let (px, sv, status, ok) = (col("pxname"), col("svname"), col("status"), col("hrsp_2xx"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > ok && f[px] == "gateways" && f[sv].starts_with('g'))
            .map(|f| (f[status].to_owned(), f[ok].parse().unwrap_or(0)))
            .collect()
    }

    /// Until server `i`'s status starts with `want` (UP / DOWN); how long it took.
    async fn wait_for(&self, i: usize, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.servers().await[i].0.starts_with(want) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "g{i} not {want} after {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(routes: &Path, (port, admin): (u16, u16)) -> Gateway {
    Gateway::spawn_on(
        port,
        admin,
        &["--services", routes.to_str().unwrap()],
        &[
            ("PROXY_SHUTDOWN_DELAY_SECONDS", "2"),
            ("PROXY_GRACE_SECONDS", "1"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_three_replicas_behind_a_load_balancer_drops_nothing() {
    let up = upstream::http("core").await;
    let routes = support::write_config(&config(&[(
        "core-service",
        "/core",
        up.addr,
        r#""strip_prefix": true"#,
    )]));
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut replicas: Vec<Gateway> = ports.iter().map(|p| replica(&routes, *p)).collect();
    let lb = Haproxy::start(&ports);
    for i in 0..3 {
        lb.wait_for(i, "UP", Duration::from_secs(10)).await;
    }

    let load = Load::mixed(format!("http://127.0.0.1:{}/core/x", lb.port), 4, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut report = Vec::new();
    for i in 0..3 {
        let before = lb.servers().await[i].1;
        let signalled = Instant::now();
        replicas[i].signal("TERM");
        let out = lb
            .wait_for(i, "DOWN", Duration::from_secs(DELAY_SECONDS))
            .await;
        let exit = replicas[i]
            .wait_exit(Duration::from_secs(DELAY_SECONDS + 8))
            .expect("the replica exited");
        let exited = signalled.elapsed();
        assert_eq!(exit.code(), Some(0), "g{i}: {exit:?}");
        // The next pod, on the same address.
        let started = Instant::now();
        replicas[i] = replica(&routes, ports[i]);
        lb.wait_for(i, "UP", Duration::from_secs(10)).await;
        let back = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = lb.servers().await[i].1;
        assert!(after > before, "g{i} took no traffic once back");
        report.push(format!(
            "g{i}: out of rotation {} ms after SIGTERM, exited 0 after {} ms, in again {} ms after its restart",
            out.as_millis(),
            exited.as_millis(),
            back.as_millis()
        ));
    }
    let answered_during = load.ok();
    let outcome = load.stop().await;
    let served: Vec<u64> = lb.servers().await.iter().map(|s| s.1).collect();
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!(
        "{} requests through the rollout ({answered_during} while it ran), {} failed; 2xx per replica {served:?}",
        outcome.ok,
        outcome.failures.len()
    );
    outcome.assert_none_failed(500);
}
