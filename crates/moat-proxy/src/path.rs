//! Request paths as method/path rules see them (proxy.md § CONNECT and
//! interception). The agent writes the request target, so a rule checked
//! against the raw text is checked against whatever spelling it chose:
//! `/repos/../orgs/x`, `/./admin`, `/%61dmin`, `/admin;x` and `//admin` all
//! reach paths their text does not show. [`normalize_path`] brings every
//! spelling to one form, which is both what rules match and what is
//! forwarded, so the server sees what was checked; spellings servers
//! disagree on (an encoded `/`, `\`, `;` or `%`, NUL and other control
//! characters) are refused instead.

use std::fmt::Write as _;

/// Why a path cannot be judged by method/path rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path holds a malformed percent-escape")]
    BadEscape,
    #[error("the path holds an encoded slash (%2F), which servers split differently")]
    EncodedSlash,
    #[error("the path holds a backslash, which some servers read as /")]
    Backslash,
    #[error("the path holds an encoded NUL or control character")]
    EncodedControl,
    #[error("the path holds an encoded semicolon (%3B), which some servers read as a parameter separator")]
    EncodedSemicolon,
    #[error("the path holds an encoded percent sign (%25), which servers that decode twice read differently")]
    EncodedPercent,
}

/// A path brought to one form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NormalizedPath {
    /// What is forwarded: unreserved characters decoded, other escapes in
    /// upper case, non-ASCII bytes escaped, dot segments resolved, empty
    /// segments dropped, `;params` kept on their segment.
    pub(crate) forward: String,
    /// What rules match: [`NormalizedPath::forward`] without `;params`.
    pub(crate) matching: String,
}

/// Normalises the path part (no query) of a request target.
pub(crate) fn normalize_path(raw: &str) -> Result<NormalizedPath, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    // (segment with its params, segment name without them)
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        let segment = normalize_segment(raw_segment)?;
        let name = segment.split(';').next().unwrap_or_default();
        trailing_slash = true;
        match name {
            // `//`, `/;x/`: an empty name is dropped, params and all.
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            _ => {
                trailing_slash = false;
                let name = name.to_string();
                kept.push((segment, name));
            }
        }
    }
    let join = |part: fn(&(String, String)) -> &str| {
        let mut path = String::new();
        for segment in &kept {
            path.push('/');
            path.push_str(part(segment));
        }
        if path.is_empty() || trailing_slash {
            path.push('/');
        }
        path
    };
    Ok(NormalizedPath {
        forward: join(|(segment, _)| segment),
        matching: join(|(_, name)| name),
    })
}

/// Normalises one segment's percent-encoding: unreserved characters decoded,
/// other escapes in upper case, non-ASCII bytes escaped; ambiguous bytes refused.
pub(crate) fn normalize_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let decoded = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(PathError::BadEscape)?;
            match decoded {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::EncodedSemicolon),
                b'%' => return Err(PathError::EncodedPercent),
                0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl),
                b if is_unreserved(b) => out.push(char::from(b)),
                b => push_escaped(&mut out, b),
            }
            i += 3;
            continue;
        }
        match byte {
            b'\\' => return Err(PathError::Backslash),
            0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl),
            0x80..=0xff => push_escaped(&mut out, byte),
            _ => out.push(char::from(byte)),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 unreserved characters: decoding them never changes meaning.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn push_escaped(out: &mut String, byte: u8) {
    let _ = write!(out, "%{byte:02X}");
}

/// Header names that make frameworks (Rails, Express, Spring, Symfony…)
/// treat a request as another method.
pub(crate) const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The query parameter with the same effect (`?_method=DELETE`).
pub(crate) const METHOD_OVERRIDE_PARAM: &str = "_method";

/// Whether the query names the method-override parameter (the name compared
/// percent-decoded and ignoring case).
pub(crate) fn query_overrides_method(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        percent_decode(name).eq_ignore_ascii_case(METHOD_OVERRIDE_PARAM.as_bytes())
    })
}

/// The byte a valid `%XX` escape at `bytes[i]` stands for.
pub(crate) fn escaped_byte(bytes: &[u8], i: usize) -> Option<u8> {
    (bytes.get(i) == Some(&b'%'))
        .then(|| bytes.get(i + 1..i + 3))
        .flatten()
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
}

