//! moat's subnet pool on the real engine: a pool filled by orphaned
//! networks of this home is swept to make room for a new run (and the user
//! is told), while a pool filled by other tools' networks fails the run
//! with the cause and the fix. Each test has its own pool range (10.250/16
//! is used nowhere else in the tests).

use std::process::Command;

use super::support::{Home, text, unique};

/// Docker networks this test created; removed even when the test fails.
struct Networks(Vec<String>);

impl Networks {
    /// Creates `name` on `subnet` with `labels`.
    fn create(&mut self, name: &str, subnet: &str, labels: &[String]) {
        let mut args = vec!["network".to_string(), "create".into(), "--subnet".into(), subnet.into()];
        for label in labels {
            args.push("--label".into());
            args.push(label.clone());
        }
        args.push(name.to_string());
        let out = Command::new("docker").args(&args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
        self.0.push(name.to_string());
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["network", "rm", name]).output();
        }
    }
}

fn network_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A home whose pool holds exactly two /24 networks of `pool` (a /23).
fn home_with_pool(pool: &str) -> Option<Home> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    let config = format!("subnet_pool: {pool}\nsubnet_prefix: 24\n");
    std::fs::write(home.home().join("config.yaml"), config).unwrap();
    Some(home)
}

/// The two /24 blocks of a /23 given as `A.B.C.0/23` (C even).
fn blocks(pool: &str) -> [String; 2] {
    let base = pool.trim_end_matches(".0/23");
    let (prefix, third) = base.rsplit_once('.').unwrap();
    let third: u8 = third.parse().unwrap();
    [format!("{prefix}.{third}.0/24"), format!("{prefix}.{}.0/24", third + 1)]
}

#[test]
fn a_pool_full_of_orphans_is_swept_to_make_room_and_the_user_is_told() {
    let pool = "10.250.0.0/23";
    let Some(home) = home_with_pool(pool) else { return };
    let label = moat_core::MoatHome::new(home.home()).label();
    let mut networks = Networks(Vec::new());
    let mut orphans = Vec::new();
    for subnet in blocks(pool) {
        // Runs of this home whose directories do not exist: orphans.
        let run_id = format!("run_{:06x}{:06x}", std::process::id() & 0xff_ffff, unique());
        let name = format!("moat-{run_id}");
        let labels = [
            "dev.moat.managed=true".to_string(),
            format!("dev.moat.run-id={run_id}"),
            format!("dev.moat.home={label}"),
        ];
        networks.create(&name, &subnet, &labels);
        orphans.push(name);
    }

    let out = home.run(&["run", "--", "true"]);

    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("moat: still creating the network (sweeping orphans first)…"),
        "{stderr}"
    );
    assert!(
        stderr.contains("moat: reclaimed 2 orphaned network(s) to make room"),
        "{stderr}"
    );
    for orphan in &orphans {
        assert!(!network_exists(orphan), "{orphan} was not reclaimed");
    }
    let run = home.only_run();
    assert_eq!(run["state"], "exited", "{run}");
}

#[test]
fn a_pool_full_of_other_tools_networks_fails_with_the_cause_and_the_fix() {
    let pool = "10.250.2.0/23";
    let Some(home) = home_with_pool(pool) else { return };
    let mut networks = Networks(Vec::new());
    let tag = format!("{}-{}", std::process::id(), unique());
    for (i, subnet) in blocks(pool).iter().enumerate() {
        networks.create(&format!("netpool-foreign-{tag}-{i}"), subnet, &[]);
    }

    let out = home.run(&["run", "--", "true"]);

    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("still creating the network (sweeping orphans first)…"),
        "{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(error.starts_with("error: creating network moat-run_"), "{stderr}");
    assert!(
        error.contains("no free subnet in moat's pool 10.250.2.0/23 (/24 each)"),
        "{stderr}"
    );
    let hints: Vec<&str> = stderr.lines().filter(|l| l.starts_with("hint: ")).collect();
    let hint = hints.join("\n");
    assert!(hint.contains("`moat system prune --networks`"), "{stderr}");
    let config = home.home().join("config.yaml");
    assert!(
        hint.contains(&format!("widen `subnet_pool` in {}", config.display())),
        "{stderr}"
    );
    for name in &networks.0 {
        assert!(network_exists(name), "another tool's network {name} was touched");
    }
    let run = home.only_run();
    assert_eq!(run["state"], "failed", "{run}");
}
