//! Sessions at the edge (`JWT_SESSION_CHECK=current`, `JWT_REVOKED_KEY`), against the real
//! binary, a real `redis-server` holding what the auth service writes there (the raw access
//! token at `<user id>:access`), and tokens shaped like the auth service's.

mod support;

use std::time::{Duration, Instant};

use support::jwt::{self, Jwks, RsaKey};
use support::redis::RedisServer;
use support::{Gateway, config, env_refs, get, json, upstream};

/// `/core` with `required` auth, `/socket` (WebSocket) with `required` auth.
fn routes(up: std::net::SocketAddr) -> String {
    config(&[
        (
            "core-service",
            "/core",
            up,
            r#""strip_prefix": true, "auth": {"mode": "required"}"#,
        ),
        (
            "websocket",
            "/socket",
            up,
            r#""auth": {"mode": "required"}"#,
        ),
    ])
}

/// What every test starts from: a Redis, a signing key with its JWKS, the echo service.
struct World {
    redis: RedisServer,
    key: RsaKey,
    jwks: Jwks,
    up: upstream::Server,
}

impl World {
    /// A gateway on the routes above, verifying against this JWKS, its session store this
    /// Redis, with `extra` settings.
    fn gateway(&self, extra: &[(&str, &str)]) -> Gateway {
        let env = self.jwks.env();
        let url = self.redis.url();
        let mut vars = env_refs(&env);
        vars.push(("JWT_SESSION_REDIS_URL", url.as_str()));
        vars.extend_from_slice(extra);
        let gw = Gateway::start_with(&routes(self.up.addr), &vars);
        gw.wait_for_log("jwks: 1 key(s) loaded");
        gw
    }

    async fn new() -> World {
        let key = RsaKey::generate();
        World {
            redis: RedisServer::start(),
            jwks: Jwks::serve(&[&key]).await,
            key,
            up: upstream::http("core").await,
        }
    }
}

/// An access token for `sub` with its own `jti` (two logins of one user differ).
fn token(key: &RsaKey, sub: &str, jti: &str) -> String {
    let mut c = jwt::claims(sub, 3600);
    c["jti"] = jti.into();
    key.sign(&c, Some("access"))
}

async fn redis_cmd<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.expect("redis command")
}

