//! The gateway's JWT settings as the environment gives them (`JWKS_URL`, `JWT_ISSUER`,
//! `JWT_AUDIENCE`, ...): plain data, read by [`super::Settings::resolve`] and by `--demo`,
//! used by the edge's token verifier (`edge::auth`).

use std::time::Duration;

/// Default allowance for clock skew between the auth service and the gateway.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Default period of the background JWKS refresh.
pub const DEFAULT_REFRESH_SECONDS: u64 = 300;

/// The gateway's JWT settings (`JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub jwks_url: JwksUrl,
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u64,
    pub refresh: Duration,
}

/// Where the auth service serves its key set, under its base URL.
pub const WELL_KNOWN_PATH: &str = "/.well-known/jwks.json";

/// Where the JWKS is served: `http[s]://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `https`: the certificate is verified for `host`.
    pub tls: bool,
    /// PEM CA certificates to trust instead of the system's (`JWKS_CA_FILE`), for https.
    pub ca_file: Option<String>,
}

impl JwksUrl {
    /// Parse `JWKS_URL`: `http://` (the platform's own network, auth-service:2000) or
    /// `https://`. A base URL, with no path (or `/`), means the auth service's own place
    /// for its keys, [`WELL_KNOWN_PATH`]: the platform's `.env` gives the auth service's
    /// base URL (`http://auth-service:2000`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://host:port/path"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("expected an http:// or https:// URL".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(JwksUrl {
            host,
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: match uri.path_and_query().map(|p| p.as_str()) {
                None | Some("/") => WELL_KNOWN_PATH.to_owned(),
                Some(path) => path.to_owned(),
            },
            tls,
            ca_file: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_url_is_http_or_https() {
        assert_eq!(
            JwksUrl::parse("http://auth-service:2000/.well-known/jwks.json"),
            Ok(JwksUrl {
                host: "auth-service".into(),
                port: 2000,
                path: "/.well-known/jwks.json".into(),
                tls: false,
                ca_file: None,
            })
        );
        let https = JwksUrl::parse("https://auth.example/k").unwrap();
        assert_eq!((https.tls, https.port), (true, 443));
        assert_eq!(
            JwksUrl::parse("http://[::1]/k").map(|u| u.host),
            Ok("::1".into())
        );
        // A base URL: the auth service's well-known path.
        for base in ["http://auth-service:2000", "http://auth-service:2000/"] {
            let url = JwksUrl::parse(base).unwrap();
            assert_eq!(
                (url.host.as_str(), url.port, url.path.as_str()),
                ("auth-service", 2000, "/.well-known/jwks.json")
            );
        }
        assert_eq!(
            JwksUrl::parse("http://a/keys?v=2").map(|u| u.path),
            Ok("/keys?v=2".into())
        );
        assert!(JwksUrl::parse("ftp://a/k").is_err());
        assert!(JwksUrl::parse("auth-service:2000/k").is_err());
        assert!(JwksUrl::parse("not a url").is_err());
    }
}

/// Where the auth service keeps a user's current access token (`JWT_SESSION_KEY`).
pub const DEFAULT_SESSION_KEY: &str = "{sub}:access";
/// How long a session lookup's answer is reused for the same token.
pub const DEFAULT_SESSION_CACHE: Duration = Duration::from_millis(1000);

/// The session checks against the auth service's Redis (`JWT_SESSION_CHECK`,
/// `JWT_REVOKED_KEY` and the rest): on when either check is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// `JWT_SESSION_CHECK=current`: the token must be, byte for byte, the value at this
    /// key (the auth service stores a user's current access token there).
    pub current: Option<KeyTemplate>,
    /// `JWT_REVOKED_KEY`: a token whose key exists is refused.
    pub revoked: Option<KeyTemplate>,
    /// `JWT_SESSION_REDIS_URL`.
    pub redis_url: String,
    /// `JWT_SESSION_CACHE_MS`: an answer is reused this long for the same token.
    pub cache: Duration,
    /// `JWT_SESSION_FAIL=open`: with Redis unavailable the signature alone decides
    /// (default closed: 503).
    pub fail_open: bool,
}

/// A claim a key template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Sub,
    Jti,
    ProfileId,
    Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Claim(Claim),
}

/// A Redis key made from a token's claims: `{sub}:access`, `revoked:{jti}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate(Vec<Part>);

impl KeyTemplate {
    /// `{sub}`, `{jti}`, `{profile_id}` and `{role}` stand for the claims; the rest is
    /// taken as it is.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("'}}' without '{{' in {template:?}"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("'{{' without '}}' in {template:?}"))?;
            let claim = match &after[..close] {
                "sub" => Claim::Sub,
                "jti" => Claim::Jti,
                "profile_id" => Claim::ProfileId,
                "role" => Claim::Role,
                other => {
                    return Err(format!(
                        "{{{other}}} is not a claim a key can use: {{sub}}, {{jti}}, {{profile_id}} or {{role}}"
                    ));
                }
            };
            parts.push(Part::Claim(claim));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Claim(_))) {
            return Err(format!(
                "{template:?} names no claim: one key for every token (e.g. {{sub}}:access)"
            ));
        }
        Ok(KeyTemplate(parts))
    }

    /// The key for a token; `None` when a claim it names is absent.
    pub fn render<'a>(&self, claim: impl Fn(Claim) -> Option<&'a str>) -> Option<String> {
        let mut key = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => key.push_str(t),
                Part::Claim(c) => key.push_str(claim(*c)?),
            }
        }
        Some(key)
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn key_templates_name_claims() {
        let t = KeyTemplate::parse("{sub}:access").unwrap();
        let claims = |c: Claim| match c {
            Claim::Sub => Some("u-1"),
            Claim::Jti => Some("j-9"),
            _ => None,
        };
        assert_eq!(t.render(claims).as_deref(), Some("u-1:access"));
        let t = KeyTemplate::parse("revoked:{jti}").unwrap();
        assert_eq!(t.render(claims).as_deref(), Some("revoked:j-9"));
        let t = KeyTemplate::parse("s:{profile_id}:{sub}").unwrap();
        assert_eq!(t.render(claims), None, "an absent claim: no key");
        for bad in [
            "{user}:access",
            "{sub:access",
            "sub}:access",
            "constant",
            "",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
