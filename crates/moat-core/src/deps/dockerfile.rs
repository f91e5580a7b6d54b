//! The Dockerfile of a resolved dependency set and its build context.
//! Deterministic: everything is sorted, nothing depends on time or the
//! host, and the tag is the hash of the whole context, so the same set
//! always names the same image. Layers go from the least to the most often
//! changed (OS packages, language runtimes, global tools, pip packages, npm
//! packages, the build hooks, the init), so adding a package reuses every
//! layer before it.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::registry::{Layer, Resolved};

/// Repository of the images moat builds (`moat/run:<16 hex>`).
pub const IMAGE_REPOSITORY: &str = "moat/run";
/// The system trust store every tool is pointed at during builds.
pub(super) const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const INIT_SCRIPT: &str = include_str!("../../data/moat-init.sh");
/// Where images moat builds have their init (their entry point).
pub const INIT_PATH: &str = "/usr/local/bin/moat-init";
const PIP: &str = "/opt/moat/python/bin/pip";

/// Where the build hooks are copied in the image.
const HOOKS_DIR: &str = "/etc/moat/hooks";
/// The line a failing build hook prints last: `moat: hooks.<name> exited <code>`.
const HOOK_FAILED_PREFIX: &str = "moat: hooks.";
const HOOK_FAILED_INFIX: &str = " exited ";

/// `hooks.post_build_root` and `hooks.post_build` of `moat.yaml`: shell
/// snippets run during the build, after every dependency and before the
/// init, so they are part of the image (and of its tag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildHooks {
    /// Runs as root.
    pub post_build_root: Option<String>,
    /// Runs as [`BuildHooks::user`], with `HOME` its home directory.
    pub post_build: Option<String>,
    /// The run's user (`uid:gid`, `uid` or a name in the image), which
    /// `post_build` runs as; a numeric user the image does not have is
    /// created (`moat`, home `/home/moat`). Part of the tag only when
    /// `post_build` is set.
    pub user: String,
}

impl BuildHooks {
    pub fn is_empty(&self) -> bool {
        self.post_build_root.is_none() && self.post_build.is_none()
    }
}

/// A build hook that failed, read from the line it printed last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFailure {
    /// `hooks.post_build_root` or `hooks.post_build`.
    pub hook: String,
    pub code: i32,
}

impl HookFailure {
    /// The failure a build output line reports, if it is a hook's. The
    /// engine may start the line with the colour reset that ends the
    /// previous (stderr) line.
    pub fn parse(line: &str) -> Option<HookFailure> {
        let rest = without_colour_codes(line.trim()).strip_prefix(HOOK_FAILED_PREFIX)?;
        let (name, code) = rest.split_once(HOOK_FAILED_INFIX)?;
        if !matches!(name, "post_build_root" | "post_build") {
            return None;
        }
        Some(HookFailure {
            hook: format!("hooks.{name}"),
            code: code.trim().parse().ok()?,
        })
    }
}

/// `line` without the terminal colour codes (`ESC [ … m`) it starts with.
fn without_colour_codes(mut line: &str) -> &str {
    while let Some(rest) = line.strip_prefix("\u{1b}[") {
        match rest.find('m') {
            Some(end) if rest[..end].bytes().all(|b| b.is_ascii_digit() || b == b';') => line = &rest[end + 1..],
            _ => break,
        }
    }
    line
}

/// A file of the build context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextFile {
    pub name: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// What the engine is given to build one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildContext {
    /// `moat/run:<16 hex>`.
    pub tag: String,
    pub dockerfile: String,
    /// The Dockerfile first, then the files it copies, by name.
    pub files: Vec<ContextFile>,
}

pub(super) fn render(base: &str, resolved: &Resolved, hooks: &BuildHooks, build_ca: Option<&[u8]>) -> BuildContext {
    let dockerfile = dockerfile(base, resolved, hooks, build_ca.is_some());
    let mut files = vec![ContextFile {
        name: "Dockerfile".into(),
        contents: dockerfile.clone().into_bytes(),
        mode: 0o644,
    }];
    if let Some(ca) = build_ca {
        files.push(ContextFile {
            name: "build-ca.pem".into(),
            contents: ca.to_vec(),
            mode: 0o644,
        });
    }
    for (name, script) in hook_scripts(hooks) {
        files.push(ContextFile {
            name: hook_file(name),
            contents: script.as_bytes().to_vec(),
            mode: 0o644,
        });
    }
    files.push(ContextFile {
        name: "moat-init".into(),
        contents: INIT_SCRIPT.as_bytes().to_vec(),
        mode: 0o755,
    });
    BuildContext {
        tag: format!("{IMAGE_REPOSITORY}:{}", content_hash(&files)),
        dockerfile,
        files,
    }
}

/// First 16 hex digits of the SHA-256 of every file (name, length, bytes).
pub(super) fn content_hash(files: &[ContextFile]) -> String {
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.name.as_bytes());
        hash.update([0]);
        hash.update((file.contents.len() as u64).to_be_bytes());
        hash.update(&file.contents);
        hash.update(file.mode.to_be_bytes());
    }
    hex::encode(hash.finalize())[..16].to_string()
}

/// The hooks that are set, by name, in the order they run.
fn hook_scripts(hooks: &BuildHooks) -> impl Iterator<Item = (&'static str, &str)> {
    [
        ("post_build_root", hooks.post_build_root.as_deref()),
        ("post_build", hooks.post_build.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, script)| script.map(|s| (name, s)))
}

fn hook_file(name: &str) -> String {
    format!("hook-{name}.sh")
}

