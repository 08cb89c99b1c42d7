//! CORS, answered in one place for every service.
//!
//! A policy comes from the environment (`CORS_ORIGINS`, `CORS_METHODS`, `CORS_HEADERS`,
//! `CORS_CREDENTIALS`, `CORS_MAX_AGE`) or from a service's `"cors"` block, which replaces
//! the global one for its route; both are validated as `config::cors` (plain data), and
//! [`Policy::new`] makes their header values once. Preflights are answered by the gateway before auth and
//! rate limits (the service never sees them); a preflight from an origin the policy does
//! not allow gets a 403 without CORS headers. Responses to allowed origins carry
//! `Access-Control-Allow-Origin` (the origin itself, so credentials can work) and expose
//! the gateway's headers, on the gateway's own errors too, so a browser app can read
//! them. `Vary: Origin` is on every response of a route with a policy.

use http::HeaderValue;
use http::header::InvalidHeaderValue;
use pingora_core::Result;
use pingora_http::ResponseHeader;

use crate::config::cors::{Cors, Origins};

/// The response headers a browser app may read.
const EXPOSE: &str =
    "X-Request-ID, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset";

/// One CORS policy, with its header values prepared once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Allowed origins exactly as browsers send them (`https://app.example`), or any.
    origins: Origins,
    methods: HeaderValue,
    /// `None`: any header the preflight asks for.
    headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl Policy {
    /// The policy `cors` describes (validated: its lists are tokens, so each is a header
    /// value), with its header values made once.
    pub fn new(cors: &Cors) -> Result<Policy, InvalidHeaderValue> {
        Ok(Policy {
            origins: cors.origins.clone(),
            methods: HeaderValue::from_str(&cors.methods)?,
            headers: cors
                .headers
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()?,
            credentials: cors.credentials,
            max_age: HeaderValue::from(cors.max_age),
        })
    }
}

/// What the gateway does with a request under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No `Origin`: not a CORS request (`Vary: Origin` still goes on the response).
    NotCors,
    /// A preflight from an allowed origin: answer 204 with these headers.
    Preflight(Vec<(&'static str, HeaderValue)>),
    /// A preflight from an origin the policy does not allow: 403.
    Forbidden,
    /// An actual request: these headers go on its response (none for a disallowed origin).
    Actual(Vec<(&'static str, HeaderValue)>),
}

impl Decision {
    /// The headers for the response to the request this decision is about, when it is
    /// answered as an error (a refusal or 404): never those of a preflight.
    pub fn into_response_headers(self) -> Vec<(&'static str, HeaderValue)> {
        match self {
            Decision::Actual(headers) => headers,
            _ => Vec::new(),
        }
    }
}

impl Policy {
    /// Decide for a request with `origin`; `preflight`: `OPTIONS` with
    /// `Access-Control-Request-Method`, whose `Access-Control-Request-Headers` is
    /// `request_headers`.
    pub fn decide(
        &self,
        origin: Option<&HeaderValue>,
        preflight: bool,
        request_headers: Option<&HeaderValue>,
    ) -> Decision {
        let Some(origin) = origin else {
            return Decision::NotCors;
        };
        let allowed = match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        };
        if !allowed {
            return if preflight {
                Decision::Forbidden
            } else {
                Decision::Actual(Vec::new())
            };
        }
        let mut headers = vec![("access-control-allow-origin", origin.clone())];
        if self.credentials {
            headers.push((
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            ));
        }
        if preflight {
            headers.push(("access-control-allow-methods", self.methods.clone()));
            let allow_headers = match (&self.headers, request_headers) {
                (Some(list), _) => Some(list.clone()),
                (None, asked) => asked.cloned(),
            };
            if let Some(h) = allow_headers {
                headers.push(("access-control-allow-headers", h));
            }
            headers.push(("access-control-max-age", self.max_age.clone()));
            Decision::Preflight(headers)
        } else {
            headers.push((
                "access-control-expose-headers",
                HeaderValue::from_static(EXPOSE),
            ));
            Decision::Actual(headers)
        }
    }
}

/// Put `headers` and `Vary: Origin` on a response (added to the service's own `Vary`).
pub fn apply(resp: &mut ResponseHeader, headers: &[(&'static str, HeaderValue)]) -> Result<()> {
    for (name, value) in headers {
        resp.insert_header(*name, value.clone())?;
    }
    let varies_by_origin = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"origin") || t.trim_ascii() == b"*")
    });
    if !varies_by_origin {
        resp.append_header(http::header::VARY, HeaderValue::from_static("Origin"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cors::{DEFAULT_METHODS, PolicySpec};

    fn policy(origins: &[&str], credentials: bool) -> Policy {
        let cors = PolicySpec {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            credentials,
            ..Default::default()
        }
        .build()
        .unwrap();
        Policy::new(&cors).unwrap()
    }

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn names(headers: &[(&'static str, HeaderValue)]) -> Vec<&'static str> {
        headers.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn preflight_from_an_allowed_origin() {
        let p = policy(&["https://app.example"], true);
        let Decision::Preflight(h) = p.decide(Some(&hv("https://app.example")), true, None) else {
            panic!("not a preflight answer");
        };
        assert_eq!(
            names(&h),
            [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-max-age"
            ]
        );
        assert_eq!(h[0].1, "https://app.example");
        assert_eq!(h[2].1, DEFAULT_METHODS);
        assert_eq!(h[4].1, "600");
    }

    #[test]
    fn disallowed_origins_get_nothing() {
        let p = policy(&["https://app.example"], false);
        assert_eq!(
            p.decide(Some(&hv("https://evil.example")), true, None),
            Decision::Forbidden
        );
        assert_eq!(
            p.decide(Some(&hv("https://app.example.evil")), false, None),
            Decision::Actual(vec![])
        );
        assert_eq!(p.decide(None, false, None), Decision::NotCors);
    }

    #[test]
    fn actual_requests_expose_the_gateway_headers() {
        let p = policy(&["*"], false);
        let Decision::Actual(h) = p.decide(Some(&hv("https://any.example")), false, None) else {
            panic!();
        };
        assert_eq!(h[0].1, "https://any.example", "the origin, never *");
        assert_eq!(h[1].0, "access-control-expose-headers");
        assert!(h[1].1.to_str().unwrap().contains("RateLimit-Remaining"));
    }

    #[test]
    fn any_header_reflects_what_the_preflight_asks() {
        let cors = PolicySpec {
            origins: vec!["*".into()],
            headers: vec!["*".into()],
            ..Default::default()
        }
        .build()
        .unwrap();
        let p = Policy::new(&cors).unwrap();
        let Decision::Preflight(h) =
            p.decide(Some(&hv("https://a.example")), true, Some(&hv("X-Custom")))
        else {
            panic!();
        };
        assert!(h.contains(&("access-control-allow-headers", hv("X-Custom"))));
    }

    #[test]
    fn vary_origin_is_added_once() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Vary", "Accept-Encoding").unwrap();
        apply(&mut resp, &[]).unwrap();
        apply(&mut resp, &[]).unwrap();
        let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
        assert_eq!(vary, [&hv("Accept-Encoding"), &hv("Origin")]);
    }
}
