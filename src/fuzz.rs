//! Fuzz targets and property tests for the pure parts a hostile client reaches: the
//! request checks, the router and its path rewrite, request-id sanitising, and
//! `services.json` parsing and validation.
//!
//! Each `fuzz_*` test is a bolero target. Under `cargo test` it replays its checked-in
//! corpus (`src/__fuzz__/fuzz::fuzz_<name>/corpus/`) and then runs random inputs for one
//! second (the suite's bounded run). For a longer run on stable Rust:
//!
//! ```text
//! BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test --release --lib fuzz_ -- --nocapture --test-threads 4
//! ```
//!
//! (`just fuzz 10`), which prints how many inputs each target ran.
//! A failure prints the input and a `BOLERO_RANDOM_SEED` to replay it. The `prop_*` tests
//! are proptest properties with generated, structured inputs.

use std::sync::atomic::{AtomicU64, Ordering};

use pingora_http::RequestHeader;
use proptest::prelude::*;

use crate::config;
use crate::proxy::checks;
use crate::proxy::head::HeadFacts;
use crate::proxy::request_id;
use crate::router::{RouteTable, check_path};

/// Routes the router targets run against: stripped and not, versioned, nested, `/`.
const ROUTES: &str = r#"{"services": [
  {"name": "auth", "host": "127.0.0.1", "port": 2000, "prefix": "/auth", "strip_prefix": true,
   "api_version": 1, "skip_prefix": ["/.well-known", "/health"]},
  {"name": "core", "host": "127.0.0.1", "port": 3000, "prefix": "/core", "strip_prefix": true},
  {"name": "core-admin", "host": "127.0.0.1", "port": 3001, "prefix": "/core/admin"},
  {"name": "socket", "host": "127.0.0.1", "port": 4000, "prefix": "/socket"},
  {"name": "root", "host": "127.0.0.1", "port": 5000, "prefix": "/", "strip_prefix": true}
]}"#;

fn table() -> RouteTable {
    RouteTable::new(config::parse("fuzz routes", ROUTES).expect("the fuzz routes are valid"))
}

/// A path segment that is `.` or `..`, written plainly or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    })
}

/// The router and the rewrite on one path: never a panic; a matched route's prefix is a
/// segment prefix of the path; a path the checks accept is rewritten without
/// dot-segments, starting with `/`.
fn route_one(table: &RouteTable, path: &str) {
    let Some(route) = table.lookup(path) else {
        return;
    };
    let p = route.prefix.as_str();
    assert!(
        p == "/" || path == p || path.starts_with(&format!("{p}/")),
        "{path:?} matched {p:?} off a segment boundary"
    );
    let rewritten = route.upstream_path(path);
    if check_path(path).is_ok() {
        assert!(rewritten.starts_with('/'), "{path:?} -> {rewritten:?}");
        assert!(!has_dot_segment(&rewritten), "{path:?} -> {rewritten:?}");
    }
}

/// A raw head, split into a request line and header lines the way the checks' own tests
/// do (heads Pingora would refuse to parse never reach the checks, so only what splits
/// cleanly is checked): never a panic; an accepted request has a path without
/// dot-segments or `//` and its query exactly as sent.
fn check_one(raw: &[u8]) {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let Ok(head) = std::str::from_utf8(&raw[..end]) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(mut req) = RequestHeader::build(method, target.as_bytes(), None) else {
        return;
    };
    match version {
        "HTTP/1.1" => {}
        "HTTP/1.0" => req.set_version(http::Version::HTTP_10),
        _ => return,
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return;
        };
        if req.append_header(name.to_owned(), value.trim()).is_err() {
            return;
        }
    }
    let facts = HeadFacts::scan(&req.headers);
    if let Ok(checked) = checks::check(&req, &raw[..end + 4], &facts) {
        assert!(checked.path.starts_with('/'), "{:?}", checked.path);
        assert!(check_path(&checked.path).is_ok(), "{:?}", checked.path);
        assert!(!checked.path.contains("//"), "{:?}", checked.path);
        let sent_query = target.split_once('?').map(|(_, q)| q);
        assert_eq!(checked.query, sent_query, "the query changed: {target:?}");
    }
}

/// A client's request id: never a panic; what comes back is safe to echo (short, plain
/// characters), and a safe id is kept as sent.
fn request_id_one(raw: &[u8]) {
    let incoming = http::HeaderValue::from_bytes(raw).ok();
    let id = request_id::accept_or_generate(incoming.as_ref());
    let id = id.as_str();
    assert!(!id.is_empty() && id.len() <= 128, "{id:?}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        "{id:?}"
    );
    let safe = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        assert_eq!(id.as_bytes(), raw);
    }
}