/// How many GETs Redis has served so far.
async fn gets(redis: &RedisServer) -> u64 {
    let info: String = redis_cmd(redis, &["INFO", "commandstats"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn with_token(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    get(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// `/metrics` has `sample` (a name with labels, and maybe its value).
async fn assert_counted(gw: &Gateway, sample: &str) {
    let m = support::metrics(gw).await;
    assert!(m.contains(sample), "no {sample} in:\n{m}");
}

/// A refusal for a session that is over: 401, the RFC 6750 challenge, JSON, no service.
async fn assert_session_ended(resp: reqwest::Response, case: &str) {
    assert_eq!(resp.status(), 401, "{case}");
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="session ended""#,
        "{case}"
    );
    let body = json(resp).await;
    assert_eq!(body["status"], 401, "{case}");
    assert!(body["request_id"].is_string(), "{case}");
    assert!(
        body.get("service").is_none(),
        "{case}: reached the service: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_current_token_passes_and_a_new_login_ends_the_old_one() {
    let world = World::new().await;
    let gw = world.gateway(&[
        ("JWT_SESSION_CHECK", "current"),
        ("JWT_SESSION_CACHE_MS", "300"),
    ]);
    let first = token(&world.key, "user-1", "login-1");
    let _: () = redis_cmd(&world.redis, &["SET", "user-1:access", &first, "EX", "900"]).await;

    let resp = with_token(&gw, "/core/orders", &first).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["headers"]["x-user-id"], "user-1");

    // No session stored for the user: refused.
    let nobody = token(&world.key, "user-2", "login-9");
    assert_session_ended(with_token(&gw, "/core/orders", &nobody).await, "no key").await;

    // The user logs in elsewhere: the auth service stores the new token.
    let second = token(&world.key, "user-1", "login-2");
    let _: () = redis_cmd(
        &world.redis,
        &["SET", "user-1:access", &second, "EX", "900"],
    )
    .await;
    let changed = Instant::now();
    loop {
        let resp = with_token(&gw, "/core/orders", &first).await;
        if resp.status() == 401 {
            assert_session_ended(resp, "superseded").await;
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            changed.elapsed() < Duration::from_millis(300 + 700),
            "the superseded token still works {:?} after the new login",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(with_token(&gw, "/core/orders", &second).await.status(), 200);

    // A WebSocket upgrade with the superseded token (Phoenix's ?token=): no tunnel.
    let url = format!(
        "ws://127.0.0.1:{}/socket/websocket?token={first}&vsn=2.0.0",
        gw.port
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("the upgrade was not refused: {other:?}"),
    }
    let url = format!(
        "ws://127.0.0.1:{}/socket/websocket?token={second}&vsn=2.0.0",
        gw.port
    );
    support::ws_connect_echoing(&url, "current token").await;

    assert_counted(
        &gw,
        r#"beat_gateway_jwt_refusals_total{reason="session_ended"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_id_is_refused() {
    let world = World::new().await;
    let gw = world.gateway(&[("JWT_REVOKED_KEY", "revoked:{jti}")]);
    let kept = token(&world.key, "user-3", "login-kept");
    let revoked = token(&world.key, "user-3", "login-gone");
    let _: () = redis_cmd(&world.redis, &["SET", "revoked:login-gone", "1"]).await;
    assert_eq!(with_token(&gw, "/core/x", &kept).await.status(), 200);
    assert_session_ended(with_token(&gw, "/core/x", &revoked).await, "revoked").await;
    drop(gw);

    // Both checks at once; something else than a string at a user's key ends that
    // session only, not the store.
    let gw = world.gateway(&[
        ("JWT_SESSION_CHECK", "current"),
        ("JWT_REVOKED_KEY", "revoked:{jti}"),
    ]);
    let _: () = redis_cmd(&world.redis, &["SET", "user-3:access", &kept]).await;
    let _: () = redis_cmd(&world.redis, &["HSET", "user-8:access", "token", "x"]).await;
    let odd = token(&world.key, "user-8", "login-odd");
    assert_session_ended(with_token(&gw, "/core/x", &odd).await, "a hash at the key").await;
    assert_eq!(with_token(&gw, "/core/x", &kept).await.status(), 200);
    let again = token(&world.key, "user-3", "login-gone");
    let _: () = redis_cmd(&world.redis, &["SET", "user-3:access", &again]).await;
    assert_session_ended(
        with_token(&gw, "/core/x", &again).await,
        "current, but revoked",
    )
    .await;
    assert_counted(
        &gw,
        r#"beat_gateway_jwt_refusals_total{reason="revoked"} 1"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_client_costs_redis_about_one_lookup_a_second() {
    let world = World::new().await;
    let gw = world.gateway(&[("JWT_SESSION_CHECK", "current")]);
    let t = token(&world.key, "user-4", "login-1");
    let _: () = redis_cmd(&world.redis, &["SET", "user-4:access", &t]).await;
    let before = gets(&world.redis).await;
    let start = Instant::now();
    // A fixed number of requests, for as long as they take (at least 2 s): about one
    // lookup per second of it, whatever the machine's speed.
    let mut requests = 0;
    while requests < 200 || start.elapsed() < Duration::from_secs(2) {
        assert_eq!(with_token(&gw, "/core/x", &t).await.status(), 200);
        requests += 1;
    }
    let took = start.elapsed();
    let lookups = gets(&world.redis).await - before;
    eprintln!("{requests} requests in {took:?}: {lookups} session lookups");
    let seconds = took.as_secs() + 1;
    assert!(
        (1..=seconds + 1).contains(&lookups),
        "{lookups} lookups for {requests} requests in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_closed_refuses_503_and_open_lets_the_signature_decide() {
    let mut world = World::new().await;
    let closed = world.gateway(&[("JWT_SESSION_CHECK", "current")]);
    let open = world.gateway(&[
        ("JWT_SESSION_CHECK", "current"),
        ("JWT_SESSION_FAIL", "open"),
    ]);
    let t = token(&world.key, "user-5", "login-1");
    let _: () = redis_cmd(&world.redis, &["SET", "user-5:access", &t]).await;
    for gw in [&closed, &open] {
        assert_eq!(with_token(gw, "/core/x", &t).await.status(), 200);
    }
    world.redis.kill();
    // Past the cache time: the next request must ask Redis.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let resp = with_token(&closed, "/core/x", &t).await;
        assert_eq!(resp.status(), 503);
        let body = json(resp).await;
        assert_eq!(body["error"], "session store unavailable", "{body}");
        assert!(body.get("service").is_none(), "forwarded: {body}");
        assert_eq!(with_token(&open, "/core/x", &t).await.status(), 200);
    }
    // Requests without auth are not its concern; readiness does not depend on it.
    for gw in [&closed, &open] {
        let ready = support::admin_get(gw, "/readyz").await;
        assert_eq!(ready.status(), 200);
        assert_eq!(json(ready).await["session_store"], "unavailable");
        let routes = support::admin_get(gw, "/routes").await;
        assert_eq!(json(routes).await["session_store"], "unavailable");
        assert_counted(gw, "beat_gateway_session_store_unavailable_total").await;
    }
    assert_counted(
        &closed,
        r#"beat_gateway_jwt_refusals_total{reason="session_store_unavailable"}"#,
    )
    .await;
    assert!(
        closed
            .log()
            .matches("session store: Redis unavailable")
            .count()
            == 1,
        "logged once: {}",
        closed.log()
    );
}

#[test]
fn the_session_check_needs_its_redis() {
    let out = support::run_bin(&["--check"]);
    assert!(out.status.success());
    let out = std::process::Command::new(support::BIN)
        .args(["--check"])
        .env("JWT_SESSION_CHECK", "current")
        .env_remove("JWT_SESSION_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JWT_SESSION_REDIS_URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
