//! A fault-injecting TCP proxy in front of a store: the store advertises the proxy's address,
//! so every peer and client reaches it through here. It can blackhole (connections stay
//! open and nothing is delivered either way until it heals: a partition of everything
//! inbound to the store, while the store's own connections to others still work) and reset
//! (close every connection).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: String,
    blackhole: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`; needs a tokio runtime.
    pub fn start(target: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let blackhole = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (blackhole, conns) = (blackhole.clone(), conns.clone());
            tokio::spawn(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                while let Ok((inbound, _)) = listener.accept().await {
                    let _ = inbound.set_nodelay(true);
                    let (blackhole, target) = (blackhole.clone(), target.clone());
                    let conn = tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let _ = outbound.set_nodelay(true);
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::select! {
                            _ = pump(ri, wo, &blackhole) => {}
                            _ = pump(ro, wi, &blackhole) => {}
                        }
                    });
                    let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                    conns.retain(|c| !c.is_finished());
                    conns.push(conn);
                }
            })
        };
        Proxy {
            addr,
            blackhole,
            conns,
            accept,
        }
    }

    /// Holds everything (`true`) or delivers it again (`false`).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Closes every connection through the proxy.
    pub fn reset(&self) {
        for conn in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            conn.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

/// Copies `from` to `to` until either closes; while blackholed, bytes wait (as TCP
/// retransmits through a partition) and flow again when it heals.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while blackhole.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
