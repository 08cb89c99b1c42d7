//! beat-gateway: the single entry point of the Beat EcoProve backend, on Cloudflare's Pingora.
//!
//! A request's path through the gateway (see [`proxy`] for the callbacks themselves):
//!
//! 1. Pingora reads the request head; malformed heads are refused by Pingora with 400.
//! 2. `request_filter`: take the client's `X-Request-ID` if sane, else mint a UUID v4;
//!    refuse smuggling shapes (`Transfer-Encoding` with `Content-Length`) and dot-segment
//!    paths with 400; find the route by segment-boundary longest prefix ([`router`]) or
//!    answer 404; compute the upstream path (strip, version) keeping the query as is.
//! 3. `upstream_peer`: the route's upstream address from a cached, refreshed, non-blocking
//!    name lookup ([`upstream`]); a failed lookup is a 502.
//! 4. `upstream_request_filter`: rewritten URI, `X-Request-ID`, `X-Forwarded-*`.
//!    Hop-by-hop headers are dropped by Pingora's upstream request policy.
//! 5. Bodies stream both ways; WebSocket upgrades become a tunnel with no read timeout.
//! 6. `response_filter`: `X-Request-ID` and the security headers on the way back.
//! 7. `fail_to_proxy`: refused or unreachable upstream is a JSON 502, a timeout a JSON 504.
//! 8. `logging`: one access line per request ([`proxy`]'s `access_log`).
//!
//! Configuration comes from `services.json` ([`config`]) and the environment ([`settings`]).

pub mod config;
pub mod demo;
pub mod logging;
pub mod proxy;
pub mod router;
pub mod server;
pub mod settings;
pub mod upstream;
