use async_nats::jetstream::{self, stream};
use testkit::NatsServer;

const MESSAGES: u64 = 500;

/// Creates a file-backed stream and publishes [`MESSAGES`] acknowledged messages to it.
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
    let mut acks = Vec::new();
    for i in 0..MESSAGES {
        acks.push(
            js.publish(format!("{name}.a"), format!("m{i}").into())
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
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
    assert_eq!(stream_messages(&nats.url(), "KEEP").await?, MESSAGES);
    Ok(())
}

#[tokio::test]
async fn stream_survives_kill_and_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    create_stream(&nats.url(), "CRASH").await?;
    // Acked messages are written to the store file before the ack (only the fsync is deferred),
    // so they survive a crash of the process right after the last ack.
    nats.kill().await?;
    assert!(!nats.is_running());
    nats.restart().await?;
    assert_eq!(nats.port(), port);
    assert_eq!(stream_messages(&nats.url(), "CRASH").await?, MESSAGES);
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

#[tokio::test]
async fn frozen_server_can_still_be_stopped_and_restarted() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let pid = nats.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let frozen = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()?;
    assert!(frozen.success());
    let started = std::time::Instant::now();
    nats.stop().await?;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(!nats.is_running());
    nats.restart().await?;
    async_nats::connect(nats.url()).await?;
    Ok(())
}
