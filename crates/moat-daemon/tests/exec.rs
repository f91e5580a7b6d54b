//! `POST /v1/runs/{id}/exec` over a real Unix socket against the fake
//! runtime: the command's code and output come back, lossy UTF-8; an empty
//! command and a run that is not live are refused.

mod common;

use std::time::Duration;

use common::Fixture;
use moat_core::RunId;
use moat_core::logs::Stream;
use moat_runtime::ExecOutput;
use moat_runtime::fake::{FakeOp, ScriptedRun};

#[tokio::test]
async fn exec_returns_the_code_and_output_of_a_command_in_a_live_run() {
    let fx = Fixture::new(|_| {});
    fx.fake.script_container(
        "img",
        ScriptedRun {
            output: vec![(Stream::Stdout, "started\n".into())],
            exit_code: 0,
            run_for: Duration::from_secs(60),
        },
    );
    fx.fake.script_exec(
        "probe",
        ExecOutput {
            exit_code: Some(4),
            stdout: b"out \xff\n".to_vec(),
            stderr: b"err\n".to_vec(),
        },
    );
    let served = fx.serve().await;
    let client = served.client.clone();
    let run = client.create_run(&fx.spec()).await.unwrap().run_id;

    let result = client.exec(&run, &["probe".into(), "--flag".into()]).await.unwrap();
    assert_eq!(result.exit_code, Some(4));
    assert_eq!(result.stdout, "out \u{fffd}\n");
    assert_eq!(result.stderr, "err\n");
    assert_eq!(fx.fake.call_count(FakeOp::Exec), 1);

    let empty = client.exec(&run, &[]).await.unwrap_err();
    assert_eq!(empty.status().map(|s| s.as_u16()), Some(400), "{empty}");
    let gone: RunId = "run_000000000000".parse().unwrap();
    let not_live = client.exec(&gone, &["probe".into()]).await.unwrap_err();
    assert_eq!(not_live.status().map(|s| s.as_u16()), Some(404), "{not_live}");
    assert!(not_live.to_string().contains("is not live"), "{not_live}");
    assert_eq!(
        fx.fake.call_count(FakeOp::Exec),
        1,
        "refused execs must not reach the runtime"
    );

    client.stop_run(&run, true).await.unwrap();
    fx.wait_until_gone(&run).await;
    let finished = client.exec(&run, &["probe".into()]).await.unwrap_err();
    assert_eq!(finished.status().map(|s| s.as_u16()), Some(404), "{finished}");

    served.shutdown().await;
}
