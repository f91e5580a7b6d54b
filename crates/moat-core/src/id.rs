//! Run ids: `run_` followed by 12 lowercase hex digits from a CSPRNG.

use std::fmt;
use std::str::FromStr;

use rand::RngExt;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "run_";
const HEX_LEN: usize = 12;

/// The identity of one run; also the name of its container and (prefixed
/// with `moat-`) of its network.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

/// A string that is not a run id.
#[derive(Debug, thiserror::Error)]
#[error("invalid run id {0:?}: expected `run_` followed by 12 lowercase hex digits")]
pub struct InvalidRunId(String);

impl RunId {
    /// A fresh id from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let bytes: [u8; HEX_LEN / 2] = rand::rng().random();
        RunId(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Name of the per-run network.
    pub fn network_name(&self) -> String {
        format!("moat-{}", self.0)
    }

    /// Whether `s` has the exact shape of a run id.
    pub fn is_valid(s: &str) -> bool {
        s.len() == PREFIX.len() + HEX_LEN
            && s.starts_with(PREFIX)
            && s[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The run id of a per-run network name (`moat-run_…`), if it is one.
    pub fn from_network_name(name: &str) -> Option<Self> {
        name.strip_prefix("moat-").and_then(|s| s.parse().ok())
    }
}

impl FromStr for RunId {
    type Err = InvalidRunId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(s) {
            Ok(RunId(s.to_string()))
        } else {
            Err(InvalidRunId(s.to_string()))
        }
    }
}

impl TryFrom<String> for RunId {
    type Error = InvalidRunId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_have_the_documented_shape() {
        let id = RunId::generate();
        assert!(RunId::is_valid(id.as_str()), "{id}");
        assert_eq!(id.as_str().len(), 16);
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids: HashSet<_> = (0..10_000).map(|_| RunId::generate()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn parsing_rejects_wrong_shapes() {
        for bad in [
            "run_0123456789a",
            "run_0123456789abc",
            "run_0123456789AB",
            "xun_0123456789ab",
            "run_0123456789ag",
            "",
        ] {
            assert!(bad.parse::<RunId>().is_err(), "{bad}");
        }
        assert!("run_0123456789ab".parse::<RunId>().is_ok());
    }

    #[test]
    fn network_names_round_trip() {
        let id = RunId::generate();
        assert_eq!(RunId::from_network_name(&id.network_name()), Some(id));
        assert_eq!(RunId::from_network_name("moat-other"), None);
    }
}
