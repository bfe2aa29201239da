//! Every policy on the project's default trace: all jobs finish exactly once, times are
//! consistent, and no pass over-subscribes the cluster.

use std::path::Path;

use muri::cluster::ClusterSpec;
use muri::policy::{PolicyOptions, POLICIES};
use muri::simulate::simulate;
use muri::trace::Trace;

#[test]
fn every_policy_finishes_every_job_consistently() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace-data/default.csv");
    let trace = Trace::from_path(&path).unwrap();
    for (name, _) in POLICIES {
        let r = simulate(
            &trace,
            ClusterSpec::N8G8,
            name,
            PolicyOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(r.unfinished, 0, "{name}");
        assert_eq!(r.jobs.len(), trace.jobs.len(), "{name}: one row per job");
        let mut ids: Vec<u64> = r.jobs.iter().map(|j| j.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), trace.jobs.len(), "{name}: no job twice");
        for j in &r.jobs {
            assert!(
                j.start_time >= j.submit_time,
                "{name}: job {} starts before submit",
                j.job_id
            );
            assert!(
                j.end_time > j.start_time,
                "{name}: job {} ends before start",
                j.job_id
            );
            assert!((j.jct - (j.end_time - j.submit_time)).abs() < 1e-6);
            // Nothing can finish faster than its trace duration allows at solo speed with
            // perfect interleaving (a group's period is at least its longest member stage).
            assert!(j.real_executed_time > 0.0);
        }
        for row in &r.cluster {
            assert!(
                row.busy_gpu <= 64,
                "{name}: over-subscribed at {}",
                row.time
            );
            assert_eq!(row.busy_gpu + row.idle_gpu, 64);
        }
        let completed = r.cluster.last().unwrap().completed_job;
        assert_eq!(completed, trace.jobs.len(), "{name}");
    }
}

#[test]
fn fifo_never_preempts_and_muri_groups_under_contention() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace-data/default.csv");
    let trace = Trace::from_path(&path).unwrap();
    let fifo = simulate(
        &trace,
        ClusterSpec::N8G8,
        "fifo",
        PolicyOptions::default(),
        None,
    )
    .unwrap();
    assert!(fifo.jobs.iter().all(|j| j.preempt == 0));
    // Muri packs up to 4 jobs per GPU set, so at some point more jobs run than GPUs exist.
    let muri = simulate(
        &trace,
        ClusterSpec::N8G8,
        "multi-resource-blossom-same-gpu",
        PolicyOptions::default(),
        None,
    )
    .unwrap();
    let max_running = muri.cluster.iter().map(|c| c.running_job).max().unwrap();
    assert!(
        max_running > 64,
        "Muri never interleaved: max {max_running} running jobs"
    );
    let srtf = simulate(
        &trace,
        ClusterSpec::N8G8,
        "shortest",
        PolicyOptions::default(),
        None,
    )
    .unwrap();
    assert!(srtf.cluster.iter().all(|c| c.running_job <= 64));
}
