//! Scheduling policies behind one trait.
//!
//! A policy is the "order → group → place" part of a scheduling pass (the Kubernetes
//! framework's queue-sort / filter / score / bind, minus dispatch). The event loop in
//! [`crate::engine`] (simulation) or the testbed scheduler owns the clock and the executor
//! and calls the policy at every event; the policy only reorders the runnable list and
//! decides who runs where.

use std::fmt;

use crate::cluster::Cluster;
use crate::job::{Job, JobIdx};

mod antman;
mod antman_fixed;
mod fifo;
mod muri;
mod srtf;
mod themis;
mod tiresias;

pub use antman::AntMan;
pub use antman_fixed::{AntManAudit, AntManFixed, SharedAudit};
pub use muri::{MuriOptions, MuriVariant};
pub use themis::ThemisVariant;

/// How a start event and an end event that (almost) coincide are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieRule {
    /// Merge only on exact float equality (SRTF, SRSF, Tiresias).
    Exact,
    /// Merge when `isclose(end, start, rel 1e-9, abs 1e-4)` (Muri), at the start time.
    Close,
}

/// How predicted job ends become end events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndEventRule {
    /// Ends within rel 1e-9 of each other share an event (most policies).
    Coalesced,
    /// Only the earliest end (and exact ties) is kept (Tiresias).
    EarliestOnly,
    /// As `Coalesced`, then every end within 1e-4 s of the earliest joins it (`antman-fixed`).
    MergedWithin1e4,
    /// The reference AntMan's rule: coalesce as `Coalesced`, sort by time, then merge the
    /// events within 1e-4 s of the first by deleting them from the list while indexing it.
    /// Where that raises IndexError in the reference, the simulation stops with an error.
    ReferenceAntMan,
}

/// What a policy may read and change during one scheduling pass.
pub struct SchedulingContext<'a> {
    pub now: f64,
    pub jobs: &'a mut [Job],
    /// Arrived, unfinished jobs. Its order persists between passes and breaks ties in the
    /// next pass's stable sorts, exactly as in the reference.
    pub runnable: &'a mut Vec<JobIdx>,
    /// Emptied by the caller before the pass.
    pub cluster: &'a mut Cluster,
}

/// One scheduling policy. Every hook has a default so each policy states only what it adds.
pub trait Policy: Send {
    /// The `--schedule` name.
    fn name(&self) -> &str;

    fn tie_rule(&self) -> TieRule {
        TieRule::Exact
    }

    fn end_event_rule(&self) -> EndEventRule {
        EndEventRule::Coalesced
    }

    /// A job joins the runnable list.
    fn on_arrival(&mut self, _job: &mut Job) {}

    /// A RUNNING job was credited with progress for `[interval_start, now]`.
    fn on_progress(&mut self, _job: &mut Job, _interval_start: f64, _now: f64) {}

    /// A job finished and left the runnable list.
    fn on_completion(&mut self, _job: &Job) {}

    /// Rebuild the allocation: set `placement` (and `iteration_time_cur`, `overhead`,
    /// `group`) on every job that runs until the next event. Jobs left without a placement
    /// are preempted or stay pending.
    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>);

    /// A time at which the policy wants an extra event even if no job arrives or ends
    /// (Tiresias' queue demotions). Called after each pass.
    fn next_wakeup(&mut self, _now: f64, _jobs: &[Job], _runnable: &[JobIdx]) -> Option<f64> {
        None
    }
}

/// Knobs shared by the policies (the reference's flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyOptions {
    /// Most jobs in one interleaved group (`--packing_num`).
    pub packing_num: usize,
    /// Pipeline stages M (`--multi_resource`).
    pub multi_resource: usize,
    /// Edge threshold factor λ (`--weight_lbd`).
    pub weight_lbd: f64,
    /// Split groups slower than running their members back to back (`--autopack`).
    pub autopack: bool,
    /// Largest candidate list matched exactly by the blossom algorithm; longer lists (only on
    /// clusters far larger than the paper's, which never exceeds 256) are matched greedily by
    /// profile class (`--match_block`).
    pub match_block: usize,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            packing_num: 4,
            multi_resource: 4,
            weight_lbd: 0.0,
            autopack: true,
            match_block: 256,
        }
    }
}

