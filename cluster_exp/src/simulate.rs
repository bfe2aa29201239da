//! Simulate mode as a library call: validate inputs, run one policy, summarise.

use anyhow::bail;

use crate::cluster::ClusterSpec;
use crate::engine::{Progress, SimResult, Simulation};
use crate::policy::{PolicyKind, PolicyOptions};
use crate::trace::Trace;

/// Checks that every job can run on an empty cluster; the simulation would otherwise stop
/// early with jobs never run.
pub fn check_fits(trace: &Trace, spec: &ClusterSpec) -> anyhow::Result<()> {
    let mut checked: Vec<u32> = Vec::new();
    for (row, job) in trace.jobs.iter().enumerate() {
        if checked.contains(&job.num_gpu) {
            continue;
        }
        if !spec.can_ever_fit(job.num_gpu) {
            bail!(
                "{}: line {}: field `num_gpu`: job {} needs {} GPUs, but the cluster ({} nodes × {} GPUs) can never place it",
                trace.source,
                trace.line_of(row),
                job.job_id,
                job.num_gpu,
                spec.num_nodes(),
                spec.num_gpu_p_node
            );
        }
        checked.push(job.num_gpu);
    }
    Ok(())
}

/// Runs `trace` under the named policy (reference or paper name, any case) on `spec`.
pub fn simulate(
    trace: &Trace,
    spec: ClusterSpec,
    policy_name: &str,
    opts: PolicyOptions,
    progress: Option<Progress<'_>>,
) -> anyhow::Result<SimResult> {
    simulate_logged(trace, spec, policy_name, opts, progress, false)
}

/// [`simulate`], keeping a decision log in [`SimResult::decisions`] when `decisions` is set.
pub fn simulate_logged(
    trace: &Trace,
    spec: ClusterSpec,
    policy_name: &str,
    opts: PolicyOptions,
    progress: Option<Progress<'_>>,
    decisions: bool,
) -> anyhow::Result<SimResult> {
    check_fits(trace, &spec)?;
    let kind = PolicyKind::parse(policy_name)?;
    let mut sim = Simulation::new(&trace.jobs, spec, kind.build(opts));
    if decisions {
        sim = sim.with_decisions();
    }
    let mut result = sim
        .run(progress)
        .map_err(|e| anyhow::anyhow!(e).context(format!("simulating {}", trace.source)))?;
    // The canonical name, whichever spelling the caller used.
    result.policy = kind.name().to_string();
    Ok(result)
}
