//! Takes one pre-run snapshot of a directory into a `MOAT_HOME` and prints
//! what it recorded and how long it took (scripts/bench-snapshot.sh).
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool")]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use moat_core::snapshot::{self, Rules, SnapshotStore, TakeRequest, Trigger};
use moat_core::{MoatHome, RunId};

fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [workspace, home] = args.as_slice() else {
        eprintln!("usage: snapshot WORKSPACE MOAT_HOME");
        return std::process::ExitCode::from(2);
    };
    let store = SnapshotStore::new(&MoatHome::new(home));
    let cancel = AtomicBool::new(false);
    let request = TakeRequest {
        workspace,
        run_id: &RunId::generate(),
        trigger: Trigger::PreRun,
        rules: Rules {
            gitignore: true,
            additional: Vec::new(),
        },
        cancel: &cancel,
    };
    match snapshot::take(&store, &request) {
        Ok(meta) => {
            println!(
                "{}: {} files ({} read), {} dirs, {} bytes, {} bytes new, {} ms",
                meta.id, meta.files, meta.read_files, meta.dirs, meta.bytes, meta.stored_bytes, meta.duration_ms
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
