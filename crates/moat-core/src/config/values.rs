//! Value shapes shared by both configuration files, checked while decoding so
//! that their errors carry the YAML line: ports, durations, and strings
//! written as bare YAML scalars.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// Parses `500ms`, `30s`, `5m`, `1h` (one number and one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid duration {text:?}: expected a number and a unit (ms, s, m, h), like \"30s\"");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Formats a duration the way [`parse_duration`] reads it, with the largest
/// unit that divides it exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis != 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

pub(super) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    parse_str(de, "a duration like \"30s\"", parse_duration)
}

pub(super) fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// A key written without a value (`mounts:` with every entry commented
/// out, common in Go-era files) means the default, as an absent key does.
pub(super) fn or_empty<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

// === checked scalars ===
//
// Checks run inside the visitor so that the decoder attributes their errors
// to the value's own path and line, not to the enclosing mapping.

/// Decodes a string and converts it with `parse`.
pub(super) fn parse_str<'de, D, T>(
    de: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_str(StrWith { expecting, parse })
}

struct StrWith<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrWith<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

/// Decodes a number (integers, or floats where `check` accepts them) and
/// converts it with `check`.
pub(super) fn parse_number<'de, D, T>(
    de: D,
    expecting: &'static str,
    check: fn(f64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_any(NumberWith { expecting, check })
}

/// Like [`parse_number`] for integers only.
pub(super) fn parse_int<'de, D, T>(
    de: D,
    expecting: &'static str,
    check: fn(i64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_i64(IntWith { expecting, check })
}

struct NumberWith<T> {
    expecting: &'static str,
    check: fn(f64) -> Result<T, String>,
}

impl<T> Visitor<'_> for NumberWith<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }
}

struct IntWith<T> {
    expecting: &'static str,
    check: fn(i64) -> Result<T, String>,
}

impl<T> Visitor<'_> for IntWith<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

// === ports ===

/// A TCP port number, 1–65535.
struct PortValue(u16);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        parse_int(de, "a port number", |n| {
            u16::try_from(n)
                .ok()
                .filter(|&p| p != 0)
                .map(PortValue)
                .ok_or_else(|| format!("must be a port number from 1 to 65535, got {n}"))
        })
    }
}

pub(super) fn port_map<'de, D: Deserializer<'de>>(de: D) -> Result<BTreeMap<String, u16>, D::Error> {
    let ports: BTreeMap<String, PortValue> = or_empty(de)?;
    Ok(ports.into_iter().map(|(k, v)| (k, v.0)).collect())
}

pub(super) fn port_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u16>, D::Error> {
    let ports: Vec<PortValue> = or_empty(de)?;
    Ok(ports.into_iter().map(|p| p.0).collect())
}

// === scalars as strings ===

/// A string that may be written as any YAML scalar (`DEBUG: true`,
/// `PORT: 3000`); moat.yaml users rarely remember to quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = ScalarString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
        Ok(ScalarString(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarString, E> {
        Ok(ScalarString(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
        Ok(ScalarString(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
        Ok(ScalarString(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarString, E> {
        Ok(ScalarString(v.to_string()))
    }
}

pub(super) fn scalar_map<'de, D: Deserializer<'de>>(de: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map: BTreeMap<String, ScalarString> = or_empty(de)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// An optional string written as any YAML scalar (`version: 15`).
pub(super) fn optional_scalar<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(Some(ScalarString::deserialize(de)?.0))
}

/// Serializes a value with its `Display` form (for `--json` output).
pub(super) fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Whether `name` can be an environment variable name.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `runtime:` as a user may write it (`docker` or `apple`; never `fake`).
pub(super) fn user_runtime<'de, D: Deserializer<'de>>(de: D) -> Result<Option<super::RuntimeKind>, D::Error> {
    struct UserRuntime(super::RuntimeKind);
    impl<'de> Deserialize<'de> for UserRuntime {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            parse_str(de, "\"docker\", \"apple\" or \"kubernetes\"", str::parse).map(UserRuntime)
        }
    }
    Ok(Option::<UserRuntime>::deserialize(de)?.map(|runtime| runtime.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn durations_reject_other_shapes() {
        for bad in ["", "5", "m", "5 minutes", "1.5s", "-1s", "10d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
        assert!(parse_duration("99999999999999999h").is_err());
    }

    #[test]
    fn durations_format_with_the_largest_exact_unit() {
        for text in ["500ms", "30s", "5m", "1h", "90s", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("PATH"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
