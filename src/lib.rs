//! beat-gateway: the single entry point of the Beat EcoProve backend, on Cloudflare's Pingora.
//!
//! Pingora runs everything below the request: listeners, worker runtimes, HTTP/1 parsing
//! and framing, keep-alive on both sides, the upstream connection pool, upgrades, signals,
//! graceful shutdown and upgrade. The request path is one `ProxyHttp` ([`proxy::Gateway`]),
//! served by `pingora_proxy`; a request passes its phases in this order:
//!
//! 1. Pingora reads the head. One it cannot read (malformed, over 256 header lines, not
//!    complete within `PROXY_HEADER_TIMEOUT_SECONDS` of its first byte) gets a JSON 400/408
//!    from `request_head_error_response`.
//! 2. `early_request_filter`: the client's `X-Request-ID` is kept if sane, else a UUID v4
//!    is minted.
//! 3. `request_filter`: the gateway's checks (smuggling shapes, `Host`, dot-segments,
//!    limits, methods, `Expect`), then the route by segment-boundary longest prefix
//!    ([`router`]); then the edge filters ([`edge`]): a CORS preflight is answered, the
//!    route's token verified, its rate limit applied. A refusal, a 401, a 404 or a 429 is
//!    answered here as JSON. `100 Continue` is sent by the gateway.
//! 4. `upstream_peer`: the route's `HttpPeer` at the address from a cached, refreshed,
//!    non-blocking name lookup ([`upstream`]).
//! 5. `upstream_request_filter`: the rewritten target (query byte for byte), hop-by-hop
//!    and client-sent identity headers out, `X-Request-ID`, the verified identity and
//!    `X-Forwarded-*` in.
//! 6. `upstream_response_filter` / `response_filter`: hop-by-hop headers out, the request
//!    id, security, CORS and `RateLimit-*` headers in; HTTP/1.0 clients get a body they
//!    can read.
//! 7. `fail_to_connect` / `fail_to_proxy`: failures become JSON 502 (unavailable), 504
//!    (timeout) or 4xx (the client's fault).
//! 8. `logging`: one access line per request.
//!
//! Configuration comes from `services.json` ([`config`]) and the environment ([`settings`]).
//!
//! The modules, from the ground up; each imports only from its own floor or a lower one, and
//! no files import each other in a circle (`tests/layering.rs` checks both):
//!
//! 0. [`config`] (`services.json` validated into plain data: services, auth rule, CORS
//!    policy, limit, balance, health check, timeouts) and [`settings`] (flags, environment).
//! 1. Built from the model alone: [`router`] (route table, path rewrite), [`upstream`]
//!    (instances, selection, health checks -> `HttpPeer`), [`metrics`], [`logging`].
//! 2. [`edge`]: auth, CORS, rate limits, the TLS certificate, connection limits.
//! 3. [`live`]: the live table (routes and, index for index, their upstreams, CORS policies
//!    and limiters), reloaded as a whole.
//! 4. [`admin`]: the admin listener.
//! 5. [`proxy`]: the request path above.
//! 6. [`server`] (the Pingora server), [`memory`] (freed memory given back after a spike)
//!    and [`demo`] (stand-in services for `--demo`).
//! 7. `main.rs`.

pub mod admin;
pub mod config;
pub mod demo;
pub mod edge;
pub mod live;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod server;
pub mod settings;
pub mod upstream;

#[cfg(test)]
mod fuzz;
