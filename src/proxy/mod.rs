//! The request pipeline: Pingora's `ProxyHttp` callbacks, in the order a request meets them.
//! Each step is a call into a module of its own; read this file to see everything a request
//! goes through.

mod access_log;
mod ctx;
mod framing;
mod headers;
mod request_id;
mod respond;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use ctx::RequestCtx;

use crate::router::{Route, RouteTable, check_path};
use crate::upstream::Upstream;

/// The gateway: the route table and, index for index, each route's upstream.
pub struct Gateway {
    routes: RouteTable,
    upstreams: Vec<Upstream>,
}

impl Gateway {
    pub fn new(routes: RouteTable) -> Self {
        let upstreams = routes.routes().iter().map(Upstream::new).collect();
        Gateway { routes, upstreams }
    }

    fn route(&self, ctx: &RequestCtx) -> Option<(&Route, &Upstream)> {
        let i = ctx.route?;
        Some((&self.routes.routes()[i], &self.upstreams[i]))
    }

    /// Answer the request ourselves and stop the pipeline. A body the client may still be
    /// sending was not read, so the connection is not reused.
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        message: &str,
    ) -> Result<bool> {
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        respond::error(session, status, message, &ctx.request_id).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// No downstream modules. Pingora's default registers a response-compression module
    /// (disabled) that still runs on every request and every body chunk; the gateway passes
    /// bodies through as the services sent them.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    /// Request id, smuggling guard, path safety, route lookup, upstream URI.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = request_id::accept_or_generate(req.headers.get(&headers::X_REQUEST_ID));

        if framing::has_conflicting_framing(session) {
            return self
                .reject(
                    session,
                    ctx,
                    400,
                    "both Transfer-Encoding and Content-Length are set",
                )
                .await;
        }
        let req = session.req_header();
        let uri = &req.uri;
        if let Err(e) = check_path(uri.path()) {
            return self.reject(session, ctx, 400, e.message()).await;
        }
        let Some(route) = self.routes.lookup(uri.path()) else {
            return self
                .reject(session, ctx, 404, "no route for this path")
                .await;
        };
        ctx.route = Some(route.index);

        let path = route.upstream_path(uri.path());
        // Only origin-form is sent upstream (an absolute-form target is rewritten); the
        // query goes byte for byte as received.
        if path != uri.path() || !req.raw_path().starts_with(b"/") {
            let mut target = path.into_owned();
            if let Some(q) = uri.query() {
                target.push('?');
                target.push_str(q);
            }
            match target.parse() {
                Ok(u) => ctx.upstream_uri = Some(u),
                Err(_) => return self.reject(session, ctx, 400, "invalid request path").await,
            }
        }
        Ok(false)
    }

    /// The matched route's upstream, resolved without blocking.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some((_, upstream)) = self.route(ctx) else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a route");
        };
        let addr = upstream
            .address()
            .await
            .or_else(|e| Error::e_explain(ErrorType::HTTPStatus(502), e.to_string()))?;
        ctx.upstream_addr = Some(addr);
        Ok(upstream.peer(addr, session.is_upgrade_req()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        if let Some((_, upstream)) = self.route(ctx) {
            upstream.connect_failed();
        }
        e
    }

    /// Rewritten URI and forwarding headers. Hop-by-hop headers were already removed by
    /// Pingora's upstream request policy, which runs before this.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.take() {
            upstream_request.set_uri(uri);
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        headers::to_upstream(upstream_request, client_ip, &ctx.request_id)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::strip_hop_by_hop(upstream_response);
        headers::to_client(upstream_response, &ctx.request_id)
    }

    /// Every failure after routing ends here: a JSON 502/504 (or 4xx for client errors).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, message) = respond::classify(e);
        if ctx.request_id.is_empty() {
            ctx.request_id = request_id::accept_or_generate(None);
        }
        if status > 0 && session.response_written().is_none() {
            let written = respond::error(session, status, message, &ctx.request_id).await;
            if let Err(write_error) = written {
                log::debug!("could not send the {status} response: {write_error}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Pingora's own error line is replaced by the access log line, which carries the error
    /// along with the route, upstream and request id.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let (route, upstream) = match self.route(ctx) {
            Some((r, u)) => (Some(r), u.target()),
            None => (None, "-"),
        };
        access_log::write(session, ctx, route, upstream, e);
    }
}
