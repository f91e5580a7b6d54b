//! The daemon executable the tests' `moat` starts.

use std::path::PathBuf;
use std::process::Command;

/// The daemon executable of this build, built once per test process (the
/// `moat` package's tests do not build other packages' binaries; building
/// an up-to-date one takes a moment).
pub fn moatd() -> PathBuf {
    static MOATD: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MOATD
        .get_or_init(|| {
            let moat = PathBuf::from(env!("CARGO_BIN_EXE_moat"));
            let profile_dir = moat.parent().unwrap().to_path_buf();
            let target_dir = profile_dir.parent().unwrap();
            let built = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "moat-daemon", "--bin", "moatd"])
                .env("CARGO_TARGET_DIR", target_dir)
                .status()
                .unwrap();
            assert!(built.success(), "building moatd failed");
            profile_dir.join("moatd")
        })
        .clone()
}
