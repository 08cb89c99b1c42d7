//! The baseline for "what do our features cost": a bare Pingora proxy that only forwards,
//! stripping the first path segment the way a prefix route does and nothing else: no request
//! id, no added headers, no access log, no route table. Same Pingora settings as the gateway.
//!
//!   bare_proxy LISTEN_PORT UPSTREAM_PORT
//!
//! It uses the gateway's allocator (mimalloc) so that the comparison measures features only.

use async_trait::async_trait;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        _c: &mut (),
    ) -> Result<()> {
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let rest = pq[1..].find('/').map_or("/", |i| &pq[i + 1..]).to_owned();
        let uri = rest
            .parse()
            .or_else(|_| Error::e_explain(ErrorType::HTTPStatus(400), "bad path"))?;
        req.set_uri(uri);
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>().ok());
    let (Some(Some(listen)), Some(Some(upstream))) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_PORT UPSTREAM_PORT");
        std::process::exit(2);
    };
    let mut conf = ServerConf::new().expect("default Pingora configuration");
    conf.threads = 1;
    conf.grace_period_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare {
        upstream: ([127, 0, 0, 1], upstream).into(),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(proxy);
    server.run_forever();
}
