//! moat.yaml values that take more than one shape or carry their own syntax:
//! mounts (`src:dst[:ro]` or an object), the command (a string or a list),
//! secret references (`env://`, `op://`, `ssm://`) and the runtime name.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// === runtime ===

/// Which container runtime runs the workload. Users name `docker`, `apple`
/// or `kubernetes` (parsing refuses anything else); `fake` is the in-memory runtime
/// of moat's own tests, named only on the wire between test code and the
/// daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Apple,
    Kubernetes,
    Fake,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Apple => "apple",
            RuntimeKind::Kubernetes => "kubernetes",
            RuntimeKind::Fake => "fake",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker" => Ok(RuntimeKind::Docker),
            "apple" => Ok(RuntimeKind::Apple),
            "kubernetes" => Ok(RuntimeKind::Kubernetes),
            _ => Err(format!(
                "invalid runtime {s:?}: expected \"docker\", \"apple\" or \"kubernetes\""
            )),
        }
    }
}

// === mounts ===

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountMode {
    #[default]
    Rw,
    Ro,
}

impl std::str::FromStr for MountMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rw" | "" => Ok(MountMode::Rw),
            "ro" => Ok(MountMode::Ro),
            _ => Err(format!("invalid mode {s:?}: expected \"ro\" or \"rw\"")),
        }
    }
}

/// A host directory mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Host path as written; relative paths are relative to the workspace.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    pub mode: MountMode,
    /// Paths under `target` hidden behind an empty tmpfs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl Mount {
    /// The host path, with a relative source taken from `workspace`.
    pub fn host_path(&self, workspace: &Path) -> PathBuf {
        workspace.join(&self.source)
    }

    pub fn read_only(&self) -> bool {
        self.mode == MountMode::Ro
    }
}

/// Parses the string form `source:target[:ro|rw]` (also `--mount`).
pub fn parse_mount(text: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, MountMode::Rw),
        [source, target, mode] => (*source, *target, mode.parse()?),
        _ => {
            return Err(format!("invalid mount {text:?}: expected \"source:target[:ro|rw]\""));
        }
    };
    if source.is_empty() {
        return Err(format!("invalid mount {text:?}: source must not be empty"));
    }
    check_target(target).map_err(|why| format!("invalid mount {text:?}: target {why}"))?;
    Ok(Mount {
        source: source.to_string(),
        target: target.to_string(),
        mode,
        exclude: Vec::new(),
    })
}

fn check_target(target: &str) -> Result<(), String> {
    if target.starts_with('/') {
        Ok(())
    } else {
        Err(format!("must be absolute, got {target:?}"))
    }
}

/// A container path, checked to be absolute.
struct Target(String);

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        super::values::parse_str(de, "an absolute path", |target| {
            check_target(target).map(|()| Target(target.to_string()))
        })
    }
}

/// A path under a mount's target: relative, without `..`.
struct ExcludePath(String);

impl<'de> Deserialize<'de> for ExcludePath {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        super::values::parse_str(de, "a relative path", |path| {
            let escapes = path.split('/').any(|part| part == "..");
            if path.is_empty() || path.starts_with('/') || escapes {
                return Err(format!(
                    "must be a relative path inside the mount without \"..\", got {path:?}"
                ));
            }
            Ok(ExcludePath(path.to_string()))
        })
    }
}

/// A mount's host path, checked to be non-empty.
struct Source(String);

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        super::values::parse_str(de, "a host path", |source| {
            if source.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(Source(source.to_string()))
            }
        })
    }
}

#[derive(Deserialize)]
struct MountObject {
    source: Source,
    target: Target,
    #[serde(default)]
    mode: MountMode,
    #[serde(default)]
    exclude: Vec<ExcludePath>,
}

impl<'de> Deserialize<'de> for Mount {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(MountVisitor)
    }
}

struct MountVisitor;

impl<'de> Visitor<'de> for MountVisitor {
    type Value = Mount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"source:target[:ro|rw]\" or {source, target, mode, exclude}")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Mount, E> {
        parse_mount(text).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Mount, A::Error> {
        let object = MountObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Mount {
            source: object.source.0,
            target: object.target.0,
            mode: object.mode,
            exclude: object.exclude.into_iter().map(|e| e.0).collect(),
        })
    }
}

// === command ===

/// What the container runs: a shell command line or an argv list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandSpec {
    /// Run with `/bin/sh -c`.
    Shell(String),
    Argv(Vec<String>),
}

impl CommandSpec {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            CommandSpec::Argv(argv) => argv.clone(),
        }
    }
}

