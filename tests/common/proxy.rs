//! A fault-injecting TCP proxy in front of a store: the store advertises the proxy's address,
//! so every peer and client reaches it through here. It can blackhole (connections stay
//! open and nothing is delivered either way until it heals: a partition of everything
//! inbound to the store, while the store's own connections to others still work), reset
//! (close every connection) and throttle (a slow link, so a snapshot streams in for long
//! enough to kill its receiver in the middle).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: String,
    blackhole: Arc<AtomicBool>,
    /// Bytes per second each direction of each connection may carry; 0: no limit.
    rate: Arc<AtomicU64>,
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
        let rate = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (blackhole, rate, conns) = (blackhole.clone(), rate.clone(), conns.clone());
            tokio::spawn(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                while let Ok((inbound, _)) = listener.accept().await {
                    let _ = inbound.set_nodelay(true);
                    let (blackhole, rate, target) =
                        (blackhole.clone(), rate.clone(), target.clone());
                    let conn = tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let _ = outbound.set_nodelay(true);
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::select! {
                            _ = pump(ri, wo, &blackhole, &rate) => {}
                            _ = pump(ro, wi, &blackhole, &rate) => {}
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
            rate,
            conns,
            accept,
        }
    }

    /// Holds everything (`true`) or delivers it again (`false`).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Limits each direction of each connection to `bytes_per_sec` (`None`: no limit).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
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
/// retransmits through a partition) and flow again when it heals; while throttled, each
/// chunk waits as long as the rate says it takes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: &AtomicBool,
    rate: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while blackhole.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Some(nanos) = (n as u64 * 1_000_000_000).checked_div(rate.load(Ordering::SeqCst)) {
            tokio::time::sleep(std::time::Duration::from_nanos(nanos)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
