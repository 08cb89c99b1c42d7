//! Edge security: what the gateway decides about a request before any service sees it,
//! each a small filter module the `ProxyHttp` phases call (`crate::proxy`).
//!
//! - [`auth`]: access tokens verified once, at the edge; the service gets the identity.
//! - [`cors`]: preflights answered here; CORS headers on every response, the gateway's
//!   own errors included, so a browser app can read them.
//! - [`rate_limit`]: per-route token buckets, local or shared through Redis.
//! - [`redis_link`]: the Redis connection the rate limits and the session store share the
//!   ways of (deadline, pause after a failure, one log line a minute).
//! - [`tls`]: the TLS listener's certificate, reloaded without a restart.
//! - [`connections`]: limits on open client connections, in all and per address.

pub mod auth;
pub mod connections;
pub mod cors;
pub mod rate_limit;
pub mod redis_link;
pub mod tls;
