//! A local Azure Event Hubs endpoint: AMQP 1.0 over plain TCP, speaking to the official
//! clients (`azure_messaging_eventhubs`, Python `azure-eventhub`) as the service does, with
//! its hubs and partitions in memory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), glucoguard_testkit::eventhubs::Error> {
//! use glucoguard_testkit::eventhubs::{Config, Server};
//! let server = Server::start(
//!     Config::new("127.0.0.1:0".parse().unwrap()).hub("glucose_readings", 2),
//! )
//! .await?;
//! println!("{}", server.connection_string());
//! // Rust client: .with_custom_endpoint(server.endpoint())
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it implements and what not: `ARCHITECTURE.md`, section `testkit`.

mod address;
mod links;
mod nodes;
mod owners;
mod store;
mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use store::{partition_for_key, partition_key_hash};

/// The SAS key name and key in the printed connection string. Neither is checked (Azure's
/// own emulator documents the same pair).
pub const SAS_KEY_NAME: &str = "RootManageSharedAccessKey";
pub const SAS_KEY: &str = "SAS_KEY_VALUE";

/// The default pause before the endpoint settles a producer's message (see
/// [`Config::settle_delay`]).
pub const DEFAULT_SETTLE_DELAY: Duration = Duration::from_millis(20);

/// Most partitions one hub may have (Event Hubs' dedicated tier allows 1024).
pub const MAX_PARTITIONS: usize = 1024;

/// One event hub and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub name: String,
    pub partitions: usize,
}

impl std::str::FromStr for HubConfig {
    type Err = Error;

    /// Parses `NAME:PARTITIONS`, e.g. `glucose_readings:4`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, partitions) = s
            .rsplit_once(':')
            .ok_or_else(|| Error::Config(format!("hub {s:?} is not NAME:PARTITIONS")))?;
        let partitions = partitions.parse().map_err(|_| {
            Error::Config(format!("hub {s:?}: the partition count is not a number"))
        })?;
        Ok(Self {
            name: name.to_owned(),
            partitions,
        })
    }
}

/// What the endpoint serves and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The namespace's name: the endpoint's AMQP container id. Clients address links as
    /// `amqps://NAMESPACE/HUB/…`; the namespace part is not checked.
    pub namespace: String,
    pub hubs: Vec<HubConfig>,
    /// How long the endpoint waits before settling a message a producer sent. The Rust
    /// client's `fe2o3-amqp` 0.16.2 loses a disposition that arrives before it has
    /// registered the delivery, which on loopback can happen; 20 ms avoided it in every
    /// measured run. Zero settles at once.
    pub settle_delay: Duration,
}

impl Config {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            namespace: "glucoguard-testkit".to_owned(),
            hubs: Vec::new(),
            settle_delay: DEFAULT_SETTLE_DELAY,
        }
    }

    /// Adds a hub.
    pub fn hub(mut self, name: &str, partitions: usize) -> Self {
        self.hubs.push(HubConfig {
            name: name.to_owned(),
            partitions,
        });
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.hubs.is_empty() {
            return Err(Error::Config("at least one hub is needed".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for hub in &self.hubs {
            let valid_name = !hub.name.is_empty()
                && hub.name.len() <= 256
                && hub
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !valid_name {
                return Err(Error::Config(format!(
                    "hub name {:?}: use 1 to 256 letters, digits, '.', '-' or '_'",
                    hub.name
                )));
            }
            if !(1..=MAX_PARTITIONS).contains(&hub.partitions) {
                return Err(Error::Config(format!(
                    "hub {:?}: the partition count must be 1 to {MAX_PARTITIONS}",
                    hub.name
                )));
            }
            if !seen.insert(hub.name.to_lowercase()) {
                return Err(Error::Config(format!(
                    "hub {:?} is given twice (hub names are case-insensitive)",
                    hub.name
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The endpoint.
#[derive(Debug)]
pub struct Server;

/// The segment size the listener announces: an Ethernet path's, as a client reaching Azure
/// over a network sees. On loopback the kernel would otherwise negotiate about 65 483, and the
/// Python client (`azure-eventhub` 5.15.1) reads every TCP option of its connected socket and
/// writes it back, which Linux refuses for a `TCP_MAXSEG` above 32 767 (`[Errno 22] Invalid
/// argument`: Azure/azure-sdk-for-python issue 45394, fixed upstream after 5.15.1).
const ANNOUNCED_MSS: u32 = 1460;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_mss(ANNOUNCED_MSS)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl Server {
    /// Binds the listener and serves in the background until the handle shuts it down (or
    /// is dropped).
    pub async fn start(config: Config) -> Result<ServerHandle, Error> {
        config.validate()?;
        let listener = listen(config.listen).map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(links::Shared {
            namespace: store::Namespace::new(
                config.hubs.iter().map(|h| (h.name.as_str(), h.partitions)),
            ),
            container_id: config.namespace.clone(),
            settle_delay: config.settle_delay,
            stopping: stopping.clone(),
        });
        tracing::info!(%addr, hubs = ?config.hubs, "Event Hubs endpoint listening");
        let task = tokio::spawn(accept_loop(listener, shared, stopping));
        Ok(ServerHandle {
            addr,
            stop,
            task: Some(task),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<links::Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(links::serve_connection(stream, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = links::until_stopped(&mut stopping) => break,
        }
    }
    drop(listener);
    // Each connection closes itself on the stop signal; give them a moment to say so.
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), all_closed)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// A running endpoint. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the endpoint listens on (the port it got, when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection string to give a client, in the form Azure's emulator documents:
    /// `Endpoint=sb://127.0.0.1:PORT;SharedAccessKeyName=…;SharedAccessKey=…;UseDevelopmentEmulator=true`.
    /// The Python client follows it as is (plain AMQP to that port); the Rust client needs
    /// [`endpoint`](Self::endpoint) as well.
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={SAS_KEY_NAME};SharedAccessKey={SAS_KEY};UseDevelopmentEmulator=true",
            self.reachable_addr()
        )
    }

    /// `amqp://127.0.0.1:PORT`: what the Rust client's `with_custom_endpoint` takes (the
    /// `amqp` scheme means plain TCP).
    pub fn endpoint(&self) -> String {
        format!("amqp://{}", self.reachable_addr())
    }

    /// The listen address, with an unspecified IP (0.0.0.0, ::) replaced by loopback.
    fn reachable_addr(&self) -> SocketAddr {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        addr
    }

    /// Stops taking connections, closes the open ones and waits for them (at most a few
    /// seconds).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
