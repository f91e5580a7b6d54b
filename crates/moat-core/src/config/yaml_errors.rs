//! How YAML decoding errors read: serde's own wording for serde's errors
//! (`unknown variant `x`, expected `a` or `b``), plain words for the
//! parser's structural ones, and the offending scalar named when a value
//! does not fit its type. Positions are reported separately as `(line N)`.

use std::borrow::Cow;

use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};

/// The message for `err`, without its position; `text` is the decoded
/// document, used to quote a scalar that did not fit.
pub(super) fn message(err: &Error, text: &str) -> String {
    match err.without_snippet() {
        Error::SerdeUnknownVariant { variant, expected, .. } => {
            format!("unknown variant `{variant}`, expected {}", one_of(expected))
        }
        Error::SerdeUnknownField { field, expected, .. } => {
            format!("unknown field `{field}`, expected {}", one_of(expected))
        }
        Error::Unexpected { expected, location } => match found_at(text, location.line(), location.column()) {
            Some(found) => format!("invalid type: {found}, expected {}", plain_kind(expected)),
            None => format!("expected {}", plain_kind(expected)),
        },
        Error::InvalidScalar { ty, location } => match scalar_at(text, location.line(), location.column()) {
            Some(scalar) => format!("invalid value `{scalar}`, expected {ty}"),
            None => format!("invalid value, expected {ty}"),
        },
        other => Wording.format_message(other).into_owned(),
    }
}

/// serde's list of alternatives: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_string(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        many => {
            let quoted: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

/// The parser names token kinds ("mapping start"); people read shapes.
fn plain_kind(expected: &str) -> &str {
    match expected {
        "mapping start" => "a map",
        "sequence start" => "a sequence",
        other => other,
    }
}

/// What kind of node starts at 1-based `line`/`column`, in serde's words.
fn found_at(text: &str, line: u64, column: u64) -> Option<String> {
    let node = scalar_at(text, line, column)?;
    Some(match node.chars().next()? {
        '-' if node.len() == 1 || node[1..].starts_with(' ') => "sequence".to_string(),
        '[' => "sequence".to_string(),
        '{' => "map".to_string(),
        _ if node.contains(": ") || node.ends_with(':') => "map".to_string(),
        _ => format!("scalar `{node}`"),
    })
}

/// The scalar starting at 1-based `line`/`column`, up to a comment or the
/// end of the line.
fn scalar_at(text: &str, line: u64, column: u64) -> Option<&str> {
    let line = text.lines().nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(column).ok()?.checked_sub(1)?;
    let rest = line.get(start..)?;
    let end = rest.find(" #").unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|s| !s.is_empty())
}

/// The library's own wording for everything else.
struct Wording;

impl MessageFormatter for Wording {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        DefaultMessageFormatter.format_message(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_read_like_serde() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b"]), "`a` or `b`");
        assert_eq!(one_of(&["a", "b", "c"]), "one of `a`, `b`, `c`");
    }

    #[test]
    fn the_scalar_is_quoted_from_the_source() {
        assert_eq!(scalar_at("a: 1\nport: -1 # no\n", 2, 7), Some("-1"));
        assert_eq!(scalar_at("a: 1\n", 5, 1), None);
        assert_eq!(found_at("env:\n  - a\n", 2, 3).as_deref(), Some("sequence"));
        assert_eq!(found_at("env: [a]\n", 1, 6).as_deref(), Some("sequence"));
        assert_eq!(found_at("env:\n  a: b\n", 2, 3).as_deref(), Some("map"));
        assert_eq!(found_at("env: x\n", 1, 6).as_deref(), Some("scalar `x`"));
    }
}
