//! A CORS policy as `services.json` (a service's `"cors"`) or the environment (`CORS_*`)
//! writes it ([`PolicySpec`]), and validated ([`Cors`]): plain data. `edge::cors` prepares
//! its header values once and decides each request with it.

/// Methods allowed when the policy does not list them.
pub const DEFAULT_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers allowed when the policy does not list them.
pub const DEFAULT_HEADERS: &str = "Authorization, Content-Type, X-Request-ID";
/// How long a browser may cache a preflight when the policy does not say (seconds).
pub const DEFAULT_MAX_AGE: u64 = 600;

/// A validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins exactly as browsers send them (`https://app.example`), or any.
    pub origins: Origins,
    /// `Access-Control-Allow-Methods`: the listed methods, or [`DEFAULT_METHODS`].
    pub methods: String,
    /// `Access-Control-Allow-Headers`: the listed headers, or [`DEFAULT_HEADERS`]; `None`:
    /// any header the preflight asks for.
    pub headers: Option<String>,
    pub credentials: bool,
    /// Seconds a browser may cache a preflight.
    pub max_age: u64,
}

/// The origins a policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    List(Vec<String>),
}

/// A policy as written (services.json or the environment), before validation.
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<u64>,
}

/// Why a spec is not a usable policy, and in which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

impl PolicySpec {
    pub fn build(self) -> Result<Cors, SpecError> {
        let err = |field, message: String| SpecError { field, message };
        if self.origins.is_empty() {
            return Err(err(
                "origins",
                "must list at least one origin (or \"*\")".into(),
            ));
        }
        let any = self.origins.iter().any(|o| o == "*");
        let origins = if any {
            if self.credentials {
                return Err(err(
                    "credentials",
                    "cannot be true with origin \"*\": any site could then act as the user; \
                     list the origins"
                        .into(),
                ));
            }
            Origins::Any
        } else {
            for o in &self.origins {
                check_origin(o).map_err(|m| err("origins", m))?;
            }
            Origins::List(self.origins)
        };
        // Tokens are visible ASCII without commas, so the joined list is a header value.
        let list = |items: Vec<String>, default: &str, field| -> Result<String, SpecError> {
            let bad = items
                .iter()
                .find(|i| i.is_empty() || !i.bytes().all(|b| b.is_ascii_graphic() && b != b','));
            if let Some(bad) = bad {
                return Err(err(field, format!("'{bad}' is not a token")));
            }
            Ok(if items.is_empty() {
                default.to_owned()
            } else {
                items.join(", ")
            })
        };
        let any_header = self.headers.iter().any(|h| h == "*");
        let headers = if any_header {
            None
        } else {
            Some(list(self.headers, DEFAULT_HEADERS, "headers")?)
        };
        let max_age = self.max_age.unwrap_or(DEFAULT_MAX_AGE);
        if max_age > 86_400 {
            return Err(err("max_age", format!("{max_age} s is more than a day")));
        }
        Ok(Cors {
            origins,
            methods: list(self.methods, DEFAULT_METHODS, "methods")?,
            headers,
            credentials: self.credentials,
            max_age,
        })
    }
}

/// `scheme://host[:port]`, as an `Origin` header carries it.
fn check_origin(o: &str) -> Result<(), String> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("'{o}' is not an origin (https://host[:port])"))?;
    if rest.is_empty() || rest.contains('/') || !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "'{o}' is not an origin: scheme, host and port only, no path or trailing '/'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_that_would_be_unsafe_or_wrong_are_refused() {
        let spec = |origins: &[&str], credentials| PolicySpec {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            credentials,
            ..Default::default()
        };
        assert_eq!(spec(&["*"], true).build().unwrap_err().field, "credentials");
        assert_eq!(spec(&[], false).build().unwrap_err().field, "origins");
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/x",
            "https://",
        ] {
            assert_eq!(
                spec(&[bad], false).build().unwrap_err().field,
                "origins",
                "{bad}"
            );
        }
        let mut s = spec(&["https://a.example"], false);
        s.methods = vec!["GET, POST".into()];
        assert_eq!(s.build().unwrap_err().field, "methods");
        let mut s = spec(&["https://a.example"], false);
        s.max_age = Some(1_000_000);
        assert_eq!(s.build().unwrap_err().field, "max_age");
    }
}