/// Runs a copied hook in its user's home directory; when it fails, says
/// which hook it was and its exit code (the daemon reads that line) and
/// fails the step with the same code.
fn hook_step(name: &str) -> String {
    format!(
        "RUN export HOME=\"$(getent passwd \"$(id -u)\" | cut -d: -f6)\"; cd \"${{HOME:-/}}\" 2>/dev/null || cd /; \
         /bin/sh {HOOKS_DIR}/{file}; code=$?; if [ $code -ne 0 ]; then \
         echo \"{HOOK_FAILED_PREFIX}{name}{HOOK_FAILED_INFIX}$code\"; exit $code; fi",
        file = hook_file(name)
    )
}

/// `uid` and `gid` of a numeric user (`uid:gid`, or `uid` with the same gid).
fn numeric_user(user: &str) -> Option<(u32, u32)> {
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
        None => {
            let uid = user.parse().ok()?;
            Some((uid, uid))
        }
    }
}

/// Creates the run's numeric user when the image has none of that id
/// (named `moat`, or `moat-<id>` when `moat` is taken, home `/home/moat`).
fn create_user_step(uid: u32, gid: u32) -> String {
    format!(
        "RUN if ! getent group {gid} >/dev/null; then g=moat; getent group moat >/dev/null && g=moat-{gid}; \
         groupadd --gid {gid} \"$g\"; fi; if ! getent passwd {uid} >/dev/null; then u=moat; \
         getent passwd moat >/dev/null && u=moat-{uid}; useradd --uid {uid} --gid {gid} --create-home \
         --home-dir /home/moat --shell /bin/sh \"$u\"; fi"
    )
}

fn hook_lines(hooks: &BuildHooks, line: &mut impl FnMut(&str)) {
    if let Some(name) = hooks.post_build_root.as_ref().map(|_| "post_build_root") {
        line("# hooks.post_build_root, as root");
        line(&format!("COPY {file} {HOOKS_DIR}/{file}", file = hook_file(name)));
        line(&hook_step(name));
    }
    if hooks.post_build.is_some() {
        let name = "post_build";
        line(&format!("# hooks.post_build, as the run's user ({})", hooks.user));
        line(&format!("COPY {file} {HOOKS_DIR}/{file}", file = hook_file(name)));
        let user = match numeric_user(&hooks.user) {
            Some((uid, gid)) => {
                line(&create_user_step(uid, gid));
                format!("{uid}:{gid}")
            }
            None => hooks.user.clone(),
        };
        line(&format!("USER {user}"));
        line(&hook_step(name));
        line("USER root");
    }
}

fn dockerfile(base: &str, resolved: &Resolved, hooks: &BuildHooks, with_ca: bool) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line("# Generated by moat from `dependencies:`; the tag is this context's hash.");
    line(&format!("FROM {base}"));
    line("USER root");
    line(&format!(
        "ENV DEBIAN_FRONTEND=noninteractive SSL_CERT_FILE={SYSTEM_BUNDLE} REQUESTS_CA_BUNDLE={SYSTEM_BUNDLE} \
         CURL_CA_BUNDLE={SYSTEM_BUNDLE} PIP_CERT={SYSTEM_BUNDLE} NPM_CONFIG_CAFILE={SYSTEM_BUNDLE} \
         NODE_EXTRA_CA_CERTS={SYSTEM_BUNDLE}"
    ));
    if with_ca {
        line("# build_ca_file of config.yaml, trusted by apt, pip, npm and curl");
        line("COPY build-ca.pem /usr/local/share/ca-certificates/moat-build-ca.crt");
    }
    line("# OS packages");
    let mut apt = resolved.apt.clone();
    apt.insert("ca-certificates".into());
    line(&format!(
        "RUN apt-get update && apt-get install --yes --no-install-recommends {} \
         && rm -rf /var/lib/apt/lists/* && update-ca-certificates",
        join_quoted(&apt)
    ));
    for (layer, title) in [(Layer::Runtime, "language runtimes"), (Layer::Tool, "global tools")] {
        let entries: Vec<_> = resolved
            .entries
            .iter()
            .filter(|(_, (entry, _))| entry.layer == layer)
            .filter(|(_, (entry, _))| !entry.run.is_empty() || !entry.env.is_empty())
            .collect();
        if entries.is_empty() {
            continue;
        }
        line(&format!("# {title}"));
        for (entry, version) in entries.into_iter().map(|(_, e)| e) {
            let version = quote(version.as_deref().unwrap_or("latest"));
            if !entry.run.is_empty() {
                let commands: Vec<String> = entry.run.iter().map(|c| c.replace("{version}", &version)).collect();
                line(&format!("RUN {}", commands.join(" && ")));
            }
            if !entry.env.is_empty() {
                let pairs: Vec<String> = entry.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                line(&format!("ENV {}", pairs.join(" ")));
            }
        }
    }
    if !resolved.pip.is_empty() {
        line("# pip packages");
        line(&format!(
            "RUN {PIP} install --no-cache-dir --disable-pip-version-check {}",
            join_quoted(&resolved.pip)
        ));
    }
    if !resolved.npm.is_empty() {
        line("# npm packages");
        line(&format!(
            "RUN npm install --global --no-fund --no-audit {}",
            join_quoted(&resolved.npm)
        ));
    }
    hook_lines(hooks, &mut line);
    line("# moat's init: trusts moat's CA, then drops to the workspace owner");
    line(&format!("COPY moat-init {INIT_PATH}"));
    line(&format!("ENTRYPOINT [\"{INIT_PATH}\"]"));
    line("CMD [\"/bin/sh\"]");
    out
}

pub(super) fn join_quoted<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}", quote(item));
    }
    out
}

/// Single-quotes `text` for the shell when it holds anything but plain
/// name characters (names and versions were checked: no quotes inside).
fn quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-+/@=:".contains(c))
    {
        text.to_string()
    } else {
        format!("'{text}'")
    }
}