/// Decodes every valid `%XX` escape (and `+` as space, as in form data);
/// anything else is kept as it is.
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = escaped_byte(bytes, i);
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(raw: &str) -> String {
        normalize_path(raw).unwrap().forward
    }

    fn matching(raw: &str) -> String {
        normalize_path(raw).unwrap().matching
    }

    /// Every spelling an agent can use to reach `/admin/users` while a rule
    /// reads another path: each must come out as the path it reaches.
    #[test]
    fn tricks_normalise_to_the_path_they_reach() {
        let cases = [
            // (raw request path, what rules match, what is forwarded)
            ("/admin/users", "/admin/users", "/admin/users"),
            // dot segments
            ("/repos/../admin/users", "/admin/users", "/admin/users"),
            ("/./admin/users", "/admin/users", "/admin/users"),
            ("/admin/./users", "/admin/users", "/admin/users"),
            ("/../../admin/users", "/admin/users", "/admin/users"),
            ("/repos/x/../../admin/users", "/admin/users", "/admin/users"),
            // encoded dot segments, any case
            ("/repos/%2e%2e/admin/users", "/admin/users", "/admin/users"),
            ("/repos/%2E%2E/admin/users", "/admin/users", "/admin/users"),
            ("/repos/.%2e/admin/users", "/admin/users", "/admin/users"),
            ("/%2e/admin/users", "/admin/users", "/admin/users"),
            // percent-encoded unreserved characters, any case
            ("/%61dmin/users", "/admin/users", "/admin/users"),
            ("/%61%64%6D%69%6e/users", "/admin/users", "/admin/users"),
            ("/adm%69n/%75sers", "/admin/users", "/admin/users"),
            // empty segments
            ("//admin/users", "/admin/users", "/admin/users"),
            ("/admin//users", "/admin/users", "/admin/users"),
            ("///admin///users", "/admin/users", "/admin/users"),
            // ;params: ignored for matching, kept where they belong
            ("/admin;x/users", "/admin/users", "/admin;x/users"),
            ("/admin;a=1;b=2/users", "/admin/users", "/admin;a=1;b=2/users"),
            ("/;x/admin/users", "/admin/users", "/admin/users"),
            ("/repos/..;x/admin/users", "/admin/users", "/admin/users"),
            ("/repos/.;x/../admin/users", "/admin/users", "/admin/users"),
            // combinations
            ("/repos//.%2E/./%61dmin;v=1//users", "/admin/users", "/admin;v=1/users"),
        ];
        for (raw, expected_matching, expected_forward) in cases {
            let path = normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(path.matching, expected_matching, "matching {raw}");
            assert_eq!(path.forward, expected_forward, "forward {raw}");
        }
    }

    #[test]
    fn other_escapes_are_kept_in_upper_case_and_non_ascii_is_escaped() {
        assert_eq!(forward("/a%2ab"), "/a%2Ab");
        assert_eq!(forward("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(forward("/café"), "/caf%C3%A9");
        assert_eq!(forward("/a%20b"), "/a%20b");
        assert_eq!(forward("/a%3fb"), "/a%3Fb");
    }

    #[test]
    fn trailing_slashes_and_the_root_survive() {
        assert_eq!(forward("/"), "/");
        assert_eq!(forward("/repos/"), "/repos/");
        assert_eq!(forward("/repos/x/.."), "/repos/");
        assert_eq!(forward("/repos/x/."), "/repos/x/");
        assert_eq!(forward("/repos//"), "/repos/");
        assert_eq!(forward("/.."), "/");
        assert_eq!(forward("/repos"), "/repos");
        assert_eq!(matching("/repos/"), "/repos/");
    }

    /// Spellings servers disagree on are refused, not guessed.
    #[test]
    fn ambiguous_spellings_are_refused() {
        let cases = [
            ("/repos%2F..%2Fadmin", PathError::EncodedSlash),
            ("/repos%2f..%2fadmin", PathError::EncodedSlash),
            ("/admin%00.json", PathError::EncodedControl),
            ("/admin%0a", PathError::EncodedControl),
            ("/admin%7F", PathError::EncodedControl),
            ("/repos\\..\\admin", PathError::Backslash),
            ("/repos%5c..%5cadmin", PathError::Backslash),
            ("/admin%3bx", PathError::EncodedSemicolon),
            ("/%2561dmin", PathError::EncodedPercent),
            ("/%252e%252e/admin", PathError::EncodedPercent),
            ("/admin%2", PathError::BadEscape),
            ("/admin%zz", PathError::BadEscape),
            ("/admin%", PathError::BadEscape),
            ("*", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn method_override_parameter_is_found_however_spelled() {
        for query in [
            "_method=DELETE",
            "a=1&_method=delete",
            "_METHOD=PUT",
            "%5Fmethod=DELETE",
            "_m%65thod=DELETE",
            "a=1;_method=DELETE",
            "_method",
        ] {
            assert!(query_overrides_method(query), "{query}");
        }
        for query in ["", "method=DELETE", "x_method=DELETE", "a=_method"] {
            assert!(!query_overrides_method(query), "{query}");
        }
    }
}
