//! Per-route rate limits: a token bucket (GCRA) per client key, `burst` requests at once,
//! then `requests_per_second`.
//!
//! Local by default (`governor`'s keyed GCRA limiter, one per route). With
//! `RATE_LIMIT_REDIS_URL`, the buckets live in Redis, so several gateway replicas enforce
//! one limit: the same GCRA in one Lua script, one round trip per request, on the Redis
//! server's clock (replicas need not agree on the time). When Redis does not answer within
//! [`REDIS_DEADLINE`], the request is decided by the local limiter instead, Redis is left
//! alone for [`REDIS_RETRY_AFTER`], and the fallback is logged at most once a minute: the
//! gateway keeps serving.
//!
//! The key is the client address (`ip`; the first untrusted address of `X-Forwarded-For`
//! when the peer is one of `TRUSTED_PROXIES`), the verified token's subject (`user`), or a
//! header's value (`header:NAME`); the last two fall back to the address when absent.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use super::redis_link::RedisLink;
use crate::config::{KeyKind, LimitSpec};

pub use super::redis_link::{DEADLINE as REDIS_DEADLINE, RETRY_AFTER as REDIS_RETRY_AFTER};

/// The time between two requests at the sustained rate.
fn interval(spec: &LimitSpec) -> Duration {
    Duration::from_secs_f64(1.0 / spec.requests_per_second)
}

/// The decision for one request, and what its `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The bucket's size (`burst`).
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
    /// Seconds until a refused request would be allowed.
    pub retry_after: u64,
}

impl Outcome {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, and `Retry-After` when
    /// refused.
    pub fn headers(&self) -> Vec<(&'static str, HeaderValue)> {
        let mut h = vec![
            ("ratelimit-limit", HeaderValue::from(self.limit)),
            ("ratelimit-remaining", HeaderValue::from(self.remaining)),
            ("ratelimit-reset", HeaderValue::from(self.reset)),
        ];
        if !self.allowed {
            h.push(("retry-after", HeaderValue::from(self.retry_after.max(1))));
        }
        h
    }
}

type Local = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

/// One route's limiter.
pub struct RouteLimit {
    pub spec: LimitSpec,
    /// The route's name, part of the Redis key.
    pub route: String,
    local: Local,
}

