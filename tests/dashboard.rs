//! The admin dashboard: `GET /` is one self-contained page that a real browser (headless
//! Chromium, Debian's `chromium`) renders from `/dashboard.json` and `/metrics`;
//! `/dashboard.json` holds what only the live state knows; both follow the admin token rule,
//! the token also accepted as an HTTP Basic password (a browser cannot send a bearer token
//! when it opens a page).

mod support;

use std::process::Command;

use base64::Engine;
use support::{Gateway, client, config, get, json, upstream};

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_self_contained_and_the_json_holds_the_live_state() {
    let up = upstream::http("core").await;
    let path = support::write_config(&config(&[
        ("core-service", "/core", up.addr, r#""strip_prefix": true"#),
        (
            "orders",
            "/orders",
            up.addr,
            r#""auth": {"mode": "off"}, "strip_prefix": true"#,
        ),
    ]));
    let gw = Gateway::spawn(&["--services", path.to_str().unwrap()], &[]);
    let page = support::admin_get(&gw, "/").await;
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("dashboard.json") && html.contains("<table"));
    for outside in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(outside),
            "the page loads something from elsewhere: {outside}"
        );
    }

    assert_eq!(get(&gw, "/core/x", &[]).await.status(), 200);
    let data = json(support::admin_get(&gw, "/dashboard.json").await).await;
    assert!(data["now_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(data["shutting_down"], false);
    assert_eq!(data["routes"][0]["name"], "core-service");
    assert_eq!(data["routes"][0]["instances"][0]["healthy"], true);
    assert!(data["tls"].is_null() && data["jwks"].is_null());
    assert_eq!(data["metrics"], true);
    let metrics = support::metrics(&gw).await;
    let hash = data["config"]["hash"].as_str().unwrap();
    assert!(
        metrics.contains(&format!("config_info{{hash=\"{hash}\"}}")),
        "{hash}"
    );
    assert!(data["config"]["last_reload"].is_null());

    // A reload, refused (a broken file): when, and why.
    std::fs::write(&path, "{ not json").unwrap();
    gw.signal("HUP");
    gw.wait_for_log("config reload refused");
    let data = json(support::admin_get(&gw, "/dashboard.json").await).await;
    let reload = &data["config"]["last_reload"];
    assert_eq!(reload["ok"], false, "{data}");
    assert!(
        reload["error"].as_str().unwrap().contains("invalid JSON"),
        "{reload}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_the_token_opens_it_as_a_bearer_token_or_a_basic_password() {
    let up = upstream::http("core").await;
    let token = "admin-token-for-the-dashboard";
    let gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, "")]),
        &[("ADMIN_HOST", "0.0.0.0"), ("ADMIN_TOKEN", token)],
    );
    for path in ["/", "/dashboard.json"] {
        let resp = support::admin_get(&gw, path).await;
        assert_eq!(resp.status(), 401, "{path}");
        let challenges: Vec<_> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(challenges.contains(&"Bearer".to_owned()), "{challenges:?}");
        // The page asks a browser for a password.
        assert_eq!(
            challenges.iter().any(|c| c.starts_with("Basic ")),
            path == "/",
            "{path}: {challenges:?}"
        );
        for (auth, status) in [
            (basic("anyone", token), 200),
            (format!("Bearer {token}"), 200),
            (basic("anyone", "wrong-token-of-some-length"), 401),
            (basic(token, ""), 401),
            ("Basic !!!".to_owned(), 401),
        ] {
            let resp = client()
                .get(gw.admin_url(path))
                .header("authorization", &auth)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{path} with {auth}");
        }
    }
    // Basic opens the rest of the admin port too (the page reads /metrics with it).
    let resp = client()
        .get(gw.admin_url("/metrics"))
        .header("authorization", basic("x", token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// The page as a browser shows it: headless Chromium runs its script, which fills the
/// routes table and the figures from two readings.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_renders_the_routes_and_their_figures() {
    let up = upstream::http("core").await;
    let gw = Gateway::start(&config(&[
        ("core-service", "/core", up.addr, r#""strip_prefix": true"#),
        ("quiet-service", "/quiet", up.addr, ""),
    ]));
    let url = gw.url("/core/x");
    let traffic = tokio::spawn(async move {
        let c = client();
        for _ in 0..400 {
            let _ = c.get(&url).send().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let profile = support::temp_path("chromium");
    let page = gw.admin_url("/");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=3000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(page)
            .output()
            .expect("chromium is not installed: run scripts/setup.sh --test (scripts/test.sh does)")
    })
    .await
    .unwrap();
    traffic.abort();
    let dom = String::from_utf8_lossy(&out.stdout);
    let routes = dom
        .split("<tbody id=\"routes\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no routes table in:\n{dom}"));
    assert!(
        routes.contains("<td>core-service</td>") && routes.contains("<td>/quiet</td>"),
        "{routes}"
    );
    assert!(
        routes.contains("pill ok"),
        "instances shown healthy: {routes}"
    );
    // The busy route's requests/s, from two readings: a number, not the placeholder.
    let core_row = routes
        .split("<tr>")
        .find(|r| r.contains("core-service"))
        .unwrap();
    let rps: Vec<f64> = core_row
        .split("<td class=\"num\">")
        .skip(1)
        .filter_map(|cell| cell.split('<').next()?.parse().ok())
        .collect();
    assert!(rps.first().is_some_and(|r| *r > 0.0), "{core_row}");
    assert!(dom.contains("serving"), "state shown");
}
