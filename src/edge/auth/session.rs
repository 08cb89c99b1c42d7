//! Sessions at the edge: a valid signature is not a live session. The auth service stores
//! each user's current access token, the raw JWT, in Redis at `<user id>:access` (and
//! replaces it on every login, refresh and profile switch), so one login elsewhere ends the
//! previous session; only two of its own endpoints look. With `JWT_SESSION_CHECK=current`
//! the gateway makes every route with auth on look: the value at the key made from
//! `JWT_SESSION_KEY` must be the presented token byte for byte. With `JWT_REVOKED_KEY`, a
//! token whose key exists (`revoked:{jti}`) is refused.
//!
//! Both lookups go in one round trip (a pipeline), within the Redis link's deadline, and
//! an answer is reused for `JWT_SESSION_CACHE_MS` per token, so a busy client costs Redis
//! about one lookup a second and an ended or revoked token stops working within that time.
//! Redis unavailable: refused with 503 (`JWT_SESSION_FAIL=closed`, the default) or left to
//! the signature (`open`); counted either way, logged once a minute.

use std::sync::Arc;

use pingora_memory_cache::MemoryCache;
use subtle::ConstantTimeEq;

use super::Identity;
use crate::edge::redis_link::RedisLink;
use crate::metrics;
use crate::settings::{Claim, SessionSettings};

/// How many tokens' answers are remembered (TinyUFO keeps the busiest).
const ANSWERS: usize = 8192;

/// Why a verified token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not the user's current token (or no current token at all).
    Ended,
    /// Its id is on the revoked list.
    Revoked,
    /// Redis could not say, and the store fails closed.
    Unavailable,
}

impl Refusal {
    /// The reason in `beat_gateway_jwt_refusals_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::Ended => "session_ended",
            Refusal::Revoked => "revoked",
            Refusal::Unavailable => "session_store_unavailable",
        }
    }
}

/// A token's answer, kept for the cache time.
struct Answer {
    /// The whole token: the cache is keyed by a hash, a hit is confirmed against it.
    token: Box<str>,
    verdict: Result<(), Refusal>,
}

pub struct SessionStore {
    settings: SessionSettings,
    link: RedisLink,
    answers: MemoryCache<String, Arc<Answer>>,
}

impl SessionStore {
    pub fn new(settings: SessionSettings) -> Result<Self, String> {
        let fallback = if settings.fail_open {
            "the signature alone decides (JWT_SESSION_FAIL=open)"
        } else {
            "requests with tokens get 503 (JWT_SESSION_FAIL=closed)"
        };
        Ok(SessionStore {
            link: RedisLink::new(&settings.redis_url, "session store", fallback)?,
            settings,
            answers: MemoryCache::new(ANSWERS),
        })
    }

    /// Whether the verified `token` (of `identity`) is a live session.
    pub async fn check(&self, token: &str, identity: &Identity) -> Result<(), Refusal> {
        if let (Some(hit), _) = self.answers.get(token)
            && &*hit.token == token
        {
            return hit.verdict;
        }
        let claim = |c: Claim| match c {
            Claim::Sub => Some(identity.user_id.as_str()),
            Claim::Jti => identity.token_id.as_deref(),
            Claim::ProfileId => identity.profile_id.as_deref(),
            Claim::Role => identity.role.as_deref(),
        };
        // A key whose claim the token lacks: no current session can be shown (ended); no
        // revocation can name it (not revoked).
        let current = self.settings.current.as_ref().map(|t| t.render(claim));
        let checks_current = current.is_some();
        let revoked = self.settings.revoked.as_ref().and_then(|t| t.render(claim));
        let Some(found) = self.lookup(current.flatten(), revoked).await else {
            metrics::session_store_unavailable();
            return if self.settings.fail_open {
                Ok(())
            } else {
                Err(Refusal::Unavailable)
            };
        };
        let verdict = if found.revoked {
            Err(Refusal::Revoked)
        } else if checks_current
            && !found
                .stored
                .is_some_and(|stored| bool::from(stored.as_slice().ct_eq(token.as_bytes())))
        {
            Err(Refusal::Ended)
        } else {
            Ok(())
        };
        if !self.settings.cache.is_zero() {
            let answer = Answer {
                token: token.into(),
                verdict,
            };
            self.answers
                .put(token, Arc::new(answer), Some(self.settings.cache));
        }
        verdict
    }

    /// Both lookups in one round trip; `None` when Redis could not answer.
    async fn lookup(&self, current: Option<String>, revoked: Option<String>) -> Option<Found> {
        if current.is_none() && revoked.is_none() {
            return Some(Found::default());
        }
        self.link
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                if let Some(key) = &current {
                    pipe.get(key);
                }
                if let Some(key) = &revoked {
                    pipe.exists(key);
                }
                // A command's error (WRONGTYPE) is its own value, not the pipeline's failure.
                pipe.ignore_errors();
                let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let mut values = values.into_iter();
                let stored = match current {
                    None => None,
                    Some(_) => match values.next() {
                        // Something else than a string at the key (WRONGTYPE): not the
                        // token, and no failure of the store's.
                        Some(redis::Value::ServerError(_)) | None => None,
                        Some(value) => redis::from_redis_value(value)?,
                    },
                };
                let revoked = match &revoked {
                    Some(_) => {
                        redis::from_redis_value(values.next().unwrap_or(redis::Value::Int(0)))?
                    }
                    None => false,
                };
                Ok(Found { stored, revoked })
            })
            .await
    }

    /// For `/readyz`: `ok`, or `unavailable` while the last lookup's failure is recent.
    pub fn state(&self) -> &'static str {
        if self.link.resting() {
            "unavailable"
        } else {
            "ok"
        }
    }
}

/// What Redis holds for a token.
#[derive(Default)]
struct Found {
    /// The value at the current-session key.
    stored: Option<Vec<u8>>,
    /// The revoked key exists.
    revoked: bool,
}