impl RouteLimit {
    pub fn new(route: &str, spec: LimitSpec) -> Self {
        let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval(&spec))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let local: Local =
            governor::RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>();
        RouteLimit {
            spec,
            route: route.to_owned(),
            local,
        }
    }

    /// The local decision for `key`.
    pub fn check_local(&self, key: &str) -> Outcome {
        let key = key.to_owned();
        let interval = interval(&self.spec);
        let limit = self.spec.burst;
        match self.local.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Outcome {
                    allowed: true,
                    limit,
                    remaining,
                    reset: ceil_secs(interval * (limit - remaining.min(limit))),
                    retry_after: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Outcome {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset: ceil_secs(interval * limit),
                    retry_after: ceil_secs(wait),
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// GCRA on the Redis server's clock. KEYS[1]: the bucket; ARGV[1]: milliseconds between
/// requests at the sustained rate; ARGV[2]: burst. Returns {allowed, remaining,
/// retry_after_ms, reset_ms}. The key expires once the bucket is full again.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local tolerance = interval * burst
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, math.ceil(new_tat - now)}
";

/// The shared limiter: one Redis connection (multiplexed), reconnected on failure.
pub struct Redis {
    link: RedisLink,
    script: redis::Script,
}

impl Redis {
    /// `url`: `redis://host:port/db`, as `RATE_LIMIT_REDIS_URL` gives it.
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(Redis {
            link: RedisLink::new(url, "rate limits", "using local limits")?,
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }

    /// The shared decision, or `None` when Redis is not available now.
    async fn check(&self, limit: &RouteLimit, key: &str) -> Option<Outcome> {
        let interval_ms = interval(&limit.spec).as_secs_f64() * 1000.0;
        let key = format!("beat-gateway:rl:{}:{key}", limit.route);
        let (allowed, remaining, retry_ms, reset_ms): (i64, i64, i64, i64) = self
            .link
            .run(|mut conn| async move {
                self.script
                    .key(key)
                    .arg(interval_ms)
                    .arg(limit.spec.burst)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let secs = |ms: i64| u64::try_from(ms).unwrap_or(0).div_ceil(1000);
        Some(Outcome {
            allowed: allowed == 1,
            limit: limit.spec.burst,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: secs(reset_ms),
            retry_after: secs(retry_ms),
        })
    }
}

/// Every route's limiter (by route index), and Redis when shared.
/// Every route's limiter by route index. A reload builds a new one; limiters of routes
/// whose name and limit did not change are carried over (their buckets with them), and
/// Redis is shared by all.
pub struct RateLimits {
    routes: Vec<Option<Arc<RouteLimit>>>,
    redis: Option<Arc<Redis>>,
    trusted_proxies: Arc<[IpNet]>,
}

impl RateLimits {
    pub fn new(
        routes: Vec<Option<Arc<RouteLimit>>>,
        redis: Option<Arc<Redis>>,
        trusted_proxies: Arc<[IpNet]>,
    ) -> Self {
        RateLimits {
            routes,
            redis,
            trusted_proxies,
        }
    }

    /// The limiter of the route named `route` with exactly `spec`, to carry over.
    pub fn find(&self, route: &str, spec: &LimitSpec) -> Option<Arc<RouteLimit>> {
        self.routes
            .iter()
            .flatten()
            .find(|l| l.route == route && l.spec == *spec)
            .cloned()
    }

    /// Whether any route is limited.
    pub fn any(&self) -> bool {
        self.routes.iter().any(Option::is_some)
    }

    /// Whether route `route` is limited.
    pub fn limits(&self, route: usize) -> bool {
        self.routes.get(route).is_some_and(Option::is_some)
    }

    /// The decision for a request on route `route` (None: the route is not limited).
    pub async fn check(
        &self,
        route: usize,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        user: Option<&str>,
    ) -> Option<Outcome> {
        let limit = self.routes.get(route)?.as_ref()?;
        let ip = || {
            client_ip(peer, headers, &self.trusted_proxies)
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
        };
        let key = match &limit.spec.key {
            KeyKind::Ip => format!("ip:{}", ip()),
            KeyKind::User => match user {
                Some(sub) => format!("user:{sub}"),
                None => format!("ip:{}", ip()),
            },
            KeyKind::Header(name) => match headers.get(name).map(HeaderValue::as_bytes) {
                Some(v) if !v.is_empty() => format!("h:{}", String::from_utf8_lossy(v)),
                _ => format!("ip:{}", ip()),
            },
        };
        if let Some(redis) = &self.redis
            && let Some(outcome) = redis.check(limit, &key).await
        {
            return Some(outcome);
        }
        Some(limit.check_local(&key))
    }

    /// Drop buckets that are full again (they hold nothing a new one would not).
    pub fn housekeeping(&self) {
        for limit in self.routes.iter().flatten() {
            limit.local.retain_recent();
            limit.local.shrink_to_fit();
        }
    }
}

/// The client's address for the `ip` key: the peer, or, when the peer is a trusted proxy,
/// the last address of `X-Forwarded-For` that is not one (a client can prepend anything to
/// that chain; only what trusted proxies appended counts).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical())?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let mut last = peer;
    for ip in chain.into_iter().rev() {
        if !is_trusted(&ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rps: f64, burst: u32) -> LimitSpec {
        LimitSpec {
            requests_per_second: rps,
            burst,
            key: KeyKind::Ip,
        }
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limit = RouteLimit::new("r", spec(1.0, 3));
        let remaining: Vec<u32> = (0..3).map(|_| limit.check_local("k").remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limit.check_local("k");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.limit, 3);
        assert!(
            limit.check_local("other").allowed,
            "keys have their own buckets"
        );
        let h = refused.headers();
        assert_eq!(
            h.last().map(|(n, v)| (*n, v.clone())),
            Some(("retry-after", HeaderValue::from(1u64)))
        );
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"),
        );
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            client_ip(peer, &h, &trusted),
            Some("1.2.3.4".parse().unwrap())
        );
        let stranger = Some("9.9.9.9".parse().unwrap());
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(
            client_ip(peer, &h, &[]),
            peer,
            "no trusted proxies: the peer"
        );
        let mut garbage = HeaderMap::new();
        garbage.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, nonsense"),
        );
        assert_eq!(client_ip(peer, &garbage, &trusted), peer);
    }
}
