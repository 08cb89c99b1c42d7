//! Where a request carries its access token: `Authorization: Bearer`, else the
//! `access_token` cookie, else, for WebSocket upgrades only (browsers cannot set headers
//! on them; Phoenix clients send `/socket/websocket?token=...`), the `token` query
//! parameter.

use http::HeaderMap;

/// The token a request carries, if any. `query` is the raw query (without `?`).
pub fn find<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    websocket: bool,
) -> Option<&'a str> {
    bearer(headers)
        .or_else(|| cookie(headers, "access_token"))
        .or_else(|| {
            query
                .filter(|_| websocket)
                .and_then(|q| query_param(q, "token"))
        })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"'))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_then_cookie_then_websocket_query() {
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "access_token=d.e.f"),
        ]);
        assert_eq!(find(&h, Some("token=g.h.i"), true), Some("a.b.c"));
        let h = headers(&[("cookie", "theme=dark; access_token=d.e.f; x=1")]);
        assert_eq!(find(&h, Some("token=g.h.i"), true), Some("d.e.f"));
        let h = HeaderMap::new();
        assert_eq!(find(&h, Some("vsn=2.0.0&token=g.h.i"), true), Some("g.h.i"));
        assert_eq!(
            find(&h, Some("token=g.h.i"), false),
            None,
            "query only for WebSockets"
        );
        assert_eq!(find(&h, None, true), None);
    }

    #[test]
    fn other_schemes_and_empty_values_are_no_token() {
        for value in ["Basic dTpw", "Bearer ", "Bearer", "a.b.c"] {
            let mut h = HeaderMap::new();
            h.insert("authorization", http::HeaderValue::from_static(value));
            assert_eq!(find(&h, None, false), None, "{value}");
        }
        let h = headers(&[("authorization", "bearer  x.y.z ")]);
        assert_eq!(find(&h, None, false), Some("x.y.z"));
        let h = headers(&[("cookie", "access_token=; my_access_token=z")]);
        assert_eq!(find(&h, None, false), None);
        assert_eq!(find(&HeaderMap::new(), Some("token="), true), None);
    }
}
