//! `POST /v1/runs/{id}/grants` (`moat join`) over a real Unix socket against
//! the fake runtime (which runs no proxy): a run that is not live is
//! refused; a grant the run lacks cannot be added without the proxy that
//! would inject it, and the refusal records nothing; asking for nothing new
//! changes nothing.

mod common;

use std::time::Duration;

use common::Fixture;
use moat_core::RunId;
use moat_core::logs::Stream;
use moat_core::paths::run_files;
use moat_daemon::api::AddGrantsRequest;
use moat_runtime::fake::ScriptedRun;

fn request(grants: &[&str], hosts: &[&str], dry_run: bool) -> AddGrantsRequest {
    AddGrantsRequest {
        grants: grants.iter().map(|g| g.to_string()).collect(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        dry_run,
    }
}

#[tokio::test]
async fn grants_are_added_only_to_a_live_run_that_reaches_the_proxy() {
    let fx = Fixture::new(|_| {});
    fx.fake.script_container(
        "img",
        ScriptedRun {
            output: vec![(Stream::Stdout, "started\n".into())],
            exit_code: 0,
            run_for: Duration::from_secs(60),
        },
    );
    let served = fx.serve().await;
    let client = served.client.clone();
    let run = client.create_run(&fx.spec()).await.unwrap().run_id;

    // A permissive run needs no rule for a host, and has nothing to add.
    let nothing = client
        .add_grants(&run, &request(&[], &["api.example.com"], false))
        .await
        .unwrap();
    assert!(nothing.grants.is_empty() && nothing.hosts.is_empty(), "{nothing:?}");

    for dry_run in [true, false] {
        let err = client
            .add_grants(&run, &request(&["claude"], &[], dry_run))
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
        assert!(err.to_string().contains("does not reach moat's proxy"), "{err}");
    }
    let meta = fx.daemon.store().load(&run).unwrap();
    assert!(meta.grants.is_empty() && meta.added_hosts.is_empty(), "{meta:?}");

    let gone: RunId = "run_000000000000".parse().unwrap();
    let err = client
        .add_grants(&gone, &request(&["claude"], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");

    client.stop_run(&run, true).await.unwrap();
    fx.wait_until_gone(&run).await;
    let err = client
        .add_grants(&run, &request(&["claude"], &[], false))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");
    let audit = std::fs::read_to_string(fx.daemon.store().run_dir(&run).join(run_files::AUDIT)).unwrap_or_default();
    assert!(!audit.contains("grants_added"), "{audit}");

    served.shutdown().await;
}
