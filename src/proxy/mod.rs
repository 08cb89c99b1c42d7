//! The request path: one Pingora [`ProxyHttp`], read top to bottom as the table of
//! contents of a request. Pingora reads and frames the messages, keeps connections alive on
//! both sides, pools upstream connections and tunnels upgrades; each phase here calls a
//! few named functions of the modules below. (Connection limits act before any of this:
//! [`crate::edge::connections`].)
//!
//! 1. `request_head_error_response`: a head Pingora cannot read (malformed, or not
//!    complete within `PROXY_HEADER_TIMEOUT_SECONDS`) gets the gateway's JSON 400/408.
//! 2. `early_request_filter`: the request id ([`request_id`]), TLS or not, pipelining on.
//! 3. `request_filter`: the gateway's checks ([`checks`]), the route ([`crate::router`]),
//!    CORS preflights, the route's token check ([`crate::edge::auth`]), its rate limit,
//!    a declared body over `max_body_bytes` (413), the body timeout, `100 Continue`, the
//!    client keep-alive; refusals answer here.
//! 4. `request_body_filter`: `max_body_bytes` for bodies without a declared length.
//! 5. `upstream_peer`: the route's peer at the address our resolver has
//!    ([`crate::upstream`]).
//! 6. `upstream_request_filter`: the rewritten target, hop-by-hop and client-sent identity
//!    headers out, request id, verified identity and `X-Forwarded-*` in ([`headers`]).
//! 7. `upstream_response_filter` and `response_filter`: a response head over 64 KiB
//!    refused, hop-by-hop out, request id, security, CORS, `RateLimit-*` and HSTS headers
//!    in, HTTP/1.0 clients answered in their framing.
//! 8. `fail_to_connect`, `error_while_proxy`, `fail_to_proxy`: passive health, retries,
//!    every failure answered as JSON 502/503/504/4xx ([`errors`]).
//! 9. `logging`: one access line and the metrics ([`access_log`]).

mod access_log;
pub(crate) mod checks;
mod ctx;
mod errors;
pub(crate) mod head;
mod headers;
pub(crate) mod request_id;
mod trace;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub use checks::MAX_REQUEST_LINE;
pub use ctx::RequestCtx;
use errors::Reply;

use crate::config::{Balance, Mode};
use crate::edge::auth::{self, Rejected, session};
use crate::edge::cors::{self, Decision, Policy};
use crate::live::{Live, Table};
use crate::metrics;
use crate::upstream::Upstream;
use trace::Trace;

/// Largest response head taken from a service (nginx's `proxy_buffer_size` is 4-8 KiB;
/// Pingora allows 1 MiB): larger is a 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The gateway: the live table (routes and, index for index, their upstreams, limits and
/// metrics) and what does not change on reload.
pub struct Gateway {
    live: Arc<Live>,
    /// A client connection with no request for this long is closed (seconds).
    keepalive_seconds: u64,
    /// The CORS policy of routes without their own, and of requests no route matched.
    global_cors: Option<Arc<Policy>>,
    /// `Strict-Transport-Security` for responses on the TLS listener, when configured.
    hsts: Option<HeaderValue>,
    /// A request body that sends nothing for this long gets 408 (HTTP/1).
    body_timeout: Duration,
    /// Header names with `_` are forwarded (`PROXY_ALLOW_UNDERSCORE_HEADERS`); identity
    /// headers spelled with `_` never are.
    allow_underscore_headers: bool,
}

impl Gateway {
    pub fn new(
        live: Arc<Live>,
        (keepalive, body_timeout): (Duration, Duration),
        global_cors: Option<Policy>,
        hsts_seconds: Option<u64>,
    ) -> Self {
        Gateway {
            body_timeout,
            live,
            keepalive_seconds: keepalive.as_secs().max(1),
            global_cors: global_cors.map(Arc::new),
            hsts: hsts_seconds.and_then(|s| HeaderValue::try_from(format!("max-age={s}")).ok()),
            allow_underscore_headers: false,
        }
    }

    /// Forward header names with underscores (dropped by default, as nginx does).
    pub fn allow_underscore_headers(mut self, allow: bool) -> Self {
        self.allow_underscore_headers = allow;
        self
    }
}

