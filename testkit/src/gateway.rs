//! A private site gateway: a leaf-node `nats-server` with its own JetStream domain, linked to a
//! hub through a TCP relay in the test process that plays the WAN.
//!
//! [`SiteGateway::cut`] closes every connection through the relay and refuses new ones until
//! [`SiteGateway::restore`]: both servers keep running, the gateway keeps acknowledging its
//! boxes, and the hub sees the leaf node go away, as across a real WAN outage. The relay runs on
//! its own thread and runtime, so it keeps relaying while a test blocks its own.
//!
//! Both servers are the pinned binary ([`crate::nats::modern_binary`], >= 2.14: a work-queue
//! stream is sourced reliably only from there on).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::nats::{free_port, modern_binary, NatsServer};

/// Says to skip a test that needs the pinned nats-server ([`modern_binary`]) when it is missing
/// and `EDGE_MES_SKIP_MISSING_TOOLS=1` (printing why); without that variable a missing binary
/// fails the test, naming the install command (`.ci/tools.sh`).
pub fn skip_without_modern_nats() -> bool {
    match modern_binary() {
        Ok(_) => false,
        Err(e) if std::env::var("EDGE_MES_SKIP_MISSING_TOOLS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (EDGE_MES_SKIP_MISSING_TOOLS=1): {e:#}");
            true
        }
        Err(e) => panic!("{e:#} (or set EDGE_MES_SKIP_MISSING_TOOLS=1 to skip)"),
    }
}

/// A hub for gateways: `nats-server -js` in JetStream domain `hub`, a leaf-node listener on
/// 127.0.0.1, and `extra` config (e.g. accounts) appended. Returns the server and its leaf port.
///
/// The hub does not advertise its leaf-node URL (`no_advertise`): a gateway would otherwise
/// learn it on its first link and reconnect around the relay when the WAN is cut.
pub async fn start_hub(extra: &str) -> anyhow::Result<(NatsServer, u16)> {
    let leaf_port = free_port()?;
    let config = format!(
        "jetstream {{ domain: hub }}\nleafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n  no_advertise: true\n}}\n{extra}\n"
    );
    let hub = NatsServer::start_with_config(&modern_binary()?, &config).await?;
    Ok((hub, leaf_port))
}

/// How a [`SiteGateway`] is configured.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// The gateway's JetStream domain (by convention the site id in lowercase, e.g. `bkk`).
    pub domain: String,
    /// The hub's leaf-node ports on 127.0.0.1 (from [`start_hub`], or every node of a
    /// [`NatsCluster`](crate::NatsCluster)): each connection through the relay goes to the first
    /// that accepts.
    pub hub_leaf_ports: Vec<u16>,
    /// Lines added inside the leaf-node remote block, e.g. `account: EDGE`, `deny_imports: [...]`.
    pub remote: String,
    /// Config added at the top level, e.g. `accounts { ... }`.
    pub server: String,
    /// The gateway's disk budget: JetStream's `max_file_store` in bytes (none: the disk's size).
    pub store_budget_bytes: Option<u64>,
    /// A complete configuration instead of the generated one (e.g. nats/production/
    /// leafnode-site.conf with its variables filled in), in which `$NATS_HUB_URL` becomes the
    /// relay's `nats-leaf://` URL; `remote`, `server` and `store_budget_bytes` are then ignored.
    /// Port, server name and store dir still come from the command line.
    pub config: Option<String>,
}

/// A leaf-node gateway and the relay that plays its WAN link; dropped, both stop.
pub struct SiteGateway {
    server: NatsServer,
    relay: Relay,
    domain: String,
}

impl SiteGateway {
    /// Starts the relay towards the hub's leaf port, then the gateway linked through it; returns
    /// when the gateway is ready (not necessarily linked: see [`wait_linked`](Self::wait_linked)).
    pub async fn start(options: GatewayOptions) -> anyhow::Result<Self> {
        let relay = Relay::start(options.hub_leaf_ports.clone())?;
        let budget = options
            .store_budget_bytes
            .map(|b| format!("  max_file_store: {b}\n"))
            .unwrap_or_default();
        let generated = format!(
            "jetstream {{\n  domain: {domain}\n{budget}}}\n\
             leafnodes {{\n  reconnect: \"1s\"\n  remotes: [ {{\n    urls: [\"nats-leaf://127.0.0.1:{port}\"]\n{remote}\n  }} ]\n}}\n{server}\n",
            domain = options.domain,
            port = relay.port,
            remote = options.remote,
            server = options.server,
        );
        let config = match &options.config {
            Some(full) => full.replace(
                "$NATS_HUB_URL",
                &format!("\"nats-leaf://127.0.0.1:{}\"", relay.port),
            ),
            None => generated,
        };
        let server = NatsServer::start_with_config(&modern_binary()?, &config)
            .await
            .context("start the site gateway")?;
        Ok(Self {
            server,
            relay,
            domain: options.domain,
        })
    }

