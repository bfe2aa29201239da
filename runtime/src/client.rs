//! Connecting to a peer service with the shared token attached, over TLS when configured.

use std::time::Duration;

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{AddToken, Token};
use crate::pb;
use crate::tls::Tls;

/// A channel that adds the token to every call.
pub type AuthChannel = InterceptedService<Channel, AddToken>;

pub type WorkerClient = pb::scheduler_to_worker_client::SchedulerToWorkerClient<AuthChannel>;
pub type SchedulerClient = pb::worker_to_scheduler_client::WorkerToSchedulerClient<AuthChannel>;
pub type TrainerReportClient =
    pb::trainer_to_scheduler_client::TrainerToSchedulerClient<AuthChannel>;
pub type TrainerClient = pb::scheduler_to_trainer_client::SchedulerToTrainerClient<AuthChannel>;
pub type ControlClient = pb::control_client::ControlClient<AuthChannel>;

/// Accepts `host:port`, `http://host:port` or `https://host:port`; `tls` decides the scheme
/// of a bare `host:port` and refuses a scheme it cannot honour (see [`Tls::uri`]).
pub fn endpoint(addr: &str, tls: &Tls, request_timeout: Duration) -> anyhow::Result<Endpoint> {
    let uri = tls.uri(addr)?;
    let endpoint = Endpoint::from_shared(uri)
        .with_context(|| format!("bad address `{addr}`"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .tcp_nodelay(true);
    tls.apply(endpoint)
}

/// Connects now (fails fast if nobody listens or the handshake fails) and wraps the channel
/// with the token.
pub async fn connect(
    addr: &str,
    token: &Token,
    tls: &Tls,
    request_timeout: Duration,
) -> anyhow::Result<AuthChannel> {
    let channel = endpoint(addr, tls, request_timeout)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", transport_hint(addr, tls)))?;
    Ok(InterceptedService::new(channel, AddToken(token.clone())))
}

/// `addr`, how it was dialed, and what a failure then most likely means: a TLS/plaintext
/// mismatch otherwise shows up only as a bare "transport error" or a cancelled call.
pub fn transport_hint(addr: &str, tls: &Tls) -> String {
    if tls.is_client_tls() {
        format!(
            "{addr} over TLS (is it serving TLS with a certificate signed by --tls_ca for this address?)"
        )
    } else {
        format!("{addr} in plaintext (if it serves TLS, pass --tls_ca and use https://)")
    }
}

/// Whether a failed call's status may be the transport's (the connection broke or never
/// spoke gRPC: a TLS/plaintext mismatch shows up as Cancelled, Unknown or an h2 protocol
/// error reported as Internal) rather than the server's answer.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Cancelled
            | tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
    )
}

/// Like [`connect`], but the TCP connection is made on first use (for clients created
/// inside request handlers, where blocking on a connect would stall the server).
pub fn connect_lazy(
    addr: &str,
    token: &Token,
    tls: &Tls,
    request_timeout: Duration,
) -> anyhow::Result<AuthChannel> {
    let channel = endpoint(addr, tls, request_timeout)?.connect_lazy();
    Ok(InterceptedService::new(channel, AddToken(token.clone())))
}

pub async fn worker(addr: &str, token: &Token, tls: &Tls) -> anyhow::Result<WorkerClient> {
    Ok(WorkerClient::new(
        connect(addr, token, tls, Duration::from_secs(10)).await?,
    ))
}

pub async fn scheduler(addr: &str, token: &Token, tls: &Tls) -> anyhow::Result<SchedulerClient> {
    Ok(SchedulerClient::new(
        connect(addr, token, tls, Duration::from_secs(10)).await?,
    ))
}

pub async fn trainer_reports(
    addr: &str,
    token: &Token,
    tls: &Tls,
) -> anyhow::Result<TrainerReportClient> {
    Ok(TrainerReportClient::new(
        connect(addr, token, tls, Duration::from_secs(10)).await?,
    ))
}

pub async fn control(addr: &str, token: &Token, tls: &Tls) -> anyhow::Result<ControlClient> {
    Ok(ControlClient::new(
        connect(addr, token, tls, Duration::from_secs(10)).await?,
    ))
}
