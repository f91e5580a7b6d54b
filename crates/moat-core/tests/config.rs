//! moat.yaml and config.yaml loading: every validation rule with its exact
//! message, unknown-key warnings, Go-style files and defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_core::MoatHome;
use moat_core::config::*;

struct TempDir(
    PathBuf,
    #[allow(dead_code, reason = "removes the directory when dropped")] tempfile::TempDir,
);

impl TempDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        TempDir(dir.path().to_path_buf(), dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn project_error(text: &str) -> String {
    let dir = TempDir::new();
    let path = dir.write(PROJECT_FILE, text);
    let err = load_project(&dir.0).unwrap_err();
    assert_eq!(err.path(), path);
    let prefix = format!("{}: ", path.display());
    err.to_string()
        .lines()
        .map(|l| l.strip_prefix(&prefix).expect(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(text: &str) -> LoadedProject {
    let dir = TempDir::new();
    dir.write(PROJECT_FILE, text);
    load_project(&dir.0).unwrap()
}

#[test]
fn per_value_rules_name_the_field_and_line() {
    let cases = [
        (
            "mounts:\n  - ./a:/a\n  - source: x\n    target: rel\n",
            "mounts[1].target: must be absolute, got \"rel\" (line 4)",
        ),
        (
            "mounts:\n  - {source: '', target: /x}\n",
            "mounts[0].source: must not be empty (line 2)",
        ),
        (
            "mounts:\n  - ./a:/a\n  - bad\n",
            "mounts[1]: invalid mount \"bad\": expected \"source:target[:ro|rw]\" (line 3)",
        ),
        (
            "mounts:\n  - a:data\n",
            "mounts[0]: invalid mount \"a:data\": target must be absolute, got \"data\" (line 2)",
        ),
        (
            "mounts:\n  - a:/d:rx\n",
            "mounts[0]: invalid mode \"rx\": expected \"ro\" or \"rw\" (line 2)",
        ),
        (
            "mounts:\n  - source: .\n    target: /w\n    exclude: [../x]\n",
            "mounts[0].exclude[0]: must be a relative path inside the mount without \"..\", got \"../x\" (line 4)",
        ),
        (
            "ports:\n  web: 70000\n",
            "ports.web: must be a port number from 1 to 65535, got 70000 (line 2)",
        ),
        (
            "network:\n  host: [5432, 0]\n",
            "network.host[1]: must be a port number from 1 to 65535, got 0 (line 2)",
        ),
        (
            "network:\n  policy: strikt\n",
            "network.policy: unknown variant `strikt`, expected one of `permissive`, `strict`, `shadow` (line 2)",
        ),
        (
            "network:\n  rules:\n    - api.github.com:\n        - allow GET /x\n        - nope\n",
            "network.rules[0].api.github.com[1]: invalid rule \"nope\": expected \"allow|deny METHOD /path\", like \"allow GET /repos/**\" (line 5)",
        ),
        (
            "network:\n  rules:\n    - https://x.com\n",
            "network.rules[0]: invalid host pattern \"https://x.com\": expected a host name like \"api.example.com\", \"*.example.com\" or \"api.example.com:8443\" (line 3)",
        ),
        (
            "network:\n  rules:\n    - {a.com: [], b.com: []}\n",
            "network.rules[0]: one host per list entry: write each host as its own \"- host: [rules]\" item (line 3)",
        ),
        (
            "runtime: podman\n",
            "runtime: invalid runtime \"podman\": expected \"docker\", \"apple\" or \"kubernetes\" (line 1)",
        ),
        (
            "runtime: fake\n",
            "runtime: invalid runtime \"fake\": expected \"docker\", \"apple\" or \"kubernetes\" (line 1)",
        ),
        (
            "container:\n  memory: 12\n",
            "container.memory: must be at least 128 (MB), got 12 (line 2)",
        ),
        (
            "container:\n  cpus: 0\n",
            "container.cpus: must be greater than 0, got 0 (line 2)",
        ),
        (
            "container:\n  pids_limit: 0\n",
            "container.pids_limit: must be a positive number of processes, got 0 (line 2)",
        ),
        (
            "container:\n  dns: [nope]\n",
            "container.dns[0]: invalid IP address syntax (line 2)",
        ),
        (
            "container:\n  ulimits:\n    nofile: {soft: 1}\n",
            "container.ulimits.nofile: missing field `hard` (line 3)",
        ),
        (
            "secrets:\n  X: vault://a\n",
            "secrets.X: invalid secret reference \"vault://a\": unsupported scheme \"vault\"; expected env://, op:// or ssm:// (line 2)",
        ),
        ("command: []\n", "command: must not be empty (line 1)"),
        (
            "command: ['', x]\n",
            "command: the first element is the executable and must not be empty (line 1)",
        ),
        ("name: \"open\n", "unclosed quote (line 1)"),
        ("env:\n  - a\n", "env: invalid type: sequence, expected a map (line 2)"),
    ];
    for (text, expected) in cases {
        assert_eq!(project_error(text), expected, "for {text:?}");
    }
}

#[test]
fn cross_field_rules_are_all_reported_one_per_line() {
    let text = "\
name: run_x
dependencies: [postgres@17, '']
grants: [github, ' ']
env: {A: x, 1B: y}
secrets: {A: env://A}
mounts: [./a:/data, ./b:/data]
container:
  ulimits:
    nofile: {soft: 10, hard: 5}
    bogus: {soft: 1, hard: 1}
    nproc: {soft: -2, hard: 1}
services:
  redis: {}
base_image: ' '
";
    let expected = "\
name: \"run_x\" must not start with \"run_\" (reserved for run ids)
dependencies[1]: must not be empty
grants[1]: must not be empty
env.1B: not a valid environment variable name
secrets.A: also set in env; use one or the other
mounts[1].target: \"/data\" is already mounted by mounts[0]
container.ulimits.bogus: unknown ulimit; expected one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack
container.ulimits.nofile: soft limit 10 exceeds hard limit 5
container.ulimits.nproc: limits must be -1 (unlimited) or more
services.redis: \"redis\" is not declared in dependencies
base_image: must not be empty";
    assert_eq!(project_error(text), expected);
    assert_eq!(
        project_error("name: 'a b'\n"),
        "name: \"a b\" may use only letters, digits, '-', '_' and '.'"
    );
}

#[test]
fn unknown_keys_are_warnings_with_their_full_path() {
    let loaded =
        load("netwrok: 1\nclaude: {x: 1}\ncontainer:\n  memroy: 1\nmounts:\n  - {source: a, target: /a, mdoe: ro}\n");
    let path = loaded.path.clone().unwrap();
    let got: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    let p = path.display();
    assert_eq!(
        got,
        [
            format!("{p}: netwrok: unknown key; ignored"),
            format!("{p}: claude: not supported by this version of moat; ignored"),
            format!("{p}: container.memroy: unknown key; ignored"),
            format!("{p}: mounts[0].mdoe: unknown key; ignored"),
        ]
    );
}

#[test]
fn a_go_style_config_loads() {
    let loaded = load(
        r#"
name: my-agent
agent: my-agent
version: 1.0.0
dependencies: [node@20, postgres@17, redis@7]
services:
  postgres:
    env: {POSTGRES_DB: myapp}
    wait: false
grants: [github, anthropic, "ssh:github.com"]
env:
  NODE_ENV: development
  DEBUG: "true"
  PORT: 3000
secrets:
  OPENAI_API_KEY: op://Dev/OpenAI/api-key
  DATABASE_URL: ssm:///production/database/url
  CUSTOM: env://CUSTOM_API_KEY
mounts:
  - ./data:/data:ro
  - source: .
    target: /workspace
    exclude: [node_modules, .venv]
ports: {web: 3000, api: 8080}
network:
  policy: strict
  rules:
    - "api.openai.com"
    - "*.amazonaws.com"
    - "api.github.com":
        - "allow GET /repos/**"
        - "deny * /**"
  host: [11434]
command: ["npm", "start"]
interactive: false
hooks:
  post_build_root: apt-get update -qq
  post_build: git config --global core.autocrlf input
  pre_run: npm install
container:
  memory: 16384
  cpus: 8
  dns: ["8.8.8.8", "8.8.4.4"]
  ulimits:
    nofile: {soft: 1024, hard: 65536}
    memlock: {soft: -1, hard: -1}
claude:
  sync_logs: true
snapshots:
  triggers: {idle_threshold_seconds: 30}
  exclude: {additional: [node_modules/]}
  retention: {max_count: 10}
"#,
    );
    let c = &loaded.config;
    assert_eq!(c.name.as_deref(), Some("my-agent"));
    assert_eq!(c.env["PORT"], "3000");
    assert_eq!(
        c.secrets["DATABASE_URL"],
        SecretRef::Ssm {
            region: None,
            path: "/production/database/url".into()
        }
    );
    assert_eq!(c.mounts[0].mode, MountMode::Ro);
    assert_eq!(c.mounts[1].exclude, ["node_modules", ".venv"]);
    assert_eq!(c.ports["api"], 8080);
    assert_eq!(c.network.policy, PolicyMode::Strict);
    assert_eq!(c.network.rules[2].host, "api.github.com");
    assert_eq!(c.network.rules[2].requests[1].to_string(), "deny * /**");
    assert_eq!(c.network.host, [11434]);
    assert_eq!(c.command.as_ref().unwrap().argv(), ["npm", "start"]);
    assert_eq!(c.container.memory, Some(16384));
    assert_eq!(c.container.ulimits["memlock"], Ulimit { soft: -1, hard: -1 });
    assert!(!c.services["postgres"].wait());
    assert_eq!(c.snapshots.retention.max_count, 10);
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, ["version", "claude"]);
}

#[test]
fn older_go_network_allow_lists_are_rules() {
    let loaded = load("network:\n  allow: [api.openai.com]\n");
    assert_eq!(loaded.config.network.rules[0].host, "api.openai.com");
}

#[test]
fn agent_yaml_is_the_fallback_and_moat_yaml_wins() {
    let dir = TempDir::new();
    assert!(load_project(&dir.0).unwrap().path.is_none());
    let agent = dir.write(AGENT_FILE, "name: from-agent\n");
    assert_eq!(load_project(&dir.0).unwrap().path, Some(agent));
    dir.write(PROJECT_FILE, "name: from-moat\n");
    let loaded = load_project(&dir.0).unwrap();
    assert_eq!(loaded.config.name.as_deref(), Some("from-moat"));
}

#[test]
fn empty_and_missing_files_mean_defaults() {
    assert_eq!(load("# nothing\n").config, ProjectConfig::default());
    let c = ProjectConfig::default();
    assert_eq!(c.network.policy, PolicyMode::Permissive);
    assert!(c.command.is_none() && c.mounts.is_empty());
}

fn home_with(text: Option<&str>) -> (TempDir, MoatHome) {
    let dir = TempDir::new();
    if let Some(text) = text {
        dir.write("config.yaml", text);
    }
    let home = MoatHome::new(&dir.0);
    (dir, home)
}

#[test]
fn global_defaults_when_the_file_is_missing() {
    let (_dir, home) = home_with(None);
    let loaded = load_global(&home).unwrap();
    assert!(loaded.path.is_none());
    let c = loaded.config;
    assert_eq!(c.proxy_port, 0);
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.reap_interval, Duration::from_secs(600));
    assert_eq!(c.network_create_timeout, Duration::from_secs(30));
    assert_eq!(c.subnet_pool.to_string(), "10.213.0.0/16");
    assert_eq!(c.subnet_prefix, 28);
    assert_eq!(c.subnet_count(), 4096);
    assert!(c.runtime.is_none() && c.base_image.is_none() && c.resolve.is_empty());
}

#[test]
fn global_values_are_read() {
    let (_dir, home) = home_with(Some(
        "proxy_port: 8080\nidle_timeout: 500ms\nreap_interval: 1h\nnetwork_create_timeout: 5s\n\
         subnet_pool: 10.99.0.0/20\nsubnet_prefix: 29\nruntime: docker\nbase_image: alpine:3\n\
         extra_ca_file: /etc/ca.pem\nresolve: {api.example.test: 127.0.0.1}\nproxy: {port: 1}\n\
         proxy_max_tunnels: 8\nproxy_max_streams: 4\nproxy_handshakes_per_second: 2\n",
    ));
    let loaded = load_global(&home).unwrap();
    let c = &loaded.config;
    assert_eq!(c.proxy_port, 8080);
    assert_eq!(
        (c.proxy_max_tunnels, c.proxy_max_streams, c.proxy_handshakes_per_second),
        (8, 4, 2)
    );
    assert_eq!(c.idle_timeout, Duration::from_millis(500));
    assert_eq!(c.reap_interval, Duration::from_secs(3600));
    assert_eq!(c.subnet_pool.prefix_len, 20);
    assert_eq!(c.subnet_count(), 512);
    assert_eq!(c.runtime, Some(RuntimeKind::Docker));
    assert_eq!(c.extra_ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(c.resolve["api.example.test"].to_string(), "127.0.0.1");
    assert_eq!(loaded.warnings[0].key, "proxy");
}

/// Issue 16: OpenTelemetry export is not built, so a key configuring it is
/// refused, never silently ignored.
#[test]
fn telemetry_keys_are_refused_not_ignored() {
    for text in [
        "otlp_endpoint: http://127.0.0.1:4317\n",
        "telemetry: {otlp_endpoint: x}\n",
    ] {
        let (_dir, home) = home_with(Some(text));
        let err = load_global(&home).unwrap_err().to_string();
        assert!(err.contains("OpenTelemetry export is not available"), "{text}: {err}");
    }
    let (_dir, home) = home_with(Some("some_future_key: 1\n"));
    assert_eq!(load_global(&home).unwrap().warnings.len(), 1);
}

#[test]
fn the_network_pool_size_defaults_to_two_may_be_zero_and_is_capped() {
    let (_dir, home) = home_with(None);
    assert_eq!(load_global(&home).unwrap().config.network_pool_size, 2);
    let (_dir, home) = home_with(Some("network_pool_size: 0\n"));
    assert_eq!(load_global(&home).unwrap().config.network_pool_size, 0);
    let (_dir, home) = home_with(Some("network_pool_size: 17\n"));
    let err = load_global(&home).unwrap_err().to_string();
    assert!(err.contains("network_pool_size") && err.contains("at most 16"), "{err}");
}

#[test]
fn malformed_global_config_is_a_clear_error() {
    let cases = [
        (
            "idle_timeout: 5 minutes\n",
            "idle_timeout: invalid duration \"5 minutes\": expected a number and a unit (ms, s, m, h), like \"30s\" (line 1)",
        ),
        (
            "subnet_pool: 10.213.0.1/16\n",
            "subnet_pool: invalid subnet \"10.213.0.1/16\": the address has bits set beyond /16 (line 1)",
        ),
        (
            "subnet_pool: nope\n",
            "subnet_pool: invalid subnet \"nope\": expected an IPv4 CIDR like \"10.213.0.0/16\" (line 1)",
        ),
        (
            "subnet_prefix: 31\n",
            "subnet_prefix: must be between the pool's /16 and /30, got /31",
        ),
        ("reap_interval: 0s\n", "reap_interval: must be greater than 0"),
        ("proxy_max_tunnels: 0\n", "proxy_max_tunnels: must be greater than 0"),
        (
            "proxy_port: -1\n",
            "proxy_port: invalid value `-1`, expected u16 (line 1)",
        ),
        ("proxy_port: \"open\n", "unclosed quote (line 1)"),
    ];
    for (text, expected) in cases {
        let (_dir, home) = home_with(Some(text));
        let err = load_global(&home).unwrap_err().to_string();
        let path = home.config_file();
        assert_eq!(err, format!("{}: {expected}", path.display()), "for {text:?}");
    }
}

#[test]
fn keys_left_empty_mean_their_defaults() {
    // Go users often leave a key with every entry commented out.
    let loaded = load("grants:\nenv:\nmounts:\nnetwork:\n  rules:\ncontainer:\ncommand:\nports:\nservices:\n");
    assert_eq!(loaded.config, ProjectConfig::default());
    assert!(loaded.warnings.is_empty());
}
