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
