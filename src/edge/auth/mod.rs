//! Edge authentication: the auth service's access tokens (JWTs) verified once, at the
//! gateway, before a request costs a service anything; the service receives the verified
//! identity as headers it can trust, because the gateway removes the same headers from
//! every client request.
//!
//! - [`token`]: where a request carries its token (pure).
//! - [`jwks`]: the auth service's keys, fetched, cached and refreshed.
//! - [`Verifier`]: signature, algorithm, `typ`, `exp`/`nbf` with leeway, `iss`, `aud`.
//! - [`session`]: a verified token must still be the user's current one, and not revoked
//!   (the auth service's Redis), when configured.

pub mod jwks;
pub mod session;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Validation, decode, decode_header};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_memory_cache::MemoryCache;
use serde::Deserialize;

pub use jwks::{KeySet, unix_now};

use crate::settings::JwtSettings;

/// The identity headers the gateway sets from a verified token, and removes from every
/// client request so that they can never be spoofed.
pub const IDENTITY_HEADERS: [&str; 4] =
    ["x-user-id", "x-user-role", "x-profile-id", "x-user-scopes"];

/// What a verified token says about its bearer, as the service receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub role: Option<String>,
    pub profile_id: Option<String>,
    /// Space-joined.
    pub scopes: Option<String>,
    /// The token's id (`jti`): not forwarded, for the revocation check.
    pub token_id: Option<String>,
}

/// The JWKS refresh as a Pingora background service: the keys are fetched once a route
/// verifies tokens (at start, or after the reload that adds one; a failure is logged, not
/// fatal: requests with tokens get 401 until a fetch succeeds), then every
/// `JWKS_REFRESH_SECONDS`, until shutdown.
pub struct JwksRefresh(pub Arc<Verifier>);

#[async_trait]
impl BackgroundService for JwksRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let keys = self.0.keys();
        loop {
            // Until a route verifies tokens (a reload may add one), look again each second.
            let wait = if self.0.in_use.load(Ordering::Relaxed) {
                keys.refresh(true).await;
                self.0.settings.refresh
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Refuse to start when a route has auth on but the JWT settings are incomplete.
pub fn check_settings(with_auth: &[&str], missing: &[&str]) -> Result<(), String> {
    if with_auth.is_empty() || missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "auth is on for {} but {} not set (JWKS_URL, JWT_ISSUER and JWT_AUDIENCE are required)",
        with_auth
            .iter()
            .map(|s| format!("service '{s}'"))
            .collect::<Vec<_>>()
            .join(", "),
        missing.join(", ") + if missing.len() == 1 { " is" } else { " are" },
    ))
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    profile_id: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default)]
    jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scope {
    List(Vec<String>),
    Text(String),
}

/// Verified tokens are remembered at most this long (and never past their expiry), so a
/// client's token costs one signature check a minute, not one per request.
pub const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many verified tokens are remembered (TinyUFO keeps the busiest).
const VERIFIED_CACHE_SIZE: usize = 8192;

/// Why a token was refused: a short kind for metrics (`expired`, `signature`, ...) and
/// the detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub kind: &'static str,
    pub detail: String,
}

impl Rejected {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Rejected {
            kind,
            detail: detail.into(),
        }
    }

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind::*;
        let kind = match e.kind() {
            ExpiredSignature => "expired",
            ImmatureSignature => "not_yet_valid",
            InvalidIssuer => "issuer",
            InvalidAudience => "audience",
            InvalidSignature => "signature",
            MissingRequiredClaim(_) | Json(_) => "claims",
            _ => "malformed",
        };
        Rejected::new(kind, e.to_string())
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind)
    }
}

/// A verified token and what it grants, until `expires` (Unix seconds, leeway included).
struct Verified {
    /// The whole token: the cache is keyed by a 64-bit hash, so a hit is confirmed against it.
    token: Box<str>,
    identity: Arc<Identity>,
    expires: u64,
}

/// Verifies tokens against the JWKS.
pub struct Verifier {
    settings: JwtSettings,
    keys: KeySet,
    verified: MemoryCache<String, Arc<Verified>>,
    /// A route of the live table verifies tokens: the keys are kept fresh only then.
    in_use: AtomicBool,
}

impl Verifier {
    pub fn new(settings: JwtSettings) -> Self {
        Verifier {
            keys: KeySet::new(settings.jwks_url.clone()),
            settings,
            verified: MemoryCache::new(VERIFIED_CACHE_SIZE),
            in_use: AtomicBool::new(false),
        }
    }

    /// Whether a route of the live table verifies tokens (set on every table swap).
    pub fn set_in_use(&self, in_use: bool) {
        self.in_use.store(in_use, Ordering::Relaxed);
    }