/// A services file: never a panic; one that validates builds a route table with a route
/// per service, each found by its own prefix.
fn config_one(text: &str) {
    if let Ok(services) = config::parse("fuzz.json", text) {
        let prefixes: Vec<String> = services.iter().map(|s| s.prefix.clone()).collect();
        let table = RouteTable::new(services);
        assert_eq!(table.routes().len(), prefixes.len());
        for p in &prefixes {
            assert_eq!(table.lookup(p).map(|r| &r.prefix), Some(p));
        }
    }
}

/// Counts a target's inputs, and prints the count when the run ends (`--nocapture`).
struct Runs(&'static str, AtomicU64);

impl Runs {
    fn tick(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        eprintln!("fuzz {}: {} inputs", self.0, self.1.load(Ordering::Relaxed));
    }
}

#[test]
fn fuzz_router() {
    let table = table();
    let runs = Runs("router", AtomicU64::new(0));
    bolero::check!().for_each(|input: &[u8]| {
        runs.tick();
        if let Ok(path) = std::str::from_utf8(input) {
            route_one(&table, path);
        }
    });
}

#[test]
fn fuzz_checks() {
    let runs = Runs("checks", AtomicU64::new(0));
    bolero::check!().for_each(|input: &[u8]| {
        runs.tick();
        // As a whole head (the corpus: real and hostile heads), and as a target plus
        // header lines inside a valid skeleton (random bytes rarely make a head).
        check_one(input);
        let (target, lines) = match input.iter().position(|&b| b == 0xff) {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (input, &[][..]),
        };
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: gw\r\n");
        raw.extend_from_slice(lines);
        raw.extend_from_slice(b"\r\n\r\n");
        check_one(&raw);
    });
}

#[test]
fn fuzz_request_id() {
    let runs = Runs("request_id", AtomicU64::new(0));
    bolero::check!().for_each(|input: &[u8]| {
        runs.tick();
        request_id_one(input);
    });
}

#[test]
fn fuzz_config() {
    let runs = Runs("config", AtomicU64::new(0));
    bolero::check!().for_each(|input: &[u8]| {
        runs.tick();
        if let Ok(text) = std::str::from_utf8(input) {
            config_one(text);
        }
    });
}

/// Paths built from the pieces that matter: route prefixes, dots (plain and encoded),
/// slashes, encoded slashes and NULs, ordinary segments.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("/auth".to_owned()),
        Just("/core".to_owned()),
        Just("/admin".to_owned()),
        Just("/socket".to_owned()),
        Just("/.".to_owned()),
        Just("/..".to_owned()),
        Just("/%2e".to_owned()),
        Just("/%2E%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("%00".to_owned()),
        Just("\\".to_owned()),
        Just("/api".to_owned()),
        Just("/health".to_owned()),
        "[a-z0-9._~-]{0,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn prop_router_rewrite_is_safe(path in path_strategy()) {
        route_one(&table(), &path);
    }

    #[test]
    fn prop_checks_keep_the_query_and_refuse_dot_segments(
        path in path_strategy(),
        query in proptest::option::of("[a-zA-Z0-9=&%+._~-]{0,20}"),
        host in "[a-z0-9.:-]{1,12}",
    ) {
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        check_one(raw.as_bytes());
    }

    #[test]
    fn prop_request_ids_are_safe(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        request_id_one(&raw);
    }

    #[test]
    fn prop_valid_services_build_tables(
        prefixes in proptest::collection::hash_set("/[a-z]{1,6}(/[a-z]{1,4})?", 1..6),
        strip in any::<bool>(),
        version in proptest::option::of(1u32..5),
    ) {
        let services: Vec<String> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let version = version.map_or(String::new(), |v| format!(r#", "api_version": {v}"#));
                format!(
                    r#"{{"name": "s{i}", "host": "127.0.0.1", "port": {}, "prefix": "{p}", "strip_prefix": {strip}{version}}}"#,
                    2000 + i
                )
            })
            .collect();
        let text = format!(r#"{{"services": [{}]}}"#, services.join(","));
        let parsed = config::parse("generated.json", &text);
        prop_assert!(parsed.is_ok(), "{text}: {:?}", parsed.err());
        config_one(&text);
    }
}
