//! Request paths the gateway refuses before routing.
//!
//! A prefix router is only as safe as the paths it sees: `/auth/../core/admin` matches
//! `/auth` here but may be normalised to `/core/admin` by an upstream framework. So any
//! dot-segment is refused outright, whether written plainly, percent-encoded (`%2e%2E`), or
//! hidden behind an encoded or back slash (`..%2f`, `..\`), which some frameworks decode
//! into a separator.

/// Why a path was refused; the message goes into the 400 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    DotSegment,
    EncodedNul,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::DotSegment => "the request path must not contain '.' or '..' segments",
            PathError::EncodedNul => "the request path must not contain an encoded NUL (%00)",
        }
    }
}

/// Check a request path (without its query).
pub fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: with no '.', '%' or '\' there is nothing to look at.
    if !bytes.iter().any(|&b| matches!(b, b'.' | b'%' | b'\\')) {
        return Ok(());
    }
    // Walk decoded units, tracking whether the current segment is only dots.
    let mut dots = 0usize; // dots in the current segment, if it holds nothing else
    let mut other = false; // the current segment holds something besides dots
    let mut i = 0;
    while i < bytes.len() {
        let (unit, width) = match bytes[i] {
            b'%' => match decode_hex_pair(bytes.get(i + 1..i + 3)) {
                Some(0) => return Err(PathError::EncodedNul),
                Some(decoded) => (decoded, 3),
                None => (b'%', 1),
            },
            b => (b, 1),
        };
        match unit {
            b'/' | b'\\' => {
                if !other && (dots == 1 || dots == 2) {
                    return Err(PathError::DotSegment);
                }
                dots = 0;
                other = false;
            }
            b'.' => dots += 1,
            _ => other = true,
        }
        i += width;
    }
    if !other && (dots == 1 || dots == 2) {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

fn decode_hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let hex = |b: u8| (b as char).to_digit(16);
    Some((hex(pair[0])? * 16 + hex(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for p in [
            "/",
            "/auth",
            "/auth/api/v1/users",
            "/core/file.json",
            "/a/...",
            "/a/.hidden",
            "/a/..b",
            "/a/b..",
            "/a/%41%42",
            "/a/100%",
            "/a/%zz",
            "/a/%2",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        for p in [
            "/..",
            "/.",
            "/auth/..",
            "/auth/../core",
            "/auth/./x",
            "/auth/.",
            "/auth/%2e%2e/core",
            "/auth/%2E%2E/core",
            "/auth/.%2e/core",
            "/auth/%2e/x",
            "/auth/..%2fcore",
            "/auth/..%2Fcore",
            "/auth/..%5ccore",
            "/auth/..\\core",
            "/auth\\..\\core",
        ] {
            assert_eq!(check_path(p), Err(PathError::DotSegment), "{p}");
        }
    }

    #[test]
    fn other_refusals() {
        assert_eq!(check_path("auth"), Err(PathError::NotAbsolute));
        assert_eq!(check_path(""), Err(PathError::NotAbsolute));
        assert_eq!(check_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(check_path("/a%00b"), Err(PathError::EncodedNul));
    }
}
