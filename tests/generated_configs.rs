//! Generated `services.json` files that use every field: each one `--check` accepts, and a
//! sample of them starts and routes.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::{Gateway, run_bin, write_config};

/// One service using a random selection of the optional fields.
fn service() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        any::<bool>(),
        prop_oneof![
            Just(String::new()),
            Just(r#", "lb": "hash:ip""#.to_owned()),
            Just(r#", "lb": "hash:x-user""#.to_owned()),
        ],
        prop_oneof![
            Just(String::new()),
            Just(r#", "health_check": {"interval_ms": 1000, "timeout_ms": 200}"#.to_owned()),
            Just(r#", "health_check": {"path": "/health"}"#.to_owned()),
        ],
        prop_oneof![
            Just(String::new()),
            (1u64..10_000_000).prop_map(|n| format!(r#", "max_body_bytes": {n}"#)),
        ],
        prop_oneof![
            Just(String::new()),
            (1u32..100, 1u32..50).prop_map(|(r, b)| format!(
                r#", "rate_limit": {{"requests_per_second": {r}, "burst": {b}, "key": "ip"}}"#
            )),
        ],
        prop_oneof![
            Just(String::new()),
            Just(r#", "cors": {"origins": ["https://app.example"], "max_age": 60}"#.to_owned()),
        ],
        1usize..4,
    )
        .prop_map(|(version, strip, lb, health, body, limit, cors, instances)| {
            let version = match version {
                Some(v) if strip => format!(r#", "api_version": {v}, "skip_prefix": ["/health"]"#),
                _ => String::new(),
            };
            let upstreams: Vec<String> = (0..instances)
                .map(|i| format!(r#"{{"host": "127.0.0.{}", "port": {}}}"#, i + 1, 40000 + i))
                .collect();
            format!(
                r#""upstreams": [{}], "strip_prefix": {strip}, "connect_timeout_ms": 500, "read_timeout_ms": 2000{version}{lb}{health}{body}{limit}{cors}"#,
                upstreams.join(", ")
            )
        })
}

fn services_file() -> impl Strategy<Value = String> {
    proptest::collection::vec(service(), 1..5).prop_map(|services| {
        let entries: Vec<String> = services
            .iter()
            .enumerate()
            .map(|(i, fields)| format!(r#"{{"name": "svc-{i}", "prefix": "/svc{i}", {fields}}}"#))
            .collect();
        format!(r#"{{"services": [{}]}}"#, entries.join(",\n"))
    })
}

#[test]
fn generated_configs_pass_check_and_a_sample_starts() {
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let started = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&services_file(), |text| {
            let path = write_config(&text);
            let out = run_bin(&["--check", "--services", path.to_str().unwrap()]);
            prop_assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                // Starts, and answers: /svc0 has no live instance behind it (502/503),
                // anything else is no route (404).
                let gw = Gateway::start(&text);
                let rt = tokio::runtime::Runtime::new().unwrap();
                let (routed, unrouted) = rt.block_on(async {
                    (
                        support::status(&gw, "/svc0/x", &[]).await,
                        support::status(&gw, "/nowhere", &[]).await,
                    )
                });
                prop_assert!(matches!(routed, 502 | 503), "{routed}: {text}");
                prop_assert_eq!(unrouted, 404);
            }
            Ok(())
        })
        .unwrap();
}
