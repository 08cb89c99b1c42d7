//! Hot reload against the real binary: SIGHUP and `--watch` swap the routes under
//! continuous load with no failed request and a WebSocket held open across; an invalid
//! file leaves the old routes serving; rate-limit buckets of unchanged routes carry over.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::load::Load;
use support::{Gateway, client, config, json, status, upstream};
use tokio_tungstenite::tungstenite::Message;

fn start(path: &Path, extra: &[&str]) -> Gateway {
    let mut args = vec!["--services", path.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    Gateway::spawn(&args, &[])
}

/// Until `path` answers `want` (bounded).
async fn wait_status(gw: &Gateway, path: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = status(gw, path, &[]).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_swaps_routes_under_load_without_a_failure() {
    let core = upstream::http("core").await;
    let extra = upstream::http("extra").await;
    let before = config(&[
        (
            "core-service",
            "/core",
            core.addr,
            r#""strip_prefix": true"#,
        ),
        ("websocket", "/socket", core.addr, ""),
    ]);
    let path = support::write_config(&before);
    let gw = start(&path, &[]);
    let hash_before = support::metrics(&gw).await;

    // A WebSocket held open across the reload.
    let url = format!("ws://127.0.0.1:{}/socket/websocket", gw.port);
    let mut ws = support::ws_connect_echoing(&url, "before").await;

    // Continuous load on the route that stays.
    let load = Load::start(gw.url("/core/x"), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&gw, "/extra/x", &[]).await, 404);

    let after = config(&[
        (
            "core-service",
            "/core",
            core.addr,
            r#""strip_prefix": true"#,
        ),
        ("websocket", "/socket", core.addr, ""),
        (
            "extra-service",
            "/extra",
            extra.addr,
            r#""strip_prefix": true"#,
        ),
    ]);
    std::fs::write(&path, after).unwrap();
    gw.signal("HUP");
    wait_status(&gw, "/extra/x", 200, Duration::from_secs(2)).await;
    let body = json(client().get(gw.url("/extra/x")).send().await.unwrap()).await;
    assert_eq!(body["service"], "extra");
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop().await.assert_none_failed(200);

    // The WebSocket opened before the reload still echoes.
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));

    let metrics = support::metrics(&gw).await;
    assert!(
        metrics.contains(r#"beat_gateway_config_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    let info = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("beat_gateway_config_info{"))
            .map(str::to_owned)
    };
    assert_ne!(
        info(&hash_before),
        info(&metrics),
        "config_info follows the file"
    );
    assert!(gw.log().contains("config reloaded: 3 routes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_leaves_the_old_routes_serving() {
    let core = upstream::http("core").await;
    let path = support::write_config(&config(&[("core-service", "/core", core.addr, "")]));
    let gw = start(&path, &[]);
    std::fs::write(
        &path,
        config(&[(
            "core-service",
            "/core",
            core.addr,
            r#""auth": {"mode": "sometimes"}"#,
        )]),
    )
    .unwrap();
    gw.signal("HUP");
    let log = gw.wait_for_log("config reload refused");
    assert!(
        log.contains("service 'core-service', field 'auth.mode'"),
        "the log names file, service and field:\n{log}"
    );
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    let metrics = support::metrics(&gw).await;
    assert!(metrics.contains(r#"beat_gateway_config_reloads_total{result="failed"} 1"#));

    // Auth turned on without the JWT settings is refused too.
    std::fs::write(
        &path,
        config(&[(
            "core-service",
            "/core",
            core.addr,
            r#""auth": {"mode": "required"}"#,
        )]),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_for_log("JWKS_URL");
    assert_eq!(
        status(&gw, "/core/x", &[]).await,
        200,
        "still open: the reload was refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_picks_up_a_changed_file_and_buckets_carry_over() {
    let core = upstream::http("core").await;
    let limited = r#""strip_prefix": true, "rate_limit": {"requests_per_second": 0.1, "burst": 2}"#;
    let path = support::write_config(&config(&[("core-service", "/core", core.addr, limited)]));
    let gw = start(&path, &["--watch"]);
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);

    std::fs::write(
        &path,
        config(&[
            ("core-service", "/core", core.addr, limited),
            ("more", "/more", core.addr, r#""strip_prefix": true"#),
        ]),
    )
    .unwrap();
    wait_status(&gw, "/more/x", 200, Duration::from_secs(3)).await;
    // The unchanged route kept its bucket: still empty.
    assert_eq!(status(&gw, "/core/x", &[]).await, 429);
}

/// A Kubernetes ConfigMap mounted as a directory: `services.json` is a symlink to
/// `..data/services.json`, `..data` a symlink to a timestamped directory; an update writes
/// a new directory and swaps `..data` with one rename. `--watch` follows it.
#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    let core = upstream::http("core").await;
    let dir = support::temp_path("configmap");
    let version = |n: u32, routes: &str| {
        let v = dir.join(format!("..2026_12_08_00_00_0{n}.000000000"));
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("services.json"), routes).unwrap();
        v
    };
    let one = config(&[("core-service", "/core", core.addr, "")]);
    let first = version(1, &one);
    symlink(first.file_name().unwrap(), dir.join("..data")).unwrap();
    symlink("..data/services.json", dir.join("services.json")).unwrap();
    let gw = start(&dir.join("services.json"), &["--watch"]);
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    assert_eq!(status(&gw, "/more/x", &[]).await, 404);

    // What the kubelet does: new directory, `..data_tmp` -> it, rename over `..data`,
    // remove the old directory.
    let two = config(&[
        ("core-service", "/core", core.addr, ""),
        ("more", "/more", core.addr, r#""strip_prefix": true"#),
    ]);
    let second = version(2, &two);
    symlink(second.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    wait_status(&gw, "/more/x", 200, Duration::from_secs(3)).await;
    assert!(
        gw.log().contains("reload: the file changed"),
        "{}",
        gw.log()
    );
}

/// Pingora's graceful binary upgrade: a new process started with `-u` takes the listening
/// sockets from the old one, which gets SIGQUIT and finishes its requests; clients in a
/// loop across the hand-over see no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_drops_nothing() {
    let core = upstream::http("core").await;
    let path = support::write_config(&config(&[("core-service", "/core", core.addr, "")]));
    let conf = support::temp_path("pingora.yaml");
    let sock = support::temp_path("upgrade.sock");
    std::fs::write(
        &conf,
        format!(
            "---\nversion: 1\nupgrade_sock: {}\npid_file: {}\n",
            sock.display(),
            support::temp_path("gw.pid").display()
        ),
    )
    .unwrap();
    let services = path.to_str().unwrap();
    let conf = conf.to_str().unwrap();
    let mut old = Gateway::spawn(&["--services", services, "-c", conf], &[]);

    let load = Load::start(old.url("/core/x"), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new process, on the same ports (it waits for the old one's sockets).
    let new = Gateway::spawn_on(
        old.port,
        old.admin_port,
        &["--services", services, "-c", conf, "-u"],
        &[],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(10)).is_some(),
        "the old process did not exit"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop().await.assert_none_failed(50);
    assert_eq!(status(&new, "/core/x", &[]).await, 200);
}
