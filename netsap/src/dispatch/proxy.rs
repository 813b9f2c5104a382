//! Steering by forwarding in user space, the last resort: for every TCP service the gateway
//! listens on (global address, port) itself and copies each accepted connection to a node
//! picked by the service's policy. The nodes see the gateway as the client, every byte
//! crosses this process twice, and a port the gateway's own programs hold on all addresses
//! cannot be taken over (they serve it alone). UDP is not forwarded.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{DispatchError, Policy, Site, Steer, Steering, Table};
use crate::sap::TCP;

pub struct Proxy {
    tx: watch::Sender<Table>,
}

impl Proxy {
    pub fn start(site: &Site) -> Result<Proxy, DispatchError> {
        let (tx, rx) = watch::channel(Table::new());
        let global = site.global;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| DispatchError::Io { what: "proxy runtime".into(), source })?;
        std::thread::Builder::new()
            .name("netsap-proxy".into())
            .spawn(move || rt.block_on(manage(global, rx)))
            .map_err(|source| DispatchError::Io { what: "proxy thread".into(), source })?;
        Ok(Proxy { tx })
    }
}

impl Steering for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }
    fn apply(&mut self, table: &Table) -> Result<(), DispatchError> {
        self.tx.send(table.clone()).map_err(|_| DispatchError::ThreadDied("proxy"))
    }
}

struct Port {
    steer: Arc<Mutex<Steer>>,
    task: tokio::task::JoinHandle<()>,
}

/// Opens and closes the forwarding listeners as the table changes.
async fn manage(global: Ipv4Addr, mut rx: watch::Receiver<Table>) {
    let mut ports: BTreeMap<u16, Port> = BTreeMap::new();
    while rx.changed().await.is_ok() {
        let table = rx.borrow_and_update().clone();
        ports.retain(|port, p| {
            let keep = table.contains_key(&(TCP, *port));
            if !keep {
                p.task.abort();
            }
            keep
        });
        for (&(proto, port), s) in &table {
            if proto != TCP {
                continue;
            }
            if let Some(p) = ports.get(&port) {
                *p.steer.lock() = s.clone();
                continue;
            }
            match TcpListener::bind(SocketAddr::from((global, port))).await {
                Ok(l) => {
                    let steer = Arc::new(Mutex::new(s.clone()));
                    let task = tokio::spawn(forward(l, steer.clone(), port));
                    ports.insert(port, Port { steer, task });
                }
                // Retried on the next change of the table.
                Err(e) => tracing::warn!("proxy: cannot listen on {global}:{port}: {e}"),
            }
        }
    }
}

async fn forward(l: TcpListener, steer: Arc<Mutex<Steer>>, port: u16) {
    let next = AtomicUsize::new(0);
    loop {
        let Ok((client, from)) = l.accept().await else { continue };
        let to = {
            let s = steer.lock();
            let n = s.slots.len();
            let i = match (s.policy, from) {
                (Policy::Sticky, SocketAddr::V4(a)) => u32::from(*a.ip()) as usize % n,
                _ => next.fetch_add(1, Ordering::Relaxed) % n,
            };
            s.slots[i]
        };
        tokio::spawn(async move {
            let Ok(Ok(mut server)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect((to, port))).await else { return };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
