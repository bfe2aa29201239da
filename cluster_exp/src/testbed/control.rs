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

/// The `muri status --format json` object: virtual time, workers and one object per job.
pub fn status_json(s: &pb::StatusReply) -> String {
    let jobs: Vec<serde_json::Value> = s
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "job_id": j.job_id,
                "model": j.model,
                "num_gpu": j.num_gpu,
                "state": j.state,
                "progress": j.progress,
                "group": j.group,
                "placement": j.placement,
                "jct_s": j.jct_s,
                "attempts": j.attempts,
                "error": j.error,
            })
        })
        .collect();
    let doc = serde_json::json!({ "now": s.now, "workers": s.workers, "jobs": jobs });
    serde_json::to_string_pretty(&doc).expect("plain data always encodes") + "\n"
}

/// The `muri status --format csv` rows, one per job (group members joined by `+`).
pub fn status_csv(s: &pb::StatusReply) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "job_id",
        "model",
        "num_gpu",
        "state",
        "progress",
        "group",
        "placement",
        "jct_s",
        "attempts",
        "error",
    ];
    // Writing to a Vec cannot fail.
    let _ = w.write_record(header);
    for j in &s.jobs {
        let group: Vec<String> = j.group.iter().map(u64::to_string).collect();
        let _ = w.write_record([
            j.job_id.to_string(),
            j.model.clone(),
            j.num_gpu.to_string(),
            j.state.clone(),
            j.progress.to_string(),
            group.join("+"),
            j.placement.clone(),
            j.jct_s.to_string(),
            j.attempts.to_string(),
            j.error.clone(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> pb::StatusReply {
        pb::StatusReply {
            now: 12.5,
            workers: 2,
            jobs: vec![pb::JobState {
                job_id: 7,
                model: "bert".into(),
                num_gpu: 2,
                state: "running".into(),
                progress: 0.25,
                group: vec![8, 9],
                placement: "node0:2".into(),
                jct_s: 3.0,
                attempts: 1,
                error: String::new(),
            }],
        }
    }

    #[test]
    fn status_as_csv_and_json() {
        let csv = status_csv(&reply());
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("job_id,model,num_gpu,state,progress,group,placement,jct_s,attempts,error")
        );
        assert_eq!(lines.next(), Some("7,bert,2,running,0.25,8+9,node0:2,3,1,"));
        let json: serde_json::Value = serde_json::from_str(&status_json(&reply())).unwrap();
        assert_eq!(json["now"], 12.5);
        assert_eq!(json["jobs"][0]["group"][1], 9);
        assert_eq!(json["jobs"][0]["placement"], "node0:2");
    }
}