impl Serialize for CommandSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CommandSpec::Shell(line) => s.serialize_str(line),
            CommandSpec::Argv(argv) => argv.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = CommandSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command line or a list of arguments")
    }

    fn visit_str<E: de::Error>(self, line: &str) -> Result<CommandSpec, E> {
        if line.trim().is_empty() {
            return Err(E::custom("must not be empty"));
        }
        Ok(CommandSpec::Shell(line.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element::<String>()? {
            argv.push(arg);
        }
        match argv.first() {
            None => Err(de::Error::custom("must not be empty")),
            Some(first) if first.is_empty() => Err(de::Error::custom(
                "the first element is the executable and must not be empty",
            )),
            Some(_) => Ok(CommandSpec::Argv(argv)),
        }
    }
}

// === secrets ===

/// Where a secret's value comes from. Only the reference is stored; the
/// value is resolved on the host when the run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// `env://VAR`: the host's environment.
    Env { var: String },
    /// `op://VAULT/ITEM/FIELD`: 1Password (`uri` is the whole reference).
    OnePassword { uri: String },
    /// `ssm:///PATH` or `ssm://REGION/PATH`: AWS SSM Parameter Store.
    Ssm { region: Option<String>, path: String },
}

impl std::str::FromStr for SecretRef {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid secret reference {text:?}: {why}");
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(invalid(
                "expected env://VAR, op://VAULT/ITEM/FIELD or ssm://[REGION]/PATH",
            ));
        };
        match scheme {
            "env" if super::values::is_env_name(rest) => Ok(SecretRef::Env { var: rest.into() }),
            "env" => Err(invalid("expected env://VAR with a variable name")),
            "op" if rest.split('/').filter(|s| !s.is_empty()).count() >= 3 => {
                Ok(SecretRef::OnePassword { uri: text.into() })
            }
            "op" => Err(invalid("expected op://VAULT/ITEM/FIELD")),
            "ssm" => parse_ssm(rest).ok_or_else(|| invalid("expected ssm:///PATH or ssm://REGION/PATH")),
            _ => Err(invalid(&format!(
                "unsupported scheme {scheme:?}; expected env://, op:// or ssm://"
            ))),
        }
    }
}

fn parse_ssm(rest: &str) -> Option<SecretRef> {
    let (region, path) = rest.split_at(rest.find('/')?);
    if path.trim_matches('/').is_empty() {
        return None;
    }
    Some(SecretRef::Ssm {
        region: (!region.is_empty()).then(|| region.to_string()),
        path: path.to_string(),
    })
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { var } => write!(f, "env://{var}"),
            SecretRef::OnePassword { uri } => f.write_str(uri),
            SecretRef::Ssm { region, path } => {
                write!(f, "ssm://{}{path}", region.as_deref().unwrap_or(""))
            }
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        super::values::parse_str(de, "a secret reference", str::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_strings() {
        let m = parse_mount("./data:/data:ro").unwrap();
        assert_eq!((m.source.as_str(), m.target.as_str()), ("./data", "/data"));
        assert!(m.read_only());
        assert_eq!(parse_mount("a:/b").unwrap().mode, MountMode::Rw);
        assert_eq!(
            parse_mount("a:b").unwrap_err(),
            "invalid mount \"a:b\": target must be absolute, got \"b\""
        );
        assert_eq!(
            parse_mount("a").unwrap_err(),
            "invalid mount \"a\": expected \"source:target[:ro|rw]\""
        );
        assert_eq!(
            parse_mount("a:/b:rx").unwrap_err(),
            "invalid mode \"rx\": expected \"ro\" or \"rw\""
        );
        assert_eq!(
            parse_mount(":/b").unwrap_err(),
            "invalid mount \":/b\": source must not be empty"
        );
    }

    #[test]
    fn secret_references_round_trip() {
        for text in [
            "env://MY_KEY",
            "op://Dev/OpenAI/api-key",
            "ssm:///prod/db/url",
            "ssm://us-west-2/prod/db/url",
        ] {
            let secret: SecretRef = text.parse().unwrap();
            assert_eq!(secret.to_string(), text);
        }
        assert_eq!(
            "ssm://us-west-2/p".parse::<SecretRef>().unwrap(),
            SecretRef::Ssm {
                region: Some("us-west-2".into()),
                path: "/p".into()
            }
        );
    }

    #[test]
    fn secret_references_reject_bad_shapes() {
        let cases = [
            (
                "plain",
                "expected env://VAR, op://VAULT/ITEM/FIELD or ssm://[REGION]/PATH",
            ),
            (
                "vault://x/y",
                "unsupported scheme \"vault\"; expected env://, op:// or ssm://",
            ),
            ("env://1X", "expected env://VAR with a variable name"),
            ("op://vault/item", "expected op://VAULT/ITEM/FIELD"),
            ("ssm://region", "expected ssm:///PATH or ssm://REGION/PATH"),
        ];
        for (text, why) in cases {
            let err = text.parse::<SecretRef>().unwrap_err();
            assert_eq!(err, format!("invalid secret reference {text:?}: {why}"));
        }
    }

    #[test]
    fn shell_commands_run_under_sh() {
        let cmd = CommandSpec::Shell("echo hi".into());
        assert_eq!(cmd.argv(), ["/bin/sh", "-c", "echo hi"]);
    }
}
