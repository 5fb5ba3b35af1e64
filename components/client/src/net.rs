//! gRPC plumbing shared by the PD and store sides: endpoints, channels, status classification.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Turns `host:port` or `http://host:port` into the URL tonic wants. TLS is not supported
/// (tonic is built without it), so `https://` is refused here rather than failing later.
pub(crate) fn endpoint_url(address: &str) -> Result<String> {
    let address = address.trim();
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: address.to_owned(),
        reason: reason.to_owned(),
    };
    if address.is_empty() {
        return Err(invalid("empty address"));
    }
    match address.split_once("://") {
        None => Ok(format!("http://{address}")),
        Some(("http", rest)) if !rest.is_empty() => Ok(address.to_owned()),
        Some(("https", _)) => Err(invalid("TLS is not supported; use http://")),
        Some(_) => Err(invalid("expected host:port or http://host:port")),
    }
}

/// A lazily connected channel: nothing is dialled until the first request, and tonic
/// reconnects by itself after a broken connection.
pub(crate) fn lazy_channel(url: &str, request_timeout: Duration) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| Error::InvalidEndpoint {
        endpoint: url.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        // A dead host should fail over to another peer well before the request timeout.
        .connect_timeout(request_timeout.min(Duration::from_secs(3)))
        .tcp_nodelay(true)
        // Finds a silently dead connection (host gone, no RST) between requests.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Wraps a message with its `grpc-timeout`, so the server drops work nobody waits for.
pub(crate) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Whether a status means the request did not get a proper answer from a working server
/// (connection refused or lost, timeout) rather than an answer saying no: worth trying
/// another peer or PD member.
pub(crate) fn is_transport(status: &tonic::Status) -> bool {
    use tonic::Code;
    // tonic reports a broken HTTP/2 connection or a channel that was not ready as Unknown.
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// Whether a transport failure certainly happened before the request left: the connection
/// was never established. Only then may a non-idempotent request be sent again.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NotConnected
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_url(" http://pd:2379 ").unwrap(), "http://pd:2379");
        assert!(endpoint_url("https://pd:2379")
            .unwrap_err()
            .to_string()
            .contains("TLS"));
        assert!(endpoint_url("").is_err());
        assert!(endpoint_url("http://").is_err());
        assert!(endpoint_url("grpc://pd:1").is_err());
    }

    #[test]
    fn status_classification() {
        assert!(is_transport(&tonic::Status::unavailable("down")));
        assert!(is_transport(&tonic::Status::deadline_exceeded("slow")));
        assert!(!is_transport(&tonic::Status::invalid_argument("bad")));
        assert!(!is_transport(&tonic::Status::resource_exhausted("too big")));
        assert!(!never_sent(&tonic::Status::unavailable("no source")));
    }

    /// Local only (no server needed): a port nobody listens on refuses the connection, which
    /// must be seen as a transport failure that never sent the request.
    #[tokio::test]
    async fn refused_connection_is_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = endpoint_url(&format!("127.0.0.1:{port}")).unwrap();
        let channel = lazy_channel(&url, Duration::from_secs(2)).unwrap();
        let mut kv = proto::tikvpb::tikv_client::TikvClient::new(channel);
        let status = kv
            .raw_get(proto::kvrpcpb::RawGetRequest::default())
            .await
            .unwrap_err();
        assert!(is_transport(&status), "{status:?}");
        assert!(never_sent(&status), "{status:?}");
    }
}
