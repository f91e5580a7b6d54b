//! The daemon executable the tests' `moat` starts.

use std::path::PathBuf;
use std::process::Command;

/// The daemon executable of this build: `moatd` beside `moat`. The `moat`
/// package's tests do not build other packages' binaries, so the workspace
/// is built here once per test process: a no-op (under a second) after
/// `scripts/test.sh` built it, and what keeps `moatd` fresh after
/// `cargo test -p moat`. The same targets as `cargo test --workspace
/// --all-targets`, so the features agree and nothing is built twice.
pub fn moatd() -> PathBuf {
    static MOATD: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MOATD
        .get_or_init(|| {
            let moat = PathBuf::from(env!("CARGO_BIN_EXE_moat"));
            let profile_dir = moat.parent().unwrap().to_path_buf();
            let built = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--workspace", "--all-targets"])
                .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
                .status()
                .unwrap();
            assert!(built.success(), "building moatd failed");
            profile_dir.join("moatd")
        })
        .clone()
}
