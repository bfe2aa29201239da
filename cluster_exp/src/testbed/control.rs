//! `muri submit`, `muri status`, `muri cancel`: online use of a running scheduler.

use muri_runtime::auth::Token;
use muri_runtime::{client, pb};

fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}

/// Queues a job and returns its id.
pub async fn submit(
    addr: &str,
    token: &Token,
    model: &str,
    num_gpu: u32,
    iterations: u64,
) -> anyhow::Result<u64> {
    let mut c = client::control(addr, token).await?;
    let reply = c
        .submit(pb::SubmitRequest {
            model: model.into(),
            num_gpu,
            iterations,
        })
        .await
        .map_err(|s| rpc_error("submit", s))?;
    Ok(reply.into_inner().job_id)
}

pub async fn status(addr: &str, token: &Token) -> anyhow::Result<pb::StatusReply> {
    let mut c = client::control(addr, token).await?;
    Ok(c.status(pb::StatusRequest {})
        .await
        .map_err(|s| rpc_error("status", s))?
        .into_inner())
}

pub async fn cancel(addr: &str, token: &Token, job_id: u64) -> anyhow::Result<bool> {
    let mut c = client::control(addr, token).await?;
    Ok(c.cancel(pb::CancelRequest { job_id })
        .await
        .map_err(|s| rpc_error("cancel", s))?
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
