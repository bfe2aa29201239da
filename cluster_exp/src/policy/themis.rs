//! Themis (`themis`, `themis-fixed`): finish-time fairness.
//!
//! At every event each runnable job i gets a share x_i ∈ (0, 1] of its GPU demand. Its
//! finish-time-fairness ratio is
//!
//! ```text
//! ρ_i(x_i) = (t − submit_i + W_i / x_i) / D_i,     W_i = R_i · it_i   (seconds at full speed)
//! ```
//!
//! where D_i is the job's "isolated" finish time. The policy picks x minimising max_i ρ_i
//! subject to Σ g_i x_i ≤ G and 0 ≤ x_i ≤ 1. The shares are **not enforced**; as in the
//! reference they only rank the jobs (see [`Themis::rank`]), and yarn places them in that
//! rank.
//!
//! # How the per-event problem is solved
//! ρ_i is convex and decreasing in x_i but not linear (1/x_i), so the min-max problem is not
//! an LP in x. It is solved exactly in two steps:
//! 1. **Bisection on the max ratio τ.** For a candidate τ each job needs
//!    x_i ≥ lo_i(τ) = W_i / (τ·D_i − (t − submit_i)); τ is feasible iff every lo_i ≤ 1 and
//!    Σ g_i lo_i(τ) ≤ G. Feasibility is monotone in τ, so bisection finds the minimal τ*.
//! 2. **The allocation LP at τ*** (good_lp, microlp): with the ratio fixed, the constraints
//!    are linear: lo_i(τ*) ≤ x_i ≤ 1, Σ g_i x_i ≤ G. When the capacity constraint binds at
//!    τ* the box collapses to x = lo(τ*) (the optimum is unique). Otherwise jobs that do
//!    not set the maximum may take any x in their box — the non-uniqueness the spec warns
//!    about. The LP then decides how the spare capacity is spread (see [`ThemisVariant`]).

use good_lp::{constraint, microlp, variable, ProblemVariables, Solution, SolverModel};

use super::{Policy, SchedulingContext};
use crate::job::{Job, JobIdx};

/// Which Themis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThemisVariant {
    /// The reference's behaviour, kept for comparability with the paper: the "isolated
    /// throughput" is the allocation fraction a_i = min(1, ⌈G/n⌉/g_i) (iterations divided by
    /// a fraction: dimensionally inconsistent), and the spare capacity of a non-unique optimum
    /// is spread evenly, every free job getting the same fraction of its box above lo_i —
    /// the interior point an interior-point solver (ECOS) tends to return.
    Reference,
    /// Corrected: isolated throughput in iterations/s (tput_i · a_i), so D_i is in seconds;
    /// and a deterministic optimum: the minimal τ* and the smallest shares meeting it.
    Fixed,
}

/// Per-job memory that Themis carries across events.
#[derive(Debug, Clone, Copy, Default)]
struct FairnessMemory {
    /// The job took part in an earlier allocation problem.
    seen: bool,
    prev_remaining: f64,
    prev_isolated_rate: f64,
    /// Isolated time "earned" so far (reference: iterations / fraction; fixed: seconds).
    cumulative_isolated: f64,
    /// Σ x · (event interval): the service the shares promised.
    time_should_receive: f64,
    deficit: f64,
    allocation: f64,
}

/// One job's terms in the per-event problem.
#[derive(Debug, Clone, Copy)]
pub struct FairnessTerm {
    pub gpus: f64,
    /// t − submit_i.
    pub elapsed: f64,
    /// R_i · it_i: seconds left at full speed.
    pub work: f64,
    /// The isolated finish time D_i (the ratio's denominator).
    pub isolated: f64,
}

impl FairnessTerm {
    /// ρ_i at share x.
    pub fn ratio(&self, x: f64) -> f64 {
        (self.elapsed + self.work / x) / self.isolated
    }

    /// Smallest share with ρ_i ≤ τ (infinite when τ is out of reach).
    fn min_share(&self, tau: f64) -> f64 {
        if self.work <= 0.0 {
            return 0.0;
        }
        let room = tau * self.isolated - self.elapsed;
        if room <= 0.0 {
            f64::INFINITY
        } else {
            self.work / room
        }
    }

    /// Jobs with no work or no isolated time have no meaningful ratio; they get a full share.
    fn is_degenerate(&self) -> bool {
        !(self.isolated > 0.0 && self.isolated.is_finite() && self.work.is_finite())
    }
}

pub struct Themis {
    variant: ThemisVariant,
    memory: Vec<FairnessMemory>,
    last_event_time: f64,
}

impl Themis {
    pub fn new(variant: ThemisVariant) -> Self {
        Themis {
            variant,
            memory: Vec::new(),
            last_event_time: 0.0,
        }
    }

    fn memory_mut(&mut self, j: JobIdx) -> &mut FairnessMemory {
        if self.memory.len() <= j {
            self.memory.resize(j + 1, FairnessMemory::default());
        }
        &mut self.memory[j]
    }

