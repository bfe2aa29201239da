//! Connecting to a peer service with the shared token attached.

use std::time::Duration;

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{AddToken, Token};
use crate::pb;

/// A channel that adds the token to every call.
pub type AuthChannel = InterceptedService<Channel, AddToken>;

pub type WorkerClient = pb::scheduler_to_worker_client::SchedulerToWorkerClient<AuthChannel>;
pub type SchedulerClient = pb::worker_to_scheduler_client::WorkerToSchedulerClient<AuthChannel>;
pub type TrainerReportClient =
    pb::trainer_to_scheduler_client::TrainerToSchedulerClient<AuthChannel>;
pub type TrainerClient = pb::scheduler_to_trainer_client::SchedulerToTrainerClient<AuthChannel>;
pub type ControlClient = pb::control_client::ControlClient<AuthChannel>;

/// Accepts `host:port` or a full `http://host:port` URI.
pub fn endpoint(addr: &str, request_timeout: Duration) -> anyhow::Result<Endpoint> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .with_context(|| format!("bad address `{addr}`"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .tcp_nodelay(true))
}

/// Connects now (fails fast if nobody listens) and wraps the channel with the token.
pub async fn connect(
    addr: &str,
    token: &Token,
    request_timeout: Duration,
) -> anyhow::Result<AuthChannel> {
    let channel = endpoint(addr, request_timeout)?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(InterceptedService::new(channel, AddToken(token.clone())))
}

/// Like [`connect`], but the TCP connection is made on first use (for clients created
/// inside request handlers, where blocking on a connect would stall the server).
pub fn connect_lazy(
    addr: &str,
    token: &Token,
    request_timeout: Duration,
) -> anyhow::Result<AuthChannel> {
    let channel = endpoint(addr, request_timeout)?.connect_lazy();
    Ok(InterceptedService::new(channel, AddToken(token.clone())))
}

pub async fn worker(addr: &str, token: &Token) -> anyhow::Result<WorkerClient> {
    Ok(WorkerClient::new(
        connect(addr, token, Duration::from_secs(10)).await?,
    ))
}

pub async fn scheduler(addr: &str, token: &Token) -> anyhow::Result<SchedulerClient> {
    Ok(SchedulerClient::new(
        connect(addr, token, Duration::from_secs(10)).await?,
    ))
}

pub async fn trainer_reports(addr: &str, token: &Token) -> anyhow::Result<TrainerReportClient> {
    Ok(TrainerReportClient::new(
        connect(addr, token, Duration::from_secs(10)).await?,
    ))
}

pub async fn control(addr: &str, token: &Token) -> anyhow::Result<ControlClient> {
    Ok(ControlClient::new(
        connect(addr, token, Duration::from_secs(10)).await?,
    ))
}