/// Every policy name `--schedule` accepts, with a one-line description.
pub const POLICIES: [(&str, &str); 12] = [
    ("shortest", "SRTF: shortest remaining time first"),
    ("shortest-gpu", "SRSF: shortest remaining GPU-time first"),
    (
        "dlas-gpu",
        "Tiresias: 2D least-attained-service with 3 queues",
    ),
    (
        "multi-resource-blossom-same-gpu",
        "Muri-S: SRSF order + blossom interleaving (durations known)",
    ),
    (
        "multi-resource-blossom-same-gpu-unaware",
        "Muri-L: least attained GPU service + blossom interleaving",
    ),
    (
        "multi-resource-blossom-same-gpu-unaware-worstordering",
        "Muri-L ablation: worst stage ordering",
    ),
    (
        "multi-resource-gpu-unaware",
        "Muri-L ablation: sequential grouping instead of blossom",
    ),
    ("fifo", "FIFO: arrival order, non-preemptive, no backfill"),
    (
        "themis",
        "Themis: finish-time fairness (the reference's formulation)",
    ),
    (
        "themis-fixed",
        "Themis, corrected: isolated throughput in iterations/s, deterministic optimum",
    ),
    (
        "antman",
        "AntMan: guaranteed + opportunistic GPU sharing, non-preemptive",
    ),
    (
        "antman-fixed",
        "AntMan, corrected: one partial reservation at a time, close end events merged",
    ),
];

/// Short paper names for tables.
pub fn display_name(policy: &str) -> &str {
    match policy {
        "shortest" => "SRTF",
        "shortest-gpu" => "SRSF",
        "dlas-gpu" => "Tiresias",
        "multi-resource-blossom-same-gpu" => "Muri-S",
        "multi-resource-blossom-same-gpu-unaware" => "Muri-L",
        "multi-resource-blossom-same-gpu-unaware-worstordering" => "Muri-L-worst",
        "multi-resource-gpu-unaware" => "Muri-L-noblossom",
        "fifo" => "FIFO",
        "themis" => "Themis",
        "themis-fixed" => "Themis-fixed",
        "antman" => "AntMan",
        "antman-fixed" => "AntMan-fixed",
        other => other,
    }
}

/// `--schedule` named a policy we do not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = POLICIES.iter().map(|(n, _)| *n).collect();
        write!(
            f,
            "unknown policy `{}`; choose one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}

/// Builds a policy from its `--schedule` name.
pub fn build(name: &str, opts: PolicyOptions) -> Result<Box<dyn Policy>, UnknownPolicy> {
    let muri = |variant| Box::new(muri::Muri::new(variant, opts)) as Box<dyn Policy>;
    Ok(match name {
        "shortest" => Box::new(srtf::ShortestFirst::new(false)),
        "shortest-gpu" => Box::new(srtf::ShortestFirst::new(true)),
        "dlas-gpu" => Box::new(tiresias::Tiresias::new()),
        "fifo" => Box::new(fifo::Fifo),
        "themis" => Box::new(themis::Themis::new(ThemisVariant::Reference)),
        "themis-fixed" => Box::new(themis::Themis::new(ThemisVariant::Fixed)),
        "antman" => Box::new(antman::AntMan::new()),
        "antman-fixed" => Box::new(antman_fixed::AntManFixed::new()),
        "multi-resource-blossom-same-gpu" => muri(MuriVariant::MuriS),
        "multi-resource-blossom-same-gpu-unaware" => muri(MuriVariant::MuriL),
        "multi-resource-blossom-same-gpu-unaware-worstordering" => muri(MuriVariant::WorstOrdering),
        "multi-resource-gpu-unaware" => muri(MuriVariant::NoBlossom),
        _ => return Err(UnknownPolicy(name.to_string())),
    })
}

/// Python's stable `list.sort(key=...)` on f64 keys (no NaNs occur), in `total_cmp` order.
///
/// Runs every event over every runnable job (thousands on the `_pr` traces), so each key is
/// read once and the (stable, run-adaptive) sort compares compact `(key, job)` pairs instead
/// of loading two jobs per comparison.
pub(crate) fn stable_sort_by_key(runnable: &mut [JobIdx], jobs: &[Job], key: impl Fn(&Job) -> f64) {
    sort_by_int_key(runnable, |j| total_order(key(&jobs[j])));
}

/// Stable sort of `runnable` by an integer key computed once per entry.
fn sort_by_int_key(runnable: &mut [JobIdx], key: impl Fn(JobIdx) -> i64) {
    let mut keyed: Vec<(i64, JobIdx)> = runnable.iter().map(|&j| (key(j), j)).collect();
    keyed.sort_by_key(|&(k, _)| k);
    for (slot, (_, j)) in runnable.iter_mut().zip(keyed) {
        *slot = j;
    }
}

/// An integer that orders like [`f64::total_cmp`] (the same bit transform it uses).
fn total_order(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// Stable sort, largest GPU count first (the reference's final placement order).
pub(crate) fn sort_by_gpus_descending(runnable: &mut [JobIdx], jobs: &[Job]) {
    sort_by_int_key(runnable, |j| -i64::from(jobs[j].num_gpu()));
}

#[cfg(test)]
mod tests {
    use super::total_order;

    #[test]
    fn total_order_orders_like_total_cmp() {
        let values = [
            f64::NEG_INFINITY,
            -3.5e300,
            -1.0,
            -1e-310,
            -0.0,
            0.0,
            1e-310,
            0.25,
            1.0,
            7.0e12,
            f64::INFINITY,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    total_order(a).cmp(&total_order(b)),
                    a.total_cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }
}
