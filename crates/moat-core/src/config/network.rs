//! `network:` in moat.yaml: the policy, per-host rules (a host pattern, or a
//! host mapped to `"allow|deny METHOD /path"` request rules) and the host
//! ports a container may reach.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::values;
use crate::HostPattern;

/// What happens to a request no rule matches (`network.policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Everything not denied is allowed (the Go default).
    #[default]
    Permissive,
    /// Only allowed hosts and the hosts of granted credentials.
    Strict,
    /// Permissive for the network, but each request `strict` (with the same
    /// rules) would have refused is recorded in the trace and the audit log.
    /// None of strict's isolation applies (issue 16, docs/policy.md).
    Shadow,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Permissive => "permissive",
            PolicyMode::Strict => "strict",
            PolicyMode::Shadow => "shadow",
        }
    }
}

impl std::str::FromStr for PolicyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "permissive" => Ok(PolicyMode::Permissive),
            "strict" => Ok(PolicyMode::Strict),
            "shadow" => Ok(PolicyMode::Shadow),
            _ => Err(format!(
                "invalid network policy {s:?}: expected \"strict\", \"permissive\" or \"shadow\""
            )),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    pub policy: PolicyMode,
    /// `allow:` is what older Go versions called this list.
    #[serde(deserialize_with = "values::or_empty", alias = "allow")]
    pub rules: Vec<HostRule>,
    /// Host TCP ports the container may connect to (all blocked otherwise).
    #[serde(deserialize_with = "values::port_list")]
    pub host: Vec<u16>,
}

/// A run's network policy as the proxy enforces it: the mode and the host
/// rules, evaluated in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub mode: PolicyMode,
    #[serde(default)]
    pub rules: Vec<HostRule>,
}

impl From<&NetworkConfig> for NetworkPolicy {
    fn from(network: &NetworkConfig) -> Self {
        NetworkPolicy {
            mode: network.policy,
            rules: network.rules.clone(),
        }
    }
}

/// Access to one host pattern (`*` matches one DNS label), optionally
/// narrowed by request rules evaluated in order, first match wins. Written
/// (and sent to the daemon) in the shape moat.yaml uses: the host alone, or
/// the host mapped to its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    pub host: String,
    pub requests: Vec<RequestRule>,
}

impl Serialize for HostRule {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.requests.is_empty() {
            return ser.serialize_str(&self.host);
        }
        let mut map = ser.serialize_map(Some(1))?;
        map.serialize_entry(&self.host, &self.requests)?;
        map.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Allow,
    Deny,
}

/// `allow GET /repos/**`: `*` as method matches any; in the path `*` matches
/// one segment and `**` any number. Written as that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRule {
    pub action: RuleAction,
    pub method: String,
    pub path: String,
}

impl std::str::FromStr for RequestRule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid rule {text:?}: expected \"allow|deny METHOD /path\", like \"allow GET /repos/**\"");
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [action, method, path] = parts.as_slice() else {
            return Err(invalid());
        };
        let action = match *action {
            "allow" => RuleAction::Allow,
            "deny" => RuleAction::Deny,
            _ => return Err(invalid()),
        };
        let method_ok = *method == "*" || method.chars().all(|c| c.is_ascii_alphabetic());
        if !method_ok || !path.starts_with('/') {
            return Err(invalid());
        }
        Ok(RequestRule {
            action,
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
        })
    }
}

impl fmt::Display for RequestRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        };
        write!(f, "{action} {} {}", self.method, self.path)
    }
}

impl Serialize for RequestRule {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestRule {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        values::parse_str(de, "a rule like \"allow GET /path\"", str::parse)
    }
}

/// Checks a host pattern with [`HostPattern`] (the proxy's own parser) and
/// returns its canonical form.
pub fn check_host_pattern(host: &str) -> Result<String, String> {
    HostPattern::parse(host)
        .map(|pattern| pattern.to_string())
        .map_err(|_| {
            format!(
                "invalid host pattern {:?}: expected a host name like \"api.example.com\", \"*.example.com\" \
             or \"api.example.com:8443\"",
                host.trim().to_ascii_lowercase()
            )
        })
}

impl<'de> Deserialize<'de> for HostRule {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(HostRuleVisitor)
    }
}

struct HostRuleVisitor;

impl<'de> Visitor<'de> for HostRuleVisitor {
    type Value = HostRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a host, or a host mapped to a list of \"allow|deny METHOD /path\" rules")
    }

    fn visit_str<E: de::Error>(self, host: &str) -> Result<HostRule, E> {
        Ok(HostRule {
            host: check_host_pattern(host).map_err(E::custom)?,
            requests: Vec::new(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HostRule, A::Error> {
        let Some(host) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "expected a host mapped to its rules, got an empty mapping",
            ));
        };
        let host = check_host_pattern(&host).map_err(de::Error::custom)?;
        let requests: Vec<RequestRule> = map.next_value()?;
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "one host per list entry: write each host as its own \"- host: [rules]\" item",
            ));
        }
        Ok(HostRule { host, requests })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<HostRule, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rules_parse_and_print() {
        let rule: RequestRule = "allow get /repos/**".parse().unwrap();
        assert_eq!(rule.action, RuleAction::Allow);
        assert_eq!(rule.method, "GET");
        assert_eq!(rule.to_string(), "allow GET /repos/**");
        let any: RequestRule = "deny * /**".parse().unwrap();
        assert_eq!((any.action, any.method.as_str()), (RuleAction::Deny, "*"));
    }

    #[test]
    fn request_rules_reject_other_shapes() {
        for bad in ["allow GET", "permit GET /", "allow GET repos", "allow G3T /", ""] {
            let err = bad.parse::<RequestRule>().unwrap_err();
            assert!(err.contains("expected \"allow|deny METHOD /path\""), "{bad}: {err}");
        }
    }

    #[test]
    fn policies_round_trip_in_the_shape_moat_yaml_uses() {
        let policy = NetworkPolicy {
            mode: PolicyMode::Strict,
            rules: vec![
                HostRule {
                    host: "api.example.com".into(),
                    requests: vec!["allow GET /repos/**".parse().unwrap()],
                },
                HostRule {
                    host: "*.example.org:8443".into(),
                    requests: Vec::new(),
                },
            ],
        };
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mode": "strict", "rules": [{"api.example.com": ["allow GET /repos/**"]}, "*.example.org:8443"]})
        );
        assert_eq!(serde_json::from_value::<NetworkPolicy>(json).unwrap(), policy);
    }

    #[test]
    fn host_patterns() {
        assert_eq!(check_host_pattern("API.example.com").unwrap(), "api.example.com");
        assert!(check_host_pattern("*.amazonaws.com").is_ok());
        // Accepted here once and refused by the proxy (issue 18).
        assert!(check_host_pattern("*.*.amazonaws.com").is_err());
        assert!(check_host_pattern("a.*.example.com").is_err());
        assert_eq!(
            check_host_pattern("api.example.com:8443").unwrap(),
            "api.example.com:8443"
        );
        assert!(check_host_pattern("api.example.com:0").is_err());
        assert!(check_host_pattern("api.example.com:http").is_err());
        for bad in ["https://x.com", "x.com/path", "", "a..b", "x.com:"] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }
}