    /// Whether a route of the live table verifies tokens.
    pub fn in_use(&self) -> bool {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The identity in `token`, or why it is refused (for the log, never the client). A
    /// token verified in the last [`VERIFIED_CACHE_TTL`] and not expired since is not
    /// checked again.
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, Rejected> {
        let now = unix_now();
        if let (Some(hit), _) = self.verified.get(token)
            && &*hit.token == token
            && now < hit.expires
        {
            return Ok(hit.identity.clone());
        }
        let (identity, exp) = self.verify_signed(token).await?;
        let identity = Arc::new(identity);
        let expires = exp.saturating_add(self.settings.leeway_seconds);
        let ttl = Duration::from_secs(expires.saturating_sub(now)).min(VERIFIED_CACHE_TTL);
        if !ttl.is_zero() {
            let entry = Verified {
                token: token.into(),
                identity: identity.clone(),
                expires,
            };
            self.verified.put(token, Arc::new(entry), Some(ttl));
        }
        Ok(identity)
    }

    /// The full check: header, key, signature and claims; the identity and `exp`.
    async fn verify_signed(&self, token: &str) -> Result<(Identity, u64), Rejected> {
        let header = decode_header(token)
            .map_err(|e| Rejected::new("malformed", format!("malformed token: {e}")))?;
        check_typ(header.typ.as_deref()).map_err(|e| Rejected::new("type", e))?;
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| Rejected::new("no_kid", "the token names no key (kid)"))?;
        let key = self
            .keys
            .get(kid)
            .await
            .ok_or_else(|| Rejected::new("unknown_key", format!("unknown key '{kid}'")))?;
        if header.alg != key.algorithm {
            return Err(Rejected::new(
                "algorithm",
                format!(
                    "algorithm {:?} does not match key '{kid}' ({:?})",
                    header.alg, key.algorithm
                ),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            decode::<Claims>(token, &key.key, &validation).map_err(|e| Rejected::from_jwt(&e))?;
        let exp = data.claims.exp;
        let identity = identity(data.claims).map_err(|e| Rejected::new("claims", e))?;
        Ok((identity, exp))
    }
}

/// Access tokens only: the auth service marks them `typ: access` (`JWT` and `at+jwt` are
/// the standard spellings); a refresh token must never open a route.
fn check_typ(typ: Option<&str>) -> Result<(), String> {
    match typ {
        None => Ok(()),
        Some(t)
            if ["access", "JWT", "at+jwt"]
                .iter()
                .any(|a| t.eq_ignore_ascii_case(a)) =>
        {
            Ok(())
        }
        Some(t) => Err(format!("token type '{t}' is not an access token")),
    }
}

/// Claims as header values: anything that cannot travel as one is refused.
fn identity(claims: Claims) -> Result<Identity, String> {
    let text = |name: &str, v: String| {
        if http::HeaderValue::from_str(&v).is_ok() && !v.is_empty() {
            Ok(v)
        } else {
            Err(format!("claim '{name}' cannot be passed as a header"))
        }
    };
    let profile_id = match claims.profile_id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err("claim 'profile_id' is neither a string nor a number".into()),
    };
    let scopes = match claims.scope {
        None => None,
        Some(Scope::List(list)) => Some(list.join(" ")),
        Some(Scope::Text(s)) => Some(s),
    }
    .filter(|s| !s.is_empty());
    Ok(Identity {
        user_id: text("sub", claims.sub)?,
        role: claims.role.map(|r| text("role", r)).transpose()?,
        profile_id: profile_id.map(|p| text("profile_id", p)).transpose()?,
        scopes: scopes.map(|s| text("scope", s)).transpose()?,
        token_id: claims.jti,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_are_named_only_when_a_route_needs_them() {
        assert!(check_settings(&[], &["JWKS_URL"]).is_ok());
        assert!(check_settings(&["core-service"], &[]).is_ok());
        assert_eq!(
            check_settings(
                &["core-service", "messaging"],
                &["JWKS_URL", "JWT_AUDIENCE"]
            ),
            Err(
                "auth is on for service 'core-service', service 'messaging' but JWKS_URL, \
                 JWT_AUDIENCE are not set (JWKS_URL, JWT_ISSUER and JWT_AUDIENCE are required)"
                    .into()
            )
        );
    }

    #[test]
    fn only_access_tokens_pass_the_type_check() {
        for ok in [
            None,
            Some("access"),
            Some("JWT"),
            Some("at+jwt"),
            Some("jwt"),
        ] {
            assert!(check_typ(ok).is_ok(), "{ok:?}");
        }
        for bad in [Some("refresh"), Some("id"), Some("")] {
            assert!(check_typ(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_become_header_values() {
        let claims: Claims = serde_json::from_str(
            r#"{"sub": "u1", "exp": 1, "role": "client", "profile_id": 42, "scope": ["read", "write"], "jti": "j1"}"#,
        )
        .unwrap();
        assert_eq!(
            identity(claims).unwrap(),
            Identity {
                user_id: "u1".into(),
                role: Some("client".into()),
                profile_id: Some("42".into()),
                scopes: Some("read write".into()),
                token_id: Some("j1".into()),
            }
        );
        let bare: Claims = serde_json::from_str(r#"{"sub": "u2", "exp": 1, "scope": []}"#).unwrap();
        let id = identity(bare).unwrap();
        assert_eq!((id.role, id.profile_id, id.scopes), (None, None, None));
        let injected: Claims =
            serde_json::from_str(r#"{"sub": "u\r\nX-Admin: 1", "exp": 1}"#).unwrap();
        assert!(identity(injected).is_err());
    }
}