/// What routing found out for the later steps of `request_filter`.
struct Routed {
    /// The client waits for `100 Continue`.
    expect_continue: bool,
    /// The body's declared length is over the route's `max_body_bytes`.
    too_large: bool,
    /// The route's auth mode for this path (when not off), and the token sent, if any.
    auth: Option<(Mode, Option<String>)>,
    /// A CORS preflight: the headers of its 204, or `Err` for an origin not allowed.
    preflight: Option<Result<Vec<(&'static str, HeaderValue)>, ()>>,
}

/// Why a request was refused a 401 (or, for a valid token without what the route asks,
/// a 403).
enum Unauthorized {
    /// No token on a route that requires one.
    Missing,
    /// A token that failed verification, and why (for the log and metrics only).
    Invalid(Rejected),
    /// A valid token whose role or scopes the route does not accept.
    Forbidden,
    /// A valid token that is not a live session (ended, revoked), or whose session the
    /// store could not check.
    Session(session::Refusal),
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context inside its per-request future, which it moves
    /// (copies) twice per request; a pointer there instead of ~450 bytes.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::default()
    }

    /// No default modules: Pingora's would add response compression, which a gateway in
    /// front of services that compress (or not) on their own has no business doing.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn request_head_error_response(&self, e: &Error) -> Option<(ResponseHeader, Bytes)> {
        let reply = errors::classify_head(e);
        let request_id = request_id::accept_or_generate(None);
        access_log::unreadable_head(reply, &request_id, e);
        errors::response(reply, &request_id, true).ok()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let incoming = session.req_header().headers.get(&request_id::HEADER);
        ctx.request_id = request_id::accept_or_generate(incoming);
        ctx.inflight = metrics::inflight();
        if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            ctx.tls = true;
            ctx.hsts = self.hsts.clone();
        }
        // The request keeps this table to its end, whatever a reload swaps in meanwhile.
        ctx.table = Some(self.live.current());
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        // The table is taken out and put back rather than cloned: an `Arc` clone is two
        // atomic operations, and the table is needed in every phase.
        let table = ctx.table.take().unwrap_or_else(|| self.live.current());
        let routed = self.route(session, ctx, &table);
        ctx.table = Some(table);
        // Every answer the gateway gives itself is boxed (`Box::pin(refuse(..))`): inline,
        // their futures (a response written to the client) sized this phase's future,
        // which Pingora's `async_trait` copies into a box on every request, refused or not.
        let routed = match routed {
            Ok(routed) => routed,
            Err(reply) => return Box::pin(refuse(session, ctx, reply, None)).await,
        };
        // Preflights are the gateway's, before auth and rate limits.
        match routed.preflight {
            None => {}
            Some(Ok(headers)) => return Box::pin(preflight(session, ctx, &headers)).await,
            Some(Err(())) => {
                let reply = Reply {
                    status: 403,
                    message: "origin not allowed",
                };
                return Box::pin(refuse(session, ctx, reply, None)).await;
            }
        }
        // Token checks and rate limits may wait on a JWKS fetch or Redis: boxed too, and
        // only when a route uses them.
        if let Some((mode, token)) = routed.auth
            && let Err(why) = Box::pin(self.authenticate(mode, token, ctx)).await
        {
            return Box::pin(unauthorized(session, ctx, why)).await;
        }
        let limited = ctx
            .route
            .filter(|&r| ctx.table.as_ref().is_some_and(|t| t.limits.limits(r)));
        if let Some(route) = limited
            && let Some(reply) = Box::pin(self.rate_limit(session, ctx, route)).await
        {
            return Box::pin(refuse(session, ctx, reply, None)).await;
        }
        if routed.too_large {
            let reply = Reply {
                status: 413,
                message: "request body too large",
            };
            return Box::pin(refuse(session, ctx, reply, None)).await;
        }
        if !session.is_body_empty() && !ctx.websocket {
            // Per read: a body that stalls this long ends with 408 (a WebSocket's tunnel
            // is never cut for being quiet).
            session.set_read_timeout(Some(self.body_timeout));
        }
        if ctx.http10 {
            // No 1xx to an HTTP/1.0 client (RFC 9110 §15.2): a service's 103 Early Hints
            // are dropped; its final answer goes through.
            session.set_ignore_info_resp(true);
        }
        if routed.expect_continue && !session.is_body_empty() {
            Box::pin(session.write_continue_response()).await?;
        }
        // Pingora keeps HTTP/1.1 connections open forever by default (or for as long as a
        // client's `Keep-Alive: timeout=` asks): the gateway decides.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.keepalive_seconds));
        }
        close_if_shutting_down(session, &self.live);
        Ok(false)
    }

    /// A route's `max_body_bytes` holds for bodies without a declared length too
    /// (chunked, HTTP/2): the chunk that crosses it is not forwarded; the client gets 413
    /// unless the service has answered already.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let (Some(limit), Some(chunk)) = (ctx.body_limit, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > limit {
                ctx.refusal = Some(Cow::Borrowed("request body too large"));
                *body = None;
                return Error::e_explain(
                    pingora_core::ErrorType::HTTPStatus(413),
                    "request body too large",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        // A retry sends the body again from its start (Pingora's retry buffer passes
        // through `request_body_filter` again): count it afresh.
        ctx.body_bytes = 0;
        let upstream = self.upstream(ctx)?;
        let trusted = &self.live.shared().trusted_proxies;
        let key = selection_key(session, upstream.balance(), trusted);
        let peer = upstream
            .peer(&key, &ctx.tried)
            .await
            .map_err(errors::from_peer_error)?;
        ctx.upstream_addr = peer.address().as_inet().copied();
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let Ok(upstream) = self.upstream(ctx) {
            upstream.connected(ctx.upstream_addr);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // Cloned, not taken: a retried request comes through here again.
        if let Some(target) = &ctx.upstream_target {
            upstream_request.set_uri(target.clone());
        }
        if ctx.http10 {
            // The service speaks HTTP/1.1 to the gateway; the answer is re-framed for the
            // client in `response_filter`.
            upstream_request.set_version(http::Version::HTTP_11);
            if upstream_request.headers.get(http::header::HOST).is_none() {
                let host = self.upstream(ctx)?.target().to_owned();
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        if ctx.hop_by_hop {
            headers::strip_request_hop_by_hop(upstream_request, ctx.websocket)?;
        }
        if ctx.identity_headers {
            headers::strip_identity(upstream_request);
        }
        if ctx.underscore_headers {
            headers::strip_underscored(upstream_request, self.allow_underscore_headers);
        }
        if let Some(identity) = &ctx.identity {
            headers::set_identity(upstream_request, identity)?;
        }
        if let Some(traceparent) = ctx.trace.as_ref().and_then(Trace::started_header) {
            upstream_request.insert_header(&headers::TRACEPARENT, traceparent)?;
            if ctx.tracestate {
                upstream_request.remove_header("tracestate");
            }
        }
        let client_ip = client_ip(session);
        headers::set_forwarding(
            upstream_request,
            client_ip,
            &ctx.request_id,
            ctx.forwarded_for,
            ctx.tls,
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if headers::head_size(upstream_response) > MAX_RESPONSE_HEAD {
            // A head this size from a service is broken or hostile; Pingora would pass
            // up to 1 MiB of it on.
            let mut e = Error::explain(
                pingora_core::ErrorType::InvalidHTTPHeader,
                "the service's response head is over 64 KiB",
            );
            e.as_up();
            return Err(e);
        }
        headers::strip_response_hop_by_hop(upstream_response);
        if ctx.websocket && upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // Counted until the request (the tunnel) ends.
            ctx.tunnel = metrics::websocket();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if ctx.http10 && response.headers.get(http::header::CONTENT_LENGTH).is_none() {
            // An HTTP/1.0 client cannot read chunked coding: the body ends with the
            // connection instead.
            response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        close_if_shutting_down(session, &self.live);
        decorate(response, ctx)?;
        headers::set_client_headers(response, &ctx.request_id)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: any method may go to another instance, once.
        let mut e = e;
        let table = ctx.table.clone();
        if let Ok(upstream) = upstream_in(table.as_deref(), ctx.route) {
            upstream.connect_failed(ctx.upstream_addr);
            if let Some(addr) = ctx.upstream_addr {
                ctx.tried.push(addr);
            }
            if ctx.tried.len() == 1 && upstream.has_other(ctx.upstream_addr, &ctx.tried) {
                e.set_retry(true);
            }
        }
        e
    }

    /// After bytes went upstream, only an idempotent request without a body may be sent
    /// again (Pingora's default also retries small bodies it buffered); a retry goes to
    /// another instance when there is one.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<RequestCtx>,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent() && session.is_body_empty();
        if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        let table = ctx.table.clone();
        if e.retry()
            && let Ok(upstream) = upstream_in(table.as_deref(), ctx.route)
            && upstream.has_other(ctx.upstream_addr, &ctx.tried)
            && let Some(addr) = ctx.upstream_addr
        {
            ctx.tried.push(addr);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let reply = errors::classify(e);
        if reply.status > 0 {
            // `write_error_response` also ends the client connection after it.
            if let Ok((mut resp, body)) = errors::response(reply, &ctx.request_id, true) {
                let _ = decorate(&mut resp, ctx);
                let _ = session.write_error_response(resp, body).await;
            }
        }
        FailToProxy {
            error_code: reply.status,
            can_reuse_downstream: false,
        }
    }

    /// Failures are in the access line (with their cause), so Pingora's own error line for
    /// each would say it twice.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &Box<RequestCtx>,
        _error: &Error,
    ) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        let current;
        let table = match &ctx.table {
            Some(table) => table,
            None => {
                current = self.live.current();
                &current
            }
        };
        let route = ctx.route.and_then(|i| {
            let route = table.routes.routes().get(i)?;
            Some((route, &**table.upstreams.get(i)?))
        });
        access_log::request(session, e, ctx, route);
        let status = access_log::status(session);
        let method = &session.req_header().method;
        table
            .metrics
            .request_done(ctx.route, method, status, ctx.start.elapsed());
        if let Some(kind) = e.and_then(errors::upstream_error_kind) {
            table.metrics.upstream_error(ctx.route, kind);
        }
    }
}

impl Gateway {
    /// Check the request, find its route, and what the route's auth needs.
    fn route(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        table: &Table,
    ) -> Result<Routed, Reply> {
        let req = session.req_header();
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes())
            .unwrap_or_default();
        let facts = head::HeadFacts::scan(&req.headers);
        ctx.trace = Some(Trace::accept_or_start(facts.traceparent));
        ctx.tracestate = facts.tracestate;
        // Refusals before a route is known answer under the global CORS policy.
        let cors = |route: Option<usize>| {
            let policy = route
                .and_then(|i| table.cors.get(i)?.as_ref())
                .or(self.global_cors.as_ref())?;
            let preflight = req.method == http::Method::OPTIONS && facts.preflight_method;
            Some(policy.decide(facts.origin, preflight, facts.preflight_headers))
        };
        let refuse_unrouted = |ctx: &mut RequestCtx, reply: Reply| {
            ctx.cors = cors(None).map(Decision::into_response_headers);
            reply
        };
        let checked = match checks::check(req, &raw, &facts) {
            Ok(checked) => checked,
            Err(r) => {
                let reply = Reply {
                    status: r.status,
                    message: r.message,
                };
                ctx.close_after_refusal = r.close;
                return Err(refuse_unrouted(ctx, reply));
            }
        };
        let Some(route) = table.routes.lookup(&checked.path) else {
            let reply = Reply {
                status: 404,
                message: "no route for this path",
            };
            return Err(refuse_unrouted(ctx, reply));
        };
        let mut preflight = None;
        match cors(Some(route.index)) {
            None => {}
            Some(Decision::Preflight(headers)) => preflight = Some(Ok(headers)),
            Some(Decision::Forbidden) => {
                ctx.cors = Some(Vec::new());
                preflight = Some(Err(()));
            }
            Some(decision) => ctx.cors = Some(decision.into_response_headers()),
        }
        let mut target = route.upstream_path(&checked.path).into_owned();
        if let Some(query) = checked.query {
            target.push('?');
            target.push_str(query);
        }
        let target = http::Uri::try_from(target).map_err(|_| Reply {
            status: 400,
            message: "invalid request target",
        })?;
        ctx.route = Some(route.index);
        ctx.upstream_target = Some(target);
        ctx.websocket = facts.upgrade && headers::is_websocket_upgrade(req);
        ctx.hop_by_hop = facts.hop_by_hop;
        ctx.forwarded_for = facts.forwarded_for;
        ctx.http10 = req.version == http::Version::HTTP_10;
        ctx.identity_headers = facts.identity;
        ctx.underscore_headers = facts.underscore;
        ctx.body_limit = route.max_body_bytes;
        let declared = facts
            .content_length
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let too_large = matches!((route.max_body_bytes, declared), (Some(max), Some(n)) if n > max);
        let mode = route.auth.mode_for(&route.prefix, &checked.path);
        let auth = (mode != Mode::Off).then(|| {
            let token = auth::token::find(&req.headers, checked.query, ctx.websocket);
            (mode, token.map(str::to_owned))
        });
        Ok(Routed {
            too_large,
            expect_continue: checked.expect_continue,
            auth,
            preflight,
        })
    }

    /// Verify the request's token for a route with auth on; on success the identity is
    /// in `ctx` for the service.
    async fn authenticate(
        &self,
        mode: Mode,
        token: Option<String>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Unauthorized> {
        let Some(token) = token else {
            return match mode {
                Mode::Required => Err(Unauthorized::Missing),
                _ => Ok(()),
            };
        };
        // Startup refuses routes with auth on when there is no verifier.
        let verifier = self.live.shared().verifier.as_ref().ok_or_else(|| {
            Unauthorized::Invalid(Rejected::new("no_verifier", "no JWT settings"))
        })?;
        let identity = verifier
            .verify(&token)
            .await
            .map_err(Unauthorized::Invalid)?;
        if let Some(sessions) = &self.live.shared().sessions {
            sessions
                .check(&token, &identity)
                .await
                .map_err(Unauthorized::Session)?;
        }
        let auth = ctx
            .table
            .as_ref()
            .zip(ctx.route)
            .and_then(|(table, r)| table.routes.routes().get(r))
            .map(|route| &route.auth);
        if let Some(auth) = auth
            && !auth.grants(identity.role.as_deref(), identity.scopes.as_deref())
        {
            ctx.refusal = Some(Cow::Owned(format!(
                "role {:?} or scopes {:?} not enough for the route",
                identity.role, identity.scopes
            )));
            return Err(Unauthorized::Forbidden);
        }
        ctx.identity = Some(identity);
        Ok(())
    }

    /// The route's rate limit for this request: its outcome is kept for the response's
    /// `RateLimit-*` headers; a 429 when it is spent.
    async fn rate_limit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: usize,
    ) -> Option<Reply> {
        let table = self.table(ctx);
        let peer = client_ip(session);
        let user = ctx.identity.as_ref().map(|i| i.user_id.as_str());
        let headers = &session.req_header().headers;
        let outcome = table.limits.check(route, peer, headers, user).await;
        ctx.rate_limit = outcome;
        if outcome.is_none_or(|o| o.allowed) {
            return None;
        }
        table.metrics.rate_limited(ctx.route);
        Some(Reply {
            status: 429,
            message: "too many requests",
        })
    }

    /// The request's table (the current one for a request that has none yet).
    fn table(&self, ctx: &RequestCtx) -> Arc<Table> {
        ctx.table.clone().unwrap_or_else(|| self.live.current())
    }

    /// The upstream of the request's route, in the request's table.
    fn upstream<'c>(&self, ctx: &'c RequestCtx) -> Result<&'c Upstream> {
        upstream_in(ctx.table.as_deref(), ctx.route)
    }
}

