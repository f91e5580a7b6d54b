//! The honesty test: every key `moat.yaml` accepts either has a Docker
//! end-to-end test that shows its effect inside a real container, or is
//! refused by `moat run` with an error naming it. Nothing in between: a key
//! added to the file's schema fails this test until it is one or the other.

use std::collections::BTreeSet;

use moat_core::config::ProjectConfig;
use serde_json::Value;

use super::support::{TestHome, write_file};

/// A file setting every key to a value other than its default.
const EVERY_KEY: &str = "\
name: demo
agent: claude
dependencies: [postgres@15]
grants: [github]
env: {A: '1'}
secrets: {B: env://HOME}
mounts: ['/tmp:/data:ro']
ports: {web: 3000}
network:
  policy: strict
  rules: [api.example.com]
  host: [8080]
command: make test
interactive: true
runtime: docker
base_image: moat-base:bookworm
container:
  memory: 512
  cpus: 1.5
  dns: [192.0.2.53]
  pids_limit: 64
  user: '1000:1000'
  ulimits: {nofile: {soft: 10, hard: 20}}
hooks:
  post_build: make
  post_build_root: apt-get update
  pre_run: make deps
snapshots:
  disabled: true
  triggers: {disable_pre_run: true, disable_git_commits: true, disable_builds: true, disable_idle: true, idle_threshold_seconds: 5}
  exclude: {ignore_gitignore: true, additional: [target]}
  retention: {max_count: 3, delete_initial: true}
services:
  postgres: {env: {X: '1'}, image: 'postgres:17', memory: 256, wait: false, models: [m], version: '15', persist: true, ready_timeout: 10s}
mcp: [{name: docs, url: 'https://mcp.example.com/mcp', grant: mcp-docs, headers: {X-Org: acme}}]
";

/// Keys whose values are user-named maps: one key each.
const MAPS: &[&str] = &["env", "secrets", "ports", "services.postgres.env", "container.ulimits"];

/// Key → (Docker test file, test function) showing its effect in a container.
const SHOWN: &[(&str, &str, &str)] = &[
    (
        "agent",
        "agents.rs",
        "moat_claude_answers_with_the_granted_token_while_the_container_holds_only_placeholders",
    ),
    (
        "name",
        "ports.rs",
        "a_page_served_in_the_container_loads_in_a_browser_through_the_routing_endpoint",
    ),
    (
        "ports",
        "ports.rs",
        "a_page_served_in_the_container_loads_in_a_browser_through_the_routing_endpoint",
    ),
    (
        "dependencies",
        "images.rs",
        "dependencies_build_once_reuse_layers_and_run_as_the_workspace_owner",
    ),
    (
        "container.user",
        "images.rs",
        "dependencies_build_once_reuse_layers_and_run_as_the_workspace_owner",
    ),
    (
        "grants",
        "proxy.rs",
        "a_granted_credential_is_injected_never_visible_and_revocable_during_a_run",
    ),
    ("env", "keys.rs", "file_keys_reach_the_container"),
    ("secrets", "keys.rs", "file_keys_reach_the_container"),
    ("mounts", "keys.rs", "file_keys_reach_the_container"),
    ("command", "keys.rs", "file_keys_reach_the_container"),
    ("runtime", "keys.rs", "file_keys_reach_the_container"),
    ("base_image", "keys.rs", "file_keys_reach_the_container"),
    ("container.dns", "keys.rs", "file_keys_reach_the_container"),
    ("snapshots.disabled", "keys.rs", "file_keys_reach_the_container"),
    (
        "snapshots.triggers.disable_pre_run",
        "snapshots.rs",
        "an_agents_changes_are_shown_by_diff_and_undone_by_restore",
    ),
    (
        "snapshots.exclude.ignore_gitignore",
        "snapshots.rs",
        "an_agents_changes_are_shown_by_diff_and_undone_by_restore",
    ),
    (
        "snapshots.exclude.additional",
        "snapshots.rs",
        "an_agents_changes_are_shown_by_diff_and_undone_by_restore",
    ),
    (
        "snapshots.retention.max_count",
        "snapshots.rs",
        "an_agents_changes_are_shown_by_diff_and_undone_by_restore",
    ),
    (
        "snapshots.retention.delete_initial",
        "snapshots.rs",
        "an_agents_changes_are_shown_by_diff_and_undone_by_restore",
    ),
    (
        "interactive",
        "keys.rs",
        "interactive_in_the_file_gives_the_program_its_stdin",
    ),
    (
        "container.memory",
        "keys.rs",
        "container_limits_are_seen_inside_the_container",
    ),
    (
        "container.cpus",
        "keys.rs",
        "container_limits_are_seen_inside_the_container",
    ),
    (
        "container.pids_limit",
        "keys.rs",
        "container_limits_are_seen_inside_the_container",
    ),
    (
        "container.ulimits",
        "keys.rs",
        "container_limits_are_seen_inside_the_container",
    ),
    (
        "hooks.pre_run",
        "keys.rs",
        "the_pre_run_hook_runs_before_the_command_and_its_failure_is_named",
    ),
    (
        "hooks.post_build",
        "images.rs",
        "build_hooks_are_part_of_the_image_and_a_failing_one_is_named",
    ),
    (
        "hooks.post_build_root",
        "images.rs",
        "build_hooks_are_part_of_the_image_and_a_failing_one_is_named",
    ),
    (
        "services.postgres.env",
        "services.rs",
        "a_service_that_cannot_start_fails_the_run_with_its_log_lines",
    ),
    (
        "services.postgres.ready_timeout",
        "services.rs",
        "a_service_never_ready_fails_the_run_at_its_bound",
    ),
    (
        "services.postgres.persist",
        "services.rs",
        "a_persisted_service_keeps_its_data_from_one_run_to_the_next",
    ),
    (
        "services.postgres.version",
        "services.rs",
        "a_persisted_service_keeps_its_data_from_one_run_to_the_next",
    ),
    (
        "services.postgres.memory",
        "services.rs",
        "a_persisted_service_keeps_its_data_from_one_run_to_the_next",
    ),
    (
        "network.policy",
        "policy.rs",
        "suggested_rules_allow_exactly_what_the_run_did_and_shadow_records_what_strict_would_refuse",
    ),
    (
        "network.rules",
        "policy.rs",
        "suggested_rules_allow_exactly_what_the_run_did_and_shadow_records_what_strict_would_refuse",
    ),
    (
        "mcp",
        "mcp.rs",
        "an_mcp_server_is_reached_through_the_relay_with_its_token_never_in_the_container",
    ),
    (
        "network.host",
        "policy.rs",
        "suggested_rules_allow_exactly_what_the_run_did_and_shadow_records_what_strict_would_refuse",
    ),
];

/// Keys `moat run` refuses, and the name its error gives them.
const REFUSED: &[(&str, &str)] = &[
    ("services.postgres.image", "services.<name>.image"),
    ("services.postgres.models", "services.<name>.models"),
    ("services.postgres.wait", "services.<name>.wait: false"),
    (
        "snapshots.triggers.disable_git_commits",
        "snapshots.triggers.disable_git_commits",
    ),
    ("snapshots.triggers.disable_builds", "snapshots.triggers.disable_builds"),
    ("snapshots.triggers.disable_idle", "snapshots.triggers.disable_idle"),
    (
        "snapshots.triggers.idle_threshold_seconds",
        "snapshots.triggers.idle_threshold_seconds",
    ),
];

fn docker_test_source(file: &str) -> &'static str {
    match file {
        "keys.rs" => include_str!("../docker/keys.rs"),
        "ports.rs" => include_str!("../docker/ports.rs"),
        "proxy.rs" => include_str!("../docker/proxy.rs"),
        "policy.rs" => include_str!("../docker/policy.rs"),
        "images.rs" => include_str!("../docker/images.rs"),
        "services.rs" => include_str!("../docker/services.rs"),
        "agents.rs" => include_str!("../docker/agents.rs"),
        "snapshots.rs" => include_str!("../docker/snapshots.rs"),
        "mcp.rs" => include_str!("../docker/mcp.rs"),
        other => panic!("no Docker test file {other}"),
    }
}

