//! NATS with authentication: the shipper with `--nats-user/--nats-password`, the worker with the
//! credentials in the URL (async-nats ignores them there; the binaries must pass them on).

use std::time::Duration;

use testkit::data::Expected;
use testkit::{NatsHandle, NatsServer};

use crate::support::{copy_into, without_blanks, Stack};

const USER: &str = "edge";
const PASSWORD: &str = "p@ss w0rd";

#[tokio::test]
async fn shipper_and_worker_authenticate_with_user_and_password() {
    let server = NatsServer::start_with_args(&["--user", USER, "--pass", PASSWORD])
        .await
        .unwrap();
    let port = server.port();
    let stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        NatsHandle::Private(server),
    )
    .await;
    let plain_url = format!("nats://127.0.0.1:{port}");
    let url_with_credentials = format!("nats://{USER}:p%40ss%20w0rd@127.0.0.1:{port}");

    // Without credentials the server refuses the worker: it keeps retrying and never finishes.
    let mut refused = stack
        .worker(&["--nats-url", &plain_url, "--until-idle", "1"])
        .spawn()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(3), refused.wait()).await;
    assert!(
        outcome.is_err(),
        "a worker without credentials must not get through: {outcome:?}"
    );
    refused.kill().await.unwrap();

    let sample = testkit::bins::workspace_root().join("hotdata/sample_readings.jsonl");
    copy_into(
        &sample,
        &stack.box_dir("edge-01").join("sample_readings.jsonl"),
    );
    let worker = |idle: &'static str| {
        let mut c = stack.worker(&["--nats-url", &url_with_credentials, "--until-idle", idle]);
        c.kill_on_drop(true);
        c
    };
    let status = tokio::time::timeout(Duration::from_secs(120), worker("1").status())
        .await
        .expect("worker with URL credentials did not finish")
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        stack
            .shipper(
                "edge-01",
                &[
                    "--nats-url",
                    &plain_url,
                    "--nats-user",
                    USER,
                    "--nats-password",
                    PASSWORD,
                    "--until-caught-up",
                ],
            )
            .status(),
    )
    .await
    .expect("shipper with --nats-user/--nats-password did not catch up")
    .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(120), worker("2").status())
        .await
        .expect("worker did not go idle")
        .unwrap();
    assert!(status.success());
    assert_eq!(
        stack.landed().await,
        without_blanks(&Expected::of_file(&sample).unwrap())
    );
}
