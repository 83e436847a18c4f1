use std::time::Duration;

use async_nats::jetstream::{self, stream};
use testkit::NatsServer;

async fn create_stream(url: &str, name: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    js.publish(format!("{name}.a"), "one".into()).await?.await?;
    Ok(())
}

async fn stream_messages(url: &str, name: &str) -> anyhow::Result<u64> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let mut stream = js.get_stream(name).await?;
    Ok(stream.info().await?.state.messages)
}

#[tokio::test]
async fn stream_survives_graceful_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    assert!(nats.url().ends_with(&format!(":{}", nats.port())));
    assert!(nats.is_running());
    create_stream(&nats.url(), "KEEP").await?;
    nats.stop().await?;
    assert!(!nats.is_running());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", nats.port()))
        .await
        .is_err());
    nats.restart().await?;
    assert!(nats.is_running());
    assert_eq!(stream_messages(&nats.url(), "KEEP").await?, 1);
    Ok(())
}

#[tokio::test]
async fn stream_survives_kill_and_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    create_stream(&nats.url(), "CRASH").await?;
    // A single node acks before it syncs; give the store a moment before the crash.
    tokio::time::sleep(Duration::from_millis(200)).await;
    nats.kill().await?;
    assert!(!nats.is_running());
    nats.restart().await?;
    assert_eq!(nats.port(), port);
    assert_eq!(stream_messages(&nats.url(), "CRASH").await?, 1);
    Ok(())
}

#[tokio::test]
async fn restart_of_a_running_server_keeps_the_port() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let url = nats.url();
    nats.restart().await?;
    assert_eq!(nats.url(), url);
    async_nats::connect(&url).await?;
    Ok(())
}