/// Every key path of `value`, maps of user-named keys and lists as one key.
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) if !MAPS.contains(&prefix) => {
            for (key, field) in fields {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                key_paths(field, &path, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

fn every_key() -> Vec<(String, Value)> {
    let config: ProjectConfig = serde_saphyr::from_str(EVERY_KEY).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let mut paths = Vec::new();
    key_paths(&serde_json::to_value(&config).unwrap(), "", &mut paths);
    paths
}

/// The file that sets only `path` (YAML is a superset of JSON).
fn file_with_only(path: &str, value: &Value) -> String {
    let nested = path
        .rsplit('.')
        .fold(value.clone(), |inner, key| serde_json::json!({ key: inner }));
    let mut text = nested.to_string();
    if path.starts_with("services") {
        text = format!("{}, \"dependencies\": [\"postgres@15\"]}}", &text[..text.len() - 1]);
    }
    text
}

#[test]
fn every_key_is_either_shown_in_a_container_or_refused_by_name() {
    let paths = every_key();
    let found: BTreeSet<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
    let listed: BTreeSet<&str> = SHOWN
        .iter()
        .map(|(key, _, _)| *key)
        .chain(REFUSED.iter().map(|(key, _)| *key))
        .collect();
    assert_eq!(found, listed, "keys of moat.yaml vs. keys shown or refused");
    for (key, file, test) in SHOWN {
        assert!(
            docker_test_source(file).contains(&format!("fn {test}()")),
            "{key}: no test {test} in tests/docker/{file}"
        );
    }
    let home = TestHome::new();
    let ws = home.path("ws");
    for (key, name) in REFUSED {
        let value = &paths.iter().find(|(p, _)| p == key).unwrap().1;
        write_file(&ws.join("moat.yaml"), &file_with_only(key, value));
        let out = home.moat(&["run", ws.to_str().unwrap(), "--", "true"]);
        out.failure(1);
        assert!(
            out.stderr.starts_with("error: this version of moat cannot act on ") && out.stderr.contains(name),
            "{key}: {}",
            out.stderr
        );
    }
    assert!(!home.home_path("runs").exists(), "a refused run created nothing");
}
