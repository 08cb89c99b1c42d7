//! The auth service's signing keys (its JWKS), fetched over HTTP or HTTPS with Pingora's
//! own client (certificates verified against the system's CAs or `JWKS_CA_FILE`), cached, and refreshed: in the background every `JWKS_REFRESH_SECONDS`, and at
//! once (at most every [`MIN_REFETCH`]) when a token names a key the cache does not hold,
//! so a rotated key works within seconds. A failed fetch keeps the cached keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use pingora_core::connectors::ConnectorOptions;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use tokio::sync::Mutex;

use crate::settings::JwksUrl;
use crate::upstream::Resolver;

/// An unknown `kid` refetches the JWKS at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// One fetch (connect, request, whole response) must finish within this.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);
/// A JWKS larger than this is refused (a key set is a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A verification key and the one algorithm it verifies.
pub struct Key {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// Keys by `kid`.
pub type Keys = HashMap<String, Arc<Key>>;

/// The cached keys by `kid`, and how to fetch them again.
pub struct KeySet {
    url: JwksUrl,
    resolver: Resolver,
    connector: Connector,
    keys: ArcSwap<Keys>,
    /// When the last fetch started (single flight, and the refetch rate limit).
    last_fetch: Mutex<Option<Instant>>,
    /// The last fetch's outcome, for the admin dashboard: when (Unix seconds), and the
    /// error if it failed.
    last_outcome: std::sync::Mutex<Option<(u64, Option<String>)>>,
}

impl KeySet {
    pub fn new(url: JwksUrl) -> Self {
        // Pingora's connector loads the CA file when built (and panics on a bad one):
        // settings checked it.
        let connector = Connector::new(url.ca_file.clone().map(|ca_file| {
            let mut options = ConnectorOptions::new(1);
            options.ca_file = Some(ca_file);
            options
        }));
        KeySet {
            resolver: Resolver::new(&url.host, url.port),
            url,
            connector,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
            last_outcome: std::sync::Mutex::new(None),
        }
    }

    /// The key named `kid`; when the cache lacks it, one refetch (unless one ran within
    /// [`MIN_REFETCH`]), then look again.
    pub async fn get(&self, kid: &str) -> Option<Arc<Key>> {
        if let Some(key) = self.keys.load().get(kid) {
            return Some(key.clone());
        }
        self.refresh(false).await;
        self.keys.load().get(kid).cloned()
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// The last fetch: when (Unix seconds), and its error if it failed; `None` before any.
    pub fn last_outcome(&self) -> Option<(u64, Option<String>)> {
        self.last_outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fetch the JWKS and replace the cache (only if it held at least one usable key).
    /// `force`: the background refresh, which ignores the refetch rate limit. Concurrent
    /// callers wait for the fetch in flight instead of starting their own.
    pub async fn refresh(&self, force: bool) {
        let mut last = self.last_fetch.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = tokio::time::timeout(FETCH_DEADLINE, self.fetch())
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {FETCH_DEADLINE:?}")));
        let parsed = fetched.and_then(|body| parse_jwks(&body));
        *self.last_outcome.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((unix_now(), parsed.as_ref().err().cloned()));
        match parsed {
            Ok((keys, skipped)) => {
                log::info!(
                    "jwks: {} key(s) loaded from {}{}",
                    keys.len(),
                    self.resolver.target(),
                    self.url.path
                );
                for reason in skipped {
                    log::warn!("jwks: key skipped: {reason}");
                }
                self.keys.store(Arc::new(keys));
            }
            Err(e) => log::warn!(
                "jwks: cannot load keys from {}{} ({e}); keeping {} cached key(s)",
                self.resolver.target(),
                self.url.path,
                self.len()
            ),
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let addr = self.resolver.address().await.map_err(|e| e.to_string())?;
        // The SNI is the host: it is also the name the certificate is verified for (an
        // empty one would turn verification off).
        let mut peer = HttpPeer::new(addr, self.url.tls, self.url.host.clone());
        peer.options.connection_timeout = Some(FETCH_DEADLINE);
        peer.options.read_timeout = Some(FETCH_DEADLINE);
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = RequestHeader::build("GET", self.url.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let default_port = if self.url.tls { 443 } else { 80 };
        let host = if self.url.port == default_port {
            self.url.host.clone()
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        };
        req.insert_header(http::header::HOST, host)
            .map_err(|e| e.to_string())?;
        req.insert_header(http::header::ACCEPT, "application/json")
            .map_err(|e| e.to_string())?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &peer, None)
            .await;
        Ok(body.to_vec())
    }
}

/// The usable keys of a JWKS document by `kid`, and why others were skipped. Usable: a
/// `kid`, and an RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA) public key. Symmetric
/// (`oct`) keys are never used: a public key set has no business holding secrets, and
/// accepting them would let HMAC tokens in.
pub fn parse_jwks(body: &[u8]) -> Result<(Keys, Vec<String>), String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
            skipped.push("a key without kid".to_owned());
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => {
                skipped.push(format!("{kid}: not an RSA, P-256 or Ed25519 public key"));
                continue;
            }
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(Key { key, algorithm }));
            }
            Err(e) => skipped.push(format!("{kid}: {e}")),
        }
    }
    if keys.is_empty() {
        return Err("no usable key in the set".into());
    }
    Ok((keys, skipped))
}

/// Seconds since the epoch (0 for a clock before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_public_keys_with_a_kid_and_skips_the_rest() {
        let doc = br#"{"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let (keys, skipped) = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["ed"].algorithm, Algorithm::EdDSA);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
