//! `moat init`: the guess is printed, written only when confirmed
//! (`--yes` without a terminal), and an existing moat.yaml is replaced
//! only with `--force`.

use super::support::{TestHome, write_file};

#[test]
fn init_prints_writes_with_yes_and_never_overwrites_without_force() {
    let home = TestHome::new();
    let project = home.path("app");
    write_file(&project.join("Cargo.lock"), "");
    let dir = project.to_str().unwrap();
    let target = project.join("moat.yaml");

    let dry = home.moat(&["init", dir, "--dry-run"]);
    dry.success();
    assert!(dry.stdout.contains("dependencies: [rust]"), "{}", dry.stdout);
    assert!(!target.exists(), "--dry-run wrote");

    // No terminal to ask: refused, nothing written.
    let unconfirmed = home.command(&["init", dir]).output().unwrap();
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    assert!(!target.exists());

    let written = home.moat(&["init", dir, "--yes"]);
    written.success();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), written.stdout);

    write_file(&target, "# mine\n");
    let again = home.command(&["init", dir, "--yes"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "# mine\n");

    home.moat(&["init", dir, "--yes", "--force"]).success();
    assert!(
        std::fs::read_to_string(&target)
            .unwrap()
            .contains("dependencies: [rust]")
    );
}

#[test]
fn grant_flags_of_one_kind_are_refused_on_another() {
    let home = TestHome::new();
    for (args, says) in [
        (
            &["grant", "github", "--key", "x.pub"][..],
            "--key is for `moat grant ssh`",
        ),
        (
            &["grant", "github", "--registry", "https://r.example/"][..],
            "--registry is for `moat grant npm`",
        ),
        (&["grant", "npm", "--host", "r.example"][..], "takes --registry"),
        (&["grant", "ssh"][..], "--host"),
        (&["grant", "npm", "--registry", "http://r.example/"][..], "https://"),
    ] {
        let out = home.command(args).env_remove("SSH_AUTH_SOCK").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = home
        .command(&["grant", "ssh", "--host", "github.com"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSH_AUTH_SOCK is not set"));
}