    /// Builds this event's terms and updates the cumulative isolated time (the reference's
    /// order: credit progress since the last problem, then remember this one).
    fn build_terms(
        &mut self,
        now: f64,
        jobs: &[Job],
        runnable: &[JobIdx],
        total_gpus: f64,
    ) -> Vec<FairnessTerm> {
        let per_job_gpus = (total_gpus / runnable.len() as f64).ceil();
        let variant = self.variant;
        runnable
            .iter()
            .map(|&j| {
                let job = &jobs[j];
                let gpus = job.num_gpu() as f64;
                let fraction = (per_job_gpus / gpus).min(1.0);
                // Iterations per "isolated second": the reference uses the bare fraction.
                let rate = match variant {
                    ThemisVariant::Reference => fraction,
                    ThemisVariant::Fixed => fraction / job.iteration_time,
                };
                let remaining = job.remaining_iteration;
                let m = self.memory_mut(j);
                if m.seen {
                    m.cumulative_isolated += (m.prev_remaining - remaining) / m.prev_isolated_rate;
                }
                m.seen = true;
                m.prev_remaining = remaining;
                m.prev_isolated_rate = rate;
                FairnessTerm {
                    gpus,
                    elapsed: now - job.spec.submit_time,
                    work: remaining * job.iteration_time,
                    isolated: m.cumulative_isolated + remaining / rate,
                }
            })
            .collect()
    }

    /// Ranks the runnable list: descending (sort_val, deficit, allocation), stable.
    fn rank(&mut self, now: f64, jobs: &mut [Job], runnable: &mut [JobIdx], shares: &[f64]) {
        let interval = now - self.last_event_time;
        for (&j, &x) in runnable.iter().zip(shares) {
            let executed = jobs[j].total_executed_time;
            jobs[j].sort_val = if executed == 0.0 {
                x * 1e9
            } else {
                x / executed
            };
            let m = self.memory_mut(j);
            m.allocation = x;
            m.deficit = m.time_should_receive - executed;
            m.time_should_receive += x * interval;
        }
        let memory = &self.memory;
        let key = |j: JobIdx| (jobs[j].sort_val, memory[j].deficit, memory[j].allocation);
        runnable.sort_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.total_cmp(&ka.0)
                .then(kb.1.total_cmp(&ka.1))
                .then(kb.2.total_cmp(&ka.2))
        });
    }
}

