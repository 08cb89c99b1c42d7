//! The floor for "what do the gateway's features cost": a plain Pingora `ProxyHttp` doing
//! the gateway's per-request job in the fewest lines, tuned as the gateway is, so that the
//! difference between the two is what the gateway adds on top (its checks, route table,
//! JSON errors, access line, resolver, hop-by-hop rules).
//!
//! Per request: strip the first path segment (as a prefix route does), keep or mint an
//! `X-Request-ID` and send it both ways, `X-Forwarded-For/Proto/Host` upstream, the two
//! security headers downstream. Tuning, as in the gateway: mimalloc, one worker without
//! work stealing, no compression module, a peer built once and cloned per request, the
//! listener's L4 buffers read 0 / write 1460, keep-alive 75 s.
//!
//! With `timeouts`, the upstream peer also gets the gateway's default connect (3 s), read
//! and write (60 s) timeouts, which any deployment that answers a stalled service with 504
//! sets: the bench runs it as `pingora-bare-timeouts`, to show what Pingora's timers cost
//! apart from the gateway's own work. With `trace` as well, each request also gets a
//! freshly started W3C `traceparent` (random ids, as the gateway starts one when the client
//! sent none): `pingora-bare-required`, the two per-request costs that the gateway's issues
//! require and that are Pingora's work (its timers, one more header insert), before any
//! logic of the gateway's own.
//!
//!   bare_proxy LISTEN_PORT UPSTREAM_PORT [timeouts] [trace]

use async_trait::async_trait;
use pingora_core::listeners::ListenerConfig;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    peer: HttpPeer,
    trace: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = String;

    fn new_ctx(&self) -> String {
        String::new()
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, id: &mut String) -> Result<bool> {
        *id = match session.req_header().headers.get("x-request-id") {
            Some(v) if !v.is_empty() && v.len() <= 128 => v.to_str().unwrap_or("-").to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(75));
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _s: &mut Session, _id: &mut String) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        id: &mut String,
    ) -> Result<()> {
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let rest = pq[1..].find('/').map_or("/", |i| &pq[i + 1..]).to_owned();
        let uri = rest
            .parse()
            .or_else(|_| Error::e_explain(ErrorType::HTTPStatus(400), "bad path"))?;
        req.set_uri(uri);
        req.insert_header("x-request-id", id.as_str())?;
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = ip {
            req.insert_header("x-forwarded-for", ip.to_string())?;
        }
        req.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = req.headers.get("host").cloned() {
            req.insert_header("x-forwarded-host", host)?;
        }
        if self.trace {
            req.insert_header("traceparent", traceparent())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        id: &mut String,
    ) -> Result<()> {
        resp.insert_header("x-request-id", id.as_str())?;
        resp.insert_header("x-frame-options", "DENY")?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        Ok(())
    }
}

/// A started trace's `traceparent`: `00-` + 32 hex + `-` + 16 hex + `-01`, the ids written
/// into a fixed buffer (as the gateway does: `format!` would cost ~2,000 instructions).
fn traceparent() -> http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (trace_id, parent_id) = (rand::random::<u128>().max(1), rand::random::<u64>().max(1));
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for i in 0..32 {
        text[3 + i] = HEX[(trace_id >> (124 - 4 * i)) as usize & 0xf];
    }
    for i in 0..16 {
        text[36 + i] = HEX[(parent_id >> (60 - 4 * i)) as usize & 0xf];
    }
    http::HeaderValue::from_bytes(&text).unwrap_or(http::HeaderValue::from_static("-"))
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>().ok());
    let (Some(Some(listen)), Some(Some(upstream))) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_PORT UPSTREAM_PORT [timeouts] [trace]");
        std::process::exit(2);
    };
    let flags: Vec<String> = std::env::args().skip(3).collect();
    let timeouts = flags.iter().any(|a| a == "timeouts");
    let trace = flags.iter().any(|a| a == "trace");
    let Some(mut conf) = ServerConf::new() else {
        eprintln!("bare_proxy: no default Pingora configuration");
        std::process::exit(2);
    };
    conf.threads = 1;
    conf.work_stealing = false;
    conf.grace_period_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], upstream).into();
    let mut peer = HttpPeer::new(upstream, false, String::new());
    peer.options.idle_timeout = Some(std::time::Duration::from_secs(30));
    if timeouts {
        peer.options.connection_timeout = Some(std::time::Duration::from_secs(3));
        peer.options.read_timeout = Some(std::time::Duration::from_secs(60));
        peer.options.write_timeout = Some(std::time::Duration::from_secs(60));
    }
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { peer, trace });
    proxy.add_listener(
        ListenerConfig::tcp(format!("127.0.0.1:{listen}"))
            .l4_buffer(L4BufferSettings::new(0, 1460)),
    );
    server.add_service(proxy);
    server.run_forever();
}
