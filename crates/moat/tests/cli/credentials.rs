//! Credential commands and `moat doctor`'s view of the credential key, with
//! the key file backend (the harness sets `MOAT_KEYRING_BACKEND=file`).

use std::os::unix::fs::PermissionsExt;

use super::support::{TestHome, write_file};

const PROVIDER: &str = "name: corp\nhosts: [api.corp.test]\nheader: X-Key\n";

fn grant_corp(home: &TestHome) -> std::process::Output {
    use std::io::Write;
    let mut child = home
        .command(&["grant", "corp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A grant refused before it reads the token closes its stdin early.
    let written = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fake-corp-token-for-tests-51aa\n");
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the token: {e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn doctor_says_which_key_backend_is_used() {
    let home = TestHome::new();
    let provider = home.home_path("providers/corp.yaml");
    write_file(&provider, PROVIDER);
    std::fs::set_permissions(&provider, std::fs::Permissions::from_mode(0o644)).unwrap();
    let granted = grant_corp(&home);
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));

    let key = home.home_path("credentials/.key");
    let doctor = |args: &[&str]| {
        let mut command = home.command(args);
        command.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        String::from_utf8(command.output().unwrap().stdout).unwrap()
    };
    let text = doctor(&["doctor"]);
    assert!(
        text.contains(&format!("credential key: file ({}, 0600)\n", key.display())),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&doctor(&["doctor", "--json"])).unwrap();
    assert_eq!(json["credential_key"]["backend"], "file");
    assert_eq!(json["credential_key"]["exists"], true);
    assert_eq!(json["credentials"][0]["provider"], "corp");
}

#[test]
fn a_group_writable_provider_file_stops_grant_with_a_chmod_hint() {
    // Another user in the file's group could point the corp credential at a
    // host of theirs.
    let home = TestHome::new();
    let provider = home.home_path("providers/corp.yaml");
    write_file(&provider, PROVIDER);
    std::fs::set_permissions(&provider, std::fs::Permissions::from_mode(0o664)).unwrap();
    let granted = grant_corp(&home);
    assert!(!granted.status.success());
    let stderr = String::from_utf8_lossy(&granted.stderr);
    assert!(
        stderr.contains(&format!("chmod go-w {}", provider.display())),
        "{stderr}"
    );
    assert!(!home.home_path("credentials/corp.enc").exists());
}

/// `grant NAME --host HOST` defines NAME for that host (a provider file
/// moat marks as its own) and stores the token from stdin; built-in names,
/// headers the proxy owns and `--header` without `--host` are refused.
#[test]
fn grant_host_defines_a_provider_for_one_host() {
    use std::io::Write;
    let home = TestHome::new();
    let mut child = home
        .command(&["grant", "mytool", "--host", "api.mytool.test", "--header", "X-Api-Key"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fake-mytool-token-for-tests-77\n")
        .unwrap();
    let granted = child.wait_with_output().unwrap();
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let file = std::fs::read_to_string(home.home_path("providers/mytool.yaml")).unwrap();
    assert!(file.starts_with("# Written by `moat grant --host`"), "{file}");
    assert!(
        file.contains("hosts: [\"api.mytool.test\"]\nheader: \"X-Api-Key\"\nprefix: \"\"\n"),
        "{file}"
    );
    assert!(home.home_path("credentials/mytool.enc").exists());

    let out = home.moat(&["grant", "github", "--host", "github.example.com"]);
    out.failure(1);
    assert!(out.stderr.contains("github is a built-in provider"), "{}", out.stderr);
    let out = home.moat(&["grant", "other", "--host", "a.test", "--header", "Proxy-Authorization"]);
    out.failure(1);
    assert!(
        out.stderr
            .contains("--header: Proxy-Authorization is managed by the proxy"),
        "{}",
        out.stderr
    );
    assert!(!home.home_path("providers/other.yaml").exists());
    home.moat(&["grant", "other", "--header", "X-Key"]).failure(2);
}

/// `grant mcp NAME --url URL` stores the token as grant `mcp-NAME` for the
/// URL's host and port only; a plain-http URL or a bad name is refused
/// before anything is written.
#[test]
fn grant_mcp_stores_a_token_for_one_servers_host() {
    use std::io::Write;
    let home = TestHome::new();
    let mut child = home
        .command(&["grant", "mcp", "docs", "--url", "https://mcp.docs.test:8443/v1/mcp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fake-mcp-token-for-tests-31\n")
        .unwrap();
    let granted = child.wait_with_output().unwrap();
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let file = std::fs::read_to_string(home.home_path("providers/mcp-docs.yaml")).unwrap();
    assert!(
        file.contains("hosts: [\"mcp.docs.test:8443\"]\nheader: \"Authorization\"\nprefix: \"Bearer \"\n"),
        "{file}"
    );
    assert!(home.home_path("credentials/mcp-docs.enc").exists());

    let out = home.moat(&["grant", "mcp", "plain", "--url", "http://mcp.docs.test/"]);
    out.failure(1);
    assert!(out.stderr.contains("must start with https://"), "{}", out.stderr);
    let out = home.moat(&["grant", "mcp", "Bad/Name", "--url", "https://mcp.docs.test/"]);
    out.failure(1);
    assert!(!home.home_path("providers/mcp-plain.yaml").exists());
    home.moat(&["grant", "mcp", "docs"]).failure(2);
}
