//! The accepting side of every gRPC server of the testbed (scheduler, worker, trainer).

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// `listener`'s connections with `TCP_NODELAY` set, for `serve_with_incoming`.
///
/// Without it, a burst of concurrent calls on one HTTP/2 connection (a round's Execute to a
/// worker) meets Nagle's algorithm on the server's replies and the client's delayed ACK: a
/// reply written in two segments waits for the ACK of the first, about 40 ms on Linux. The
/// 64-group dispatch bench showed exactly that: most calls answered in 3–5 ms, a tail at 50 ms.
/// The clients set `TCP_NODELAY` too ([`crate::client::endpoint`]).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
