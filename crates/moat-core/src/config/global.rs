//! The global `MOAT_HOME/config.yaml`: proxy port, daemon timings, the
//! network subnet pool, default runtime and image. A missing file means the
//! defaults; a malformed one is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::shapes::RuntimeKind;
use super::values;
use super::{ConfigError, Problem, Warning, decode, read};
use crate::paths::MoatHome;

/// The most ready-made networks of one kind `network_pool_size` may ask for.
pub const MAX_NETWORK_POOL_SIZE: u32 = 16;

/// Global settings; every key has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalConfig {
    /// Port the credential proxy listens on; 0 picks a free one.
    pub proxy_port: u16,
    /// Port of the routing endpoint (`ports:`, `https://web.<run>.localhost:<port>/`);
    /// 0 keeps the previous daemon's, else picks a free one.
    pub routing_port: u16,
    /// Tunnels (CONNECTs) one run may hold open in the proxy at once.
    pub proxy_max_tunnels: u32,
    /// Concurrent HTTP/2 streams on one of a run's tunnels.
    pub proxy_max_streams: u32,
    /// New tunnels (TLS handshakes) one run may open per second.
    pub proxy_handshakes_per_second: u32,
    /// The daemon exits after this long with no live run and no client.
    #[serde(deserialize_with = "values::duration", serialize_with = "values::serialize_duration")]
    pub idle_timeout: Duration,
    /// How often the daemon's reaper sweeps for orphans.
    #[serde(deserialize_with = "values::duration", serialize_with = "values::serialize_duration")]
    pub reap_interval: Duration,
    /// An orphan is removed only when a later sweep, at least this long
    /// after the first, still finds it (absorbs asynchronous teardown).
    #[serde(deserialize_with = "values::duration", serialize_with = "values::serialize_duration")]
    pub reap_second_sighting: Duration,
    /// Bound on creating one run's network.
    #[serde(deserialize_with = "values::duration", serialize_with = "values::serialize_duration")]
    pub network_create_timeout: Duration,
    /// Address range per-run networks are carved from.
    pub subnet_pool: SubnetPool,
    /// Prefix length of each per-run network (default /28).
    pub subnet_prefix: u8,
    /// Ready-made networks the daemon keeps of each kind (ordinary, and
    /// internal for strict runs), so that a run takes one instead of
    /// creating one; 0 disables the warm pool.
    pub network_pool_size: u32,
    /// Runtime used when neither `--runtime`, `MOAT_RUNTIME` nor moat.yaml
    /// names one.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "values::user_runtime")]
    pub runtime: Option<RuntimeKind>,
    /// Image used when neither `--image`, `MOAT_BASE_IMAGE` nor moat.yaml
    /// names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// PEM file with an extra root the proxy trusts for upstream servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_ca_file: Option<PathBuf>,
    /// PEM bundle trusted while building images from `dependencies:` (apt,
    /// pip, npm, curl), for networks that intercept TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_ca_file: Option<PathBuf>,
    /// Host → IP overrides for the proxy's upstream connections. For tests
    /// and debugging only, not for normal use: it bypasses DNS.
    #[serde(deserialize_with = "values::or_empty", skip_serializing_if = "BTreeMap::is_empty")]
    pub resolve: BTreeMap<String, IpAddr>,
    /// The key that opens an interactive run's escape menu (detach, stop,
    /// redraw); `ctrl-/` by default.
    pub escape_key: super::EscapeKey,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            proxy_port: 0,
            routing_port: 0,
            proxy_max_tunnels: 256,
            proxy_max_streams: 100,
            proxy_handshakes_per_second: 50,
            idle_timeout: Duration::from_secs(5 * 60),
            reap_interval: Duration::from_secs(10 * 60),
            reap_second_sighting: Duration::from_secs(60),
            network_create_timeout: Duration::from_secs(30),
            subnet_pool: SubnetPool::default(),
            subnet_prefix: 28,
            network_pool_size: 2,
            runtime: None,
            base_image: None,
            extra_ca_file: None,
            build_ca_file: None,
            resolve: BTreeMap::new(),
            escape_key: super::EscapeKey::default(),
        }
    }
}

