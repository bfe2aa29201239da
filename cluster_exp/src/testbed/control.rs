//! `muri submit`, `muri status`, `muri cancel`: online use of a running scheduler.

use muri_runtime::auth::Token;
use muri_runtime::tls::Tls;
use muri_runtime::{client, pb};

fn rpc_error(what: &str, addr: &str, tls: &Tls, s: tonic::Status) -> anyhow::Error {
    let error = anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code());
    if client::is_transport_failure(&s) {
        error.context(format!("calling {}", client::transport_hint(addr, tls)))
    } else {
        error
    }
}

/// Queues a job and returns its id.
pub async fn submit(
    addr: &str,
    token: &Token,
    tls: &Tls,
    model: &str,
    num_gpu: u32,
    iterations: u64,
) -> anyhow::Result<u64> {
    let mut c = client::control(addr, token, tls).await?;
    let reply = c
        .submit(pb::SubmitRequest {
            model: model.into(),
            num_gpu,
            iterations,
        })
        .await
        .map_err(|s| rpc_error("submit", addr, tls, s))?;
    Ok(reply.into_inner().job_id)
}

pub async fn status(addr: &str, token: &Token, tls: &Tls) -> anyhow::Result<pb::StatusReply> {
    let mut c = client::control(addr, token, tls).await?;
    Ok(c.status(pb::StatusRequest {})
        .await
        .map_err(|s| rpc_error("status", addr, tls, s))?
        .into_inner())
}

pub async fn cancel(addr: &str, token: &Token, tls: &Tls, job_id: u64) -> anyhow::Result<bool> {
    let mut c = client::control(addr, token, tls).await?;
    Ok(c.cancel(pb::CancelRequest { job_id })
        .await
        .map_err(|s| rpc_error("cancel", addr, tls, s))?
        .into_inner()
        .found)
}

/// The `muri status` table.
pub fn format_status(s: &pb::StatusReply) -> String {
    let mut out = format!(
        "virtual time {:.1} s, {} workers, {} jobs\n{:>6} {:<20} {:>4} {:<9} {:>8} {:<14} {:<22} {:>12}\n",
        s.now,
        s.workers,
        s.jobs.len(),
        "job",
        "model",
        "gpus",
        "state",
        "progress",
        "group",
        "placement",
        "JCT (s)"
    );
    for j in &s.jobs {
        let group: Vec<String> = j.group.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "{:>6} {:<20} {:>4} {:<9} {:>7.1}% {:<14} {:<22} {:>12.1}\n",
            j.job_id,
            j.model,
            j.num_gpu,
            j.state,
            j.progress * 100.0,
            if group.is_empty() {
                "-".into()
            } else {
                group.join("+")
            },
            if j.placement.is_empty() {
                "-"
            } else {
                &j.placement
            },
            j.jct_s
        ));
    }
    out
}