    /// The gateway's client URL: where the site's shippers publish.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The gateway's JetStream domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The JetStream API prefix of the gateway's domain, as seen from the hub: `$JS.<domain>.API`.
    pub fn api_prefix(&self) -> String {
        format!("$JS.{}.API", self.domain)
    }

    /// The gateway's server (log, pid, store dir).
    pub fn server(&self) -> &NatsServer {
        &self.server
    }

    /// Cuts the WAN: closes every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        self.relay.set(Link::Down);
    }

    /// Restores the WAN: the gateway's next reconnect (every second) gets through.
    pub fn restore(&self) {
        self.relay.set(Link::Up);
    }

    /// Connections currently relayed (1 while the leaf node is linked).
    pub fn relayed_connections(&self) -> usize {
        self.relay.active.load(Ordering::Relaxed)
    }

    /// Restarts the gateway process (same port, same store); the relay stays as it is.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.server.restart().await
    }

    /// Crash: SIGKILL the gateway process.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.server.kill().await
    }

    /// True when a client of `hub_url` reaches the gateway's JetStream API across the link.
    pub async fn is_linked(&self, hub_url: &str) -> bool {
        let Ok(client) = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(hub_url)
            .await
        else {
            return false;
        };
        let subject = format!("{}.INFO", self.api_prefix());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), client.request(subject, "".into())).await,
            Ok(Ok(_))
        )
    }

    /// Waits until [`is_linked`](Self::is_linked) holds.
    pub async fn wait_linked(&self, hub_url: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_linked(hub_url).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the gateway ({}) did not link to the hub within {timeout:?}; its log:\n{}",
            self.domain,
            crate::process::log_tail(&self.server.log_path(), 20)
        )
    }
}

impl std::fmt::Debug for SiteGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteGateway")
            .field("domain", &self.domain)
            .field("server", &self.server)
            .field("relay_port", &self.relay.port)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down,
    Closed,
}

/// A TCP relay from a local port to the first of `127.0.0.1:<upstream ports>` that accepts, on
/// its own thread.
struct Relay {
    port: u16,
    state: watch::Sender<Link>,
    active: Arc<AtomicUsize>,
}

impl Relay {
    fn start(upstream: Vec<u16>) -> anyhow::Result<Self> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("bind the relay's port")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let (state, rx) = watch::channel(Link::Up);
        let active = Arc::new(AtomicUsize::new(0));
        let counter = active.clone();
        std::thread::Builder::new()
            .name(format!("testkit-wan-relay-{port}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    accept_loop(listener, upstream, rx, counter).await;
                });
            })
            .context("spawn the relay thread")?;
        Ok(Self {
            port,
            state,
            active,
        })
    }

    fn set(&self, link: Link) {
        let _ = self.state.send(link);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set(Link::Closed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Vec<u16>,
    mut state: watch::Receiver<Link>,
    active: Arc<AtomicUsize>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = state.wait_for(|l| *l == Link::Closed) => return,
        };
        let Ok((inbound, _)) = accepted else { continue };
        if *state.borrow() != Link::Up {
            drop(inbound);
            continue;
        }
        let rx = state.clone();
        let active = active.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut outbound = None;
            for port in upstream {
                if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                    outbound = Some(s);
                    break;
                }
            }
            let Some(outbound) = outbound else {
                return;
            };
            active.fetch_add(1, Ordering::Relaxed);
            relay(inbound, outbound, rx).await;
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Copies both ways until either side closes or the link goes down; then closes both.
async fn relay(mut a: TcpStream, mut b: TcpStream, mut state: watch::Receiver<Link>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = state.wait_for(|l| *l != Link::Up) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relay_carries_bytes_until_cut_and_again_after_restore() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_port = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        // A port nobody listens on first: the relay goes on to the next.
        let closed = free_port().unwrap();
        let relay = Relay::start(vec![closed, up_port]).unwrap();
        let echo = |port: u16| async move {
            let mut c = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            c.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf))
                .await
                .ok()?
                .ok()?;
            Some((c, buf))
        };
        let (mut open, buf) = echo(relay.port).await.expect("relayed while up");
        assert_eq!(&buf, b"ping");
        relay.set(Link::Down);
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf))
            .await
            .expect("the cut closes open connections");
        assert!(matches!(read, Ok(0) | Err(_)));
        assert!(echo(relay.port).await.is_none(), "refused while down");
        relay.set(Link::Up);
        assert!(echo(relay.port).await.is_some(), "relayed after restore");
    }
}