/// The upstream of `route` in `table`. (Borrowed: the phases that change the context
/// meanwhile clone the table's `Arc` first.)
fn upstream_in(table: Option<&Table>, route: Option<usize>) -> Result<&Upstream> {
    route
        .and_then(|i| table?.upstreams.get(i))
        .map(|u| &**u)
        .ok_or_else(|| Error::explain(pingora_core::ErrorType::InternalError, "no route"))
}

/// Answer a refused request with its JSON error (and `header`, when given). The connection
/// stays open only when no body is left unread (it would otherwise be read as the next
/// request).
async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply,
    header: Option<(&'static str, &'static str)>,
) -> Result<bool> {
    if ctx.refusal.is_none() {
        ctx.refusal = Some(Cow::Borrowed(reply.message));
    }
    let close = ctx.close_after_refusal || !session.is_body_empty();
    if close {
        session.set_keepalive(None);
    }
    let (mut resp, body) = errors::response(reply, &ctx.request_id, close)?;
    if let Some((name, value)) = header {
        resp.insert_header(name, value)?;
    }
    decorate(&mut resp, ctx)?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// During a graceful shutdown or upgrade, answers say `Connection: close`: a client that
/// reused the connection after its answer could race Pingora closing it (idle
/// connections are closed when shutdown begins) and see a reset instead of moving to the
/// new process. The same from SIGTERM on, while the shutdown delay still serves: a client
/// that reconnects lands on an instance that is staying.
fn close_if_shutting_down(session: &mut Session, live: &Live) {
    if session.is_process_shutting_down() || live.is_draining() {
        session.set_keepalive(None);
    }
}

/// The client's address (`None` for a Unix-socket peer).
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// What hash balancing hashes: the client address (behind `TRUSTED_PROXIES`, the one their
/// `X-Forwarded-For` names, as for rate limits: otherwise every client of a load balancer
/// would land on one instance), or a header's value (the address when absent); nothing for
/// round robin.
fn selection_key(session: &Session, balance: &Balance, trusted: &[ipnet::IpNet]) -> Vec<u8> {
    let headers = &session.req_header().headers;
    let ip = || {
        crate::edge::rate_limit::client_ip(client_ip(session), headers, trusted)
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default()
    };
    match balance {
        Balance::RoundRobin => Vec::new(),
        Balance::HashIp => ip(),
        Balance::HashHeader(name) => headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_else(ip),
    }
}

/// What the edge adds to every response of a request, the gateway's own included: its
/// CORS headers, its route's `RateLimit-*` headers, and HSTS on the TLS listener.
fn decorate(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if let Some(hsts) = &ctx.hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
    }
    if let Some(cors_headers) = &ctx.cors {
        cors::apply(resp, cors_headers)?;
    }
    if let Some(outcome) = &ctx.rate_limit {
        for (name, value) in outcome.headers() {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// The answer to a CORS preflight from an allowed origin: 204 with the policy's headers.
async fn preflight(
    session: &mut Session,
    ctx: &mut RequestCtx,
    cors_headers: &[(&'static str, HeaderValue)],
) -> Result<bool> {
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(204, Some(8))?;
    cors::apply(&mut resp, cors_headers)?;
    decorate(&mut resp, ctx)?;
    headers::set_client_headers(&mut resp, &ctx.request_id)?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

/// A 401 as RFC 6750 words it: `WWW-Authenticate: Bearer`, with `error="invalid_token"`
/// when a token came; a 403 with `error="insufficient_scope"` for a valid token the
/// route's roles or scopes refuse. Why goes to the access line, never to the client.
async fn unauthorized(
    session: &mut Session,
    ctx: &mut RequestCtx,
    why: Unauthorized,
) -> Result<bool> {
    let (status, message, challenge) = match why {
        Unauthorized::Missing => {
            metrics::jwt_refused("missing");
            (401, "a bearer token is required", "Bearer")
        }
        Unauthorized::Invalid(rejected) => {
            metrics::jwt_refused(rejected.kind);
            ctx.refusal = Some(Cow::Owned(format!("invalid token: {rejected}")));
            (401, "invalid token", r#"Bearer error="invalid_token""#)
        }
        Unauthorized::Session(refusal) => {
            metrics::jwt_refused(refusal.kind());
            ctx.refusal = Some(Cow::Borrowed(refusal.kind()));
            match refusal {
                session::Refusal::Unavailable => {
                    let reply = Reply {
                        status: 503,
                        message: "session store unavailable",
                    };
                    return refuse(session, ctx, reply, None).await;
                }
                _ => (
                    401,
                    "session ended",
                    r#"Bearer error="invalid_token", error_description="session ended""#,
                ),
            }
        }
        Unauthorized::Forbidden => {
            metrics::jwt_refused("forbidden");
            (
                403,
                "the token's role or scopes do not allow this route",
                r#"Bearer error="insufficient_scope""#,
            )
        }
    };
    let reply = Reply { status, message };
    refuse(session, ctx, reply, Some(("www-authenticate", challenge))).await
}
