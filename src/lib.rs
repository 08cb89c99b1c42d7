//! beat-gateway: the single entry point of the Beat EcoProve backend, on Cloudflare's Pingora.
//!
//! Pingora runs the server: listeners, worker runtimes, signals, graceful shutdown and
//! upgrade. The HTTP/1 request path is the gateway's own ([`proxy`], a Pingora `ServerApp`):
//!
//! 1. The head is parsed (`httparse`) and checked: smuggling shapes (`Transfer-Encoding`
//!    with `Content-Length`, conflicting lengths, codings other than chunked), missing or
//!    repeated `Host`, dot-segment paths, oversized heads. Anything refused gets a JSON 4xx
//!    carrying the request id, like every other response.
//! 2. The client's `X-Request-ID` is kept if sane, else a UUID v4 is minted; the route is
//!    found by segment-boundary longest prefix ([`router`]) or the answer is 404.
//! 3. The upstream head is written in one pass: rewritten path (query byte for byte),
//!    hop-by-hop headers dropped, `X-Request-ID` and `X-Forwarded-*` set.
//! 4. A pooled keep-alive connection, or a new one to the address from a cached, refreshed,
//!    non-blocking name lookup ([`upstream`]); failures are a JSON 502, timeouts a 504.
//! 5. Bodies stream both ways (length, chunked validated as it passes, or until close);
//!    WebSocket upgrades become a tunnel with no read timeout.
//! 6. The response head gets `X-Request-ID` and the security headers, loses hop-by-hop ones.
//! 7. One access line per request ([`proxy`]'s `access_log`).
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
