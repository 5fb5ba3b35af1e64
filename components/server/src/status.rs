//! The status port: `GET /metrics` (Prometheus text format, the process's default registry)
//! and `GET /status` (JSON from the caller). A deliberately small HTTP/1.1 server: one
//! request per connection, bounded request size, nothing else served.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Produces the `/status` document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

const MAX_REQUEST: usize = 8 << 10;
/// Status connections served at once.
const MAX_CONNECTIONS: usize = 16;

/// Serves until `shutdown` completes.
pub async fn serve(listener: TcpListener, status: StatusFn, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    // A scraper or two at a time is the use; more wait their turn.
                    let Ok(permit) = limit.clone().acquire_owned().await else { return };
                    let status = status.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), handle(conn, status)).await;
                        drop(permit);
                    });
                }
                // Out of file descriptors and the like: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

fn response(code: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The request line's path, once the header is complete.
fn request_path(buf: &[u8]) -> Option<Result<String, &'static str>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    Some(match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Ok(path.to_string()),
        _ => Err("only GET is served"),
    })
}

async fn handle(mut conn: TcpStream, status: StatusFn) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let path = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(path) = request_path(&buf) {
            break path;
        }
        if buf.len() > MAX_REQUEST {
            break Err("request header too large");
        }
    };
    let out = match path.as_deref() {
        Ok("/metrics") => {
            let mut body = Vec::new();
            let encoder = prometheus::TextEncoder::new();
            match prometheus::Encoder::encode(&encoder, &prometheus::gather(), &mut body) {
                Ok(()) => response("200 OK", "text/plain; version=0.0.4", &body),
                Err(e) => response(
                    "500 Internal Server Error",
                    "text/plain",
                    e.to_string().as_bytes(),
                ),
            }
        }
        Ok("/status") => {
            let body = serde_json::to_vec_pretty(&status()).unwrap_or_default();
            response("200 OK", "application/json", &body)
        }
        Ok(_) => response(
            "404 Not Found",
            "text/plain",
            b"regionstore status port: GET /metrics or /status\n",
        ),
        Err(why) => response("400 Bad Request", "text/plain", why.as_bytes()),
    };
    conn.write_all(&out).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_status() {
        crate::metrics::METRICS.store_reconnects.inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let status: StatusFn = Arc::new(|| serde_json::json!({"store_id": 7}));
        let server = tokio::spawn(serve(listener, status, async {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("regionstore_store_reconnects_total"));
        let status = get("/status").await;
        assert!(status.contains("\"store_id\": 7"), "{status}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        let _ = stop.send(());
        server.await.unwrap();
    }
}