/// An IPv4 block such as `10.213.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetPool {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Default for SubnetPool {
    fn default() -> Self {
        SubnetPool {
            base: Ipv4Addr::new(10, 213, 0, 0),
            prefix_len: 16,
        }
    }
}

impl std::str::FromStr for SubnetPool {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid subnet {text:?}: expected an IPv4 CIDR like \"10.213.0.0/16\"");
        let (addr, len) = text.split_once('/').ok_or_else(invalid)?;
        let base: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = len.parse().ok().filter(|&l| l <= 32).ok_or_else(invalid)?;
        let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        if u32::from(base) & host_bits != 0 {
            return Err(format!(
                "invalid subnet {text:?}: the address has bits set beyond /{prefix_len}"
            ));
        }
        Ok(SubnetPool { base, prefix_len })
    }
}

impl fmt::Display for SubnetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl Serialize for SubnetPool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        values::display(self, s)
    }
}

impl<'de> Deserialize<'de> for SubnetPool {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        values::parse_str(de, "an IPv4 CIDR", str::parse)
    }
}

/// The global config as read, with warnings about keys moat ignores.
#[derive(Clone, Debug)]
pub struct LoadedGlobal {
    pub config: GlobalConfig,
    /// The file read; `None` when it does not exist.
    pub path: Option<PathBuf>,
    pub warnings: Vec<Warning>,
}

/// Loads `MOAT_HOME/config.yaml`; a missing file yields the defaults.
pub fn load_global(home: &MoatHome) -> Result<LoadedGlobal, ConfigError> {
    let path = home.config_file();
    if !path.exists() {
        return Ok(LoadedGlobal {
            config: GlobalConfig::default(),
            path: None,
            warnings: Vec::new(),
        });
    }
    let text = read(&path)?;
    let (config, unknown): (GlobalConfig, _) = decode(&path, &text)?;
    let mut problems = config.problems();
    problems.extend(unknown.iter().filter(|key| is_telemetry_key(key)).map(|key| {
        Problem::new(
            key.clone(),
            "OpenTelemetry export is not available in this version of moat; remove this key",
        )
    }));
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { path, problems });
    }
    let warnings = unknown
        .into_iter()
        .map(|key| Warning {
            path: path.clone(),
            key,
            message: "unknown key; ignored".into(),
        })
        .collect();
    Ok(LoadedGlobal {
        config,
        path: Some(path),
        warnings,
    })
}

/// Keys that would configure OpenTelemetry export (issue 16), which is not
/// built: refused rather than ignored, so nobody believes traces are exported.
fn is_telemetry_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["otlp", "otel", "opentelemetry", "telemetry"]
        .iter()
        .any(|word| key.contains(word))
}

impl GlobalConfig {
    /// Rules that relate several fields.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !(self.subnet_pool.prefix_len..=30).contains(&self.subnet_prefix) {
            problems.push(Problem::new(
                "subnet_prefix",
                format!(
                    "must be between the pool's /{} and /30, got /{}",
                    self.subnet_pool.prefix_len, self.subnet_prefix
                ),
            ));
        }
        if self.network_pool_size > MAX_NETWORK_POOL_SIZE {
            problems.push(Problem::new(
                "network_pool_size",
                format!(
                    "must be at most {MAX_NETWORK_POOL_SIZE}, got {}",
                    self.network_pool_size
                ),
            ));
        }
        for (name, value) in [
            ("proxy_max_tunnels", self.proxy_max_tunnels),
            ("proxy_max_streams", self.proxy_max_streams),
            ("proxy_handshakes_per_second", self.proxy_handshakes_per_second),
        ] {
            if value == 0 {
                problems.push(Problem::new(name, "must be greater than 0"));
            }
        }
        for (name, value) in [
            ("idle_timeout", self.idle_timeout),
            ("reap_interval", self.reap_interval),
            ("network_create_timeout", self.network_create_timeout),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(name, "must be greater than 0"));
            }
        }
        problems
    }

    /// How many per-run networks the pool holds.
    pub fn subnet_count(&self) -> u32 {
        let bits = u32::from(self.subnet_prefix.saturating_sub(self.subnet_pool.prefix_len));
        1u32.checked_shl(bits).unwrap_or(u32::MAX)
    }
}