/// Minimal feasible max ratio τ* (bisection), or `None` when no job has a finite ratio.
pub fn min_max_ratio(terms: &[FairnessTerm], total_gpus: f64) -> Option<f64> {
    let live: Vec<&FairnessTerm> = terms.iter().filter(|t| !t.is_degenerate()).collect();
    // Every job at full share: no τ below this is reachable.
    let floor = live
        .iter()
        .map(|t| t.ratio(1.0))
        .fold(f64::NEG_INFINITY, f64::max);
    if !floor.is_finite() {
        return None;
    }
    let demand = |tau: f64| -> f64 {
        live.iter()
            .map(|t| {
                let lo = t.min_share(tau);
                if lo > 1.0 {
                    f64::INFINITY
                } else {
                    t.gpus * lo
                }
            })
            .sum()
    };
    let fits = |tau: f64| demand(tau) <= total_gpus;
    if fits(floor) {
        return Some(floor);
    }
    let mut lo = floor;
    let mut hi = if floor > 0.0 { floor * 2.0 } else { 1.0 };
    while !fits(hi) {
        lo = hi;
        hi *= 2.0;
        if !hi.is_finite() {
            return Some(f64::MAX);
        }
    }
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Solves the per-event problem: τ* by bisection, then the allocation LP at τ*.
pub fn allocate(terms: &[FairnessTerm], total_gpus: f64, variant: ThemisVariant) -> Vec<f64> {
    let Some(tau) = min_max_ratio(terms, total_gpus) else {
        return vec![1.0; terms.len()];
    };
    let lower: Vec<f64> = terms
        .iter()
        .map(|t| {
            if t.is_degenerate() {
                0.0
            } else {
                t.min_share(tau).min(1.0)
            }
        })
        .collect();
    let used: f64 = terms.iter().zip(&lower).map(|(t, l)| t.gpus * l).sum();
    let spare_box: f64 = terms
        .iter()
        .zip(&lower)
        .map(|(t, l)| t.gpus * (1.0 - l))
        .sum();
    if variant == ThemisVariant::Fixed || used >= total_gpus || spare_box <= 0.0 {
        return lower;
    }
    spread_spare_capacity(terms, &lower, total_gpus).unwrap_or(lower)
}

/// The reference variant's allocation LP at τ* (good_lp + microlp).
///
/// Every free job keeps the same fraction s of its box above lo_i: x_i = lo_i + s·(1 − lo_i).
/// Substituting that into the capacity row Σ g_i x_i ≤ G leaves an LP in s alone:
/// maximise s subject to Σ g_i lo_i + s · Σ g_i (1 − lo_i) ≤ G and 0 ≤ s ≤ ½. Every such x
/// stays optimal for the min-max problem (ρ_i ≤ τ*), the ranking among free jobs keeps the
/// order of lo_i, and with ample capacity each share sits at the middle of its box: the
/// analytic centre an interior-point solver such as the reference's ECOS heads for.
/// (Keeping one variable per job gives the same optimum but costs O(n) rows per event.)
/// `None` when the solver fails (the caller then keeps x = lo).
fn spread_spare_capacity(
    terms: &[FairnessTerm],
    lower: &[f64],
    total_gpus: f64,
) -> Option<Vec<f64>> {
    let used: f64 = terms.iter().zip(lower).map(|(t, l)| t.gpus * l).sum();
    let spare_box: f64 = terms
        .iter()
        .zip(lower)
        .map(|(t, l)| t.gpus * (1.0 - l))
        .sum();
    let mut vars = ProblemVariables::new();
    let spread = vars.add(variable().min(0.0).max(MAX_SPREAD));
    let solution = vars
        .maximise(spread)
        .using(microlp)
        .with(constraint!(used + spare_box * spread <= total_gpus))
        .solve()
        .ok()?;
    let s = solution.value(spread).clamp(0.0, MAX_SPREAD);
    Some(lower.iter().map(|lo| lo + s * (1.0 - lo)).collect())
}

/// Largest fraction of its box a free job's share moves up (½: the box's middle).
const MAX_SPREAD: f64 = 0.5;

impl Policy for Themis {
    fn name(&self) -> &str {
        match self.variant {
            ThemisVariant::Reference => "themis",
            ThemisVariant::Fixed => "themis-fixed",
        }
    }

    fn on_arrival(&mut self, job: &mut Job) {
        let m = self.memory_mut(job.idx);
        m.deficit = 0.0;
        m.time_should_receive = 0.0;
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        let now = ctx.now;
        if !ctx.runnable.is_empty() {
            let total_gpus = ctx.cluster.num_gpus() as f64;
            let terms = self.build_terms(now, ctx.jobs, ctx.runnable, total_gpus);
            let shares = allocate(&terms, total_gpus, self.variant);
            self.rank(now, ctx.jobs, ctx.runnable, &shares);
            place_ranked(ctx);
        }
        self.last_event_time = now;
    }
}

/// The reference's two-step placement: a dry yarn pass in rank order picks the jobs that
/// fit; then, largest jobs first, those are placed for real (fragmentation can still make
/// one fail, which then does not run this interval).
fn place_ranked(ctx: &mut SchedulingContext<'_>) {
    let jobs = &mut *ctx.jobs;
    let mut chosen = vec![false; jobs.len()];
    for &j in ctx.runnable.iter() {
        chosen[j] = ctx.cluster.place_yarn(jobs[j].num_gpu()).is_some();
    }
    super::sort_by_gpus_descending(ctx.runnable, jobs);
    ctx.cluster.empty();
    for &j in ctx.runnable.iter() {
        if chosen[j] {
            jobs[j].placement = ctx.cluster.place_yarn(jobs[j].num_gpu());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(gpus: f64, elapsed: f64, work: f64, isolated: f64) -> FairnessTerm {
        FairnessTerm {
            gpus,
            elapsed,
            work,
            isolated,
        }
    }

    #[test]
    fn ratio_is_finish_time_over_isolated_time() {
        let t = term(2.0, 10.0, 30.0, 20.0);
        assert_eq!(t.ratio(1.0), 2.0);
        assert_eq!(t.ratio(0.5), 3.5);
    }

    #[test]
    fn bisection_fills_capacity_when_it_binds() {
        // Two 4-GPU jobs on 4 GPUs: both cannot have full shares.
        let terms = [term(4.0, 0.0, 10.0, 10.0), term(4.0, 0.0, 10.0, 10.0)];
        let tau = min_max_ratio(&terms, 4.0).unwrap();
        assert!((tau - 2.0).abs() < 1e-9, "{tau}");
        let x = allocate(&terms, 4.0, ThemisVariant::Fixed);
        assert!(
            (x[0] - 0.5).abs() < 1e-9 && (x[1] - 0.5).abs() < 1e-9,
            "{x:?}"
        );
    }

    #[test]
    fn spare_capacity_goes_to_the_middle_of_each_box() {
        // Ample capacity: τ* is set by the slower job at x = 1; the other is free in [0.5, 1].
        let terms = [term(1.0, 0.0, 10.0, 10.0), term(1.0, 0.0, 5.0, 10.0)];
        assert_eq!(min_max_ratio(&terms, 64.0), Some(1.0));
        let fixed = allocate(&terms, 64.0, ThemisVariant::Fixed);
        assert_eq!(fixed, vec![1.0, 0.5]);
        let reference = allocate(&terms, 64.0, ThemisVariant::Reference);
        assert!((reference[1] - 0.75).abs() < 1e-9, "{reference:?}");
    }
}
