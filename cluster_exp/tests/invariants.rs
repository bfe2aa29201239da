//! Every policy on the project's default trace: all jobs finish exactly once, times are
//! consistent, every pass places jobs on real nodes without booking a GPU twice, and every
//! job's running time covers its work.

use std::path::Path;
use std::sync::{Arc, Mutex};

use muri::cluster::ClusterSpec;
use muri::engine::{PassView, Simulation};
use muri::job::JobIdx;
use muri::policy::{PolicyKind, PolicyOptions};
use muri::simulate::simulate;
use muri::trace::Trace;

/// What the pass observer found over one run.
#[derive(Default)]
struct Observed {
    violations: Vec<String>,
    /// Fastest iteration time each job was ever given while placed (by job index).
    fastest_iteration: Vec<f64>,
}

/// How a policy books GPUs.
#[derive(Clone, Copy, PartialEq)]
enum Booking {
    /// On nodes, one placement per GPU (interleaved groups share one placement).
    Nodes,
    /// On nodes, but opportunistic jobs share GPUs by design (AntMan): only guaranteed jobs
    /// are counted.
    GuaranteedOnly,
    /// By GPU count only, with an empty placement (Tiresias, as in the reference).
    CountOnly,
}

/// Checks one pass: every placed job sits on existing nodes with exactly its GPU count, on
/// one node when it fits in one, and no GPU holds two placements; count-only policies never
/// book more GPUs than the cluster has.
fn check_pass(view: &PassView<'_>, booking: Booking, seen: &mut Observed) {
    let spec = view.cluster;
    let gpn = spec.num_gpu_p_node;
    let mut used = vec![0u32; spec.num_nodes() as usize];
    let mut counted: Vec<Vec<JobIdx>> = Vec::new();
    let mut count_only = 0;
    for &j in view.runnable {
        let job = &view.jobs[j];
        let Some(p) = &job.placement else { continue };
        let what = format!("t={} job {}", view.now, job.spec.job_id);
        let fastest = &mut seen.fastest_iteration[j];
        *fastest = fastest.min(job.iteration_time_cur);
        if booking == Booking::CountOnly {
            if !p.shares.is_empty() {
                seen.violations
                    .push(format!("{what}: count-only policy placed on nodes"));
            }
            count_only += job.num_gpu();
            continue;
        }
        if p.num_gpus() != job.num_gpu() {
            seen.violations.push(format!(
                "{what}: placed on {} GPUs, needs {}",
                p.num_gpus(),
                job.num_gpu()
            ));
        }
        let mut nodes: Vec<u32> = p.shares.iter().map(|s| s.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.len() != p.shares.len()
            || p.shares
                .iter()
                .any(|s| s.node >= spec.num_nodes() || s.gpus == 0)
        {
            seen.violations
                .push(format!("{what}: bad shares {:?}", p.shares));
        }
        // AntMan's opportunistic jobs take the least-utilised GPUs wherever they are.
        let opportunistic = booking == Booking::GuaranteedOnly && job.spec.priority != 0;
        if job.num_gpu() <= gpn && p.shares.len() != 1 && !opportunistic {
            seen.violations.push(format!(
                "{what}: fits one node but spread over {:?}",
                p.shares
            ));
        }
        if job.iteration_time_cur <= 0.0 || !job.iteration_time_cur.is_finite() {
            seen.violations
                .push(format!("{what}: iteration time {}", job.iteration_time_cur));
        }
        if opportunistic {
            continue;
        }
        let mut members: Vec<JobIdx> = job.group.iter().copied().chain([j]).collect();
        members.sort_unstable();
        if counted.contains(&members) {
            continue;
        }
        for &m in &members {
            if view.jobs[m].placement.as_ref() != Some(p) {
                seen.violations
                    .push(format!("{what}: group member {m} placed elsewhere"));
            }
        }
        counted.push(members);
        for s in &p.shares {
            if let Some(u) = used.get_mut(s.node as usize) {
                *u += s.gpus;
            }
        }
    }
    if count_only > spec.num_gpus() {
        seen.violations.push(format!(
            "t={}: {count_only} of {} GPUs booked",
            view.now,
            spec.num_gpus()
        ));
    }
    for (node, &u) in used.iter().enumerate() {
        if u > gpn {
            seen.violations.push(format!(
                "t={}: node {node} has {u} of {gpn} GPUs booked",
                view.now
            ));
        }
    }
}

#[test]
fn every_policy_finishes_every_job_consistently() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace-data/default.csv");
    let trace = Trace::from_path(&path).unwrap();
    for kind in PolicyKind::ALL {
        let name = kind.name();
        let observed = Arc::new(Mutex::new(Observed {
            violations: Vec::new(),
            fastest_iteration: vec![f64::INFINITY; trace.jobs.len()],
        }));
        let sink = observed.clone();
        let booking = match kind {
            PolicyKind::AntMan | PolicyKind::AntManFixed => Booking::GuaranteedOnly,
            PolicyKind::Tiresias => Booking::CountOnly,
            _ => Booking::Nodes,
        };
        let r = Simulation::new(
            &trace.jobs,
            ClusterSpec::N8G8,
            kind.build(PolicyOptions::default()),
        )
        .with_pass_observer(Box::new(move |view| {
            check_pass(view, booking, &mut sink.lock().unwrap())
        }))
        .run(None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let observed = observed.lock().unwrap();
        assert!(
            observed.violations.is_empty(),
            "{name}: {} violations, first: {}",
            observed.violations.len(),
            observed
                .violations
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
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
            // A job runs only between its start and end, and its running time covers its
            // work: every iteration took at least the fastest iteration time it was given.
            let tol = 1e-9 * j.end_time.abs().max(1.0);
            assert!(
                j.real_executed_time <= j.end_time - j.start_time + tol,
                "{name}: job {} ran {} s within {} s",
                j.job_id,
                j.real_executed_time,
                j.end_time - j.start_time
            );
            let idx = trace
                .jobs
                .iter()
                .position(|t| t.job_id == j.job_id)
                .unwrap();
            let work = trace.jobs[idx].iterations as f64 * observed.fastest_iteration[idx];
            assert!(
                j.real_executed_time >= work * (1.0 - 1e-9),
                "{name}: job {} ran {} s for {} s of work",
                j.job_id,
                j.real_executed_time,
                work
            );
        }
        for row in &r.cluster {
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
