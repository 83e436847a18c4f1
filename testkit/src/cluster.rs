//! A private three-node JetStream cluster on loopback, for tests that kill and restart nodes.
//!
//! Three `nats-server` processes of the pinned binary ([`crate::nats::modern_binary`]), each on a
//! free client port with its own store dir, routes between all of them on free cluster ports, one
//! cluster name, JetStream domain `central`, and a leaf-node listener for site gateways. Node `i` is named `testkit_<client port>` (a name that survives its restarts, as
//! a JetStream peer must). [`NatsCluster::leader_of`] asks the JetStream API which node leads a
//! stream's RAFT group, so a test can kill exactly that one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::nats::{free_port, modern_binary, NatsServer};

/// Nodes in a cluster: the smallest that keeps an R3 stream writable with one node down.
pub const NODES: usize = 3;
/// How long the cluster may take to form (routes up, a JetStream meta leader elected).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Three routed `nats-server -js` nodes; dropped, all are killed and their stores removed.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    name: String,
    leaf_ports: Vec<u16>,
}

impl NatsCluster {
    /// Starts the three nodes and returns once every node answers JetStream API requests (routes
    /// up and a meta leader elected).
    pub async fn start() -> anyhow::Result<Self> {
        let binary = modern_binary()?;
        let name = format!("testkit_{}", std::process::id());
        let mut ports = distinct_free_ports(2 * NODES)?;
        let leaf_ports = ports.split_off(NODES);
        let route_ports = ports;
        let mut nodes = Vec::with_capacity(NODES);
        for (i, port) in route_ports.iter().enumerate() {
            let routes: Vec<String> = route_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            // JetStream domain `central` as in nats/production/nats-server.conf; a leaf-node
            // listener per node for site gateways, not advertised (see gateway::start_hub).
            let config = format!(
                "cluster {{\n  name: {name}\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n\
                 jetstream {{ domain: central }}\n\
                 leafnodes {{\n  listen: \"127.0.0.1:{}\"\n  no_advertise: true\n}}\n",
                routes.join(", "),
                leaf_ports[i]
            );
            nodes.push(
                NatsServer::start_with_config(&binary, &config)
                    .await
                    .with_context(|| format!("start cluster node {i}"))?,
            );
        }
        let cluster = Self {
            nodes,
            name,
            leaf_ports,
        };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// The cluster's name (its `cluster { name }`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://127.0.0.1:<port>` of every node, comma-separated: what `NATS_URL` takes.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// The client URL of each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The leaf-node port of every node (for [`crate::SiteGateway`]'s `hub_leaf_ports`).
    pub fn leaf_ports(&self) -> Vec<u16> {
        self.leaf_ports.clone()
    }

    /// Node `i` (its URL, log, pid).
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// The server name of node `i`, as JetStream reports leaders and peers.
    pub fn server_name(&self, i: usize) -> String {
        format!("testkit_{}", self.nodes[i].port())
    }

    /// Crash: SIGKILL node `i` and wait for its exit.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].kill().await
    }

    /// Starts node `i` again on its port with its store (stopping it first if it runs).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart().await
    }

    /// Which node leads `stream`'s RAFT group, asked of the running nodes in turn through the
    /// JetStream API; `None` while no node reports a leader (an election in progress).
    pub async fn leader_of(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let Ok(client) = connect(&node.url()).await else {
                continue;
            };
            let js = async_nats::jetstream::new(client);
            let leader = match js.get_stream(stream).await {
                Ok(s) => s
                    .cached_info()
                    .cluster
                    .as_ref()
                    .and_then(|c| c.leader.clone()),
                Err(_) => None,
            };
            if let Some(leader) = leader {
                return (0..NODES).find(|&i| self.server_name(i) == leader);
            }
        }
        None
    }

    /// Waits until `stream` has a leader on a running node, and every one of its replicas on a
    /// running node is current; returns the leader.
    pub async fn wait_stream_ready(
        &self,
        stream: &str,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.stream_replicas_current(stream).await {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => last = "replicas not current".to_owned(),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("stream {stream} not ready within {timeout:?}: {last}")
    }

    async fn stream_replicas_current(&self, stream: &str) -> anyhow::Result<Option<usize>> {
        let Some(node) = self.nodes.iter().find(|n| n.is_running()) else {
            bail!("no node runs");
        };
        let js = async_nats::jetstream::new(connect(&node.url()).await?);
        let mut s = js.get_stream(stream).await?;
        let info = s.info().await?;
        let Some(cluster) = info.cluster.as_ref() else {
            bail!("stream {stream} has no cluster info");
        };
        let Some(leader) = cluster
            .leader
            .as_ref()
            .and_then(|l| (0..NODES).find(|&i| &self.server_name(i) == l))
        else {
            return Ok(None);
        };
        let running: Vec<String> = (0..NODES)
            .filter(|&i| self.nodes[i].is_running() && i != leader)
            .map(|i| self.server_name(i))
            .collect();
        let current = running.iter().all(|name| {
            cluster
                .replicas
                .iter()
                .any(|r| &r.name == name && r.current && !r.offline)
        });
        Ok(current.then_some(leader))
    }

    /// Waits until every running node answers JetStream API requests.
    pub async fn wait_formed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let answered = match connect(&node.url()).await {
                    Ok(c) => async_nats::jetstream::new(c).query_account().await.is_ok(),
                    Err(_) => false,
                };
                if answered {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "cluster did not form within {FORM_TIMEOUT:?}; node {} log:\n{}",
                        node.url(),
                        crate::process::log_tail(&node.log_path(), 20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("name", &self.name)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// `n` different ports that were free a moment ago.
fn distinct_free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

/// A short-lived client that does not retry a node that is down.
async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(url)
        .await?)
}
