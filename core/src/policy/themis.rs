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
//! ρ_i is convex and decreasing in x_i but not linear (1/x_i), so the min-max problem is
//! not an LP in x. When the capacity constraint binds at the optimum the shares are unique;
//! otherwise jobs that do not set the maximum may take any x in a box — the non-uniqueness
//! the spec warns about — and the reference ranks jobs by where its solver (cvxpy → ECOS,
//! an interior-point method) stops on that face.
//! - `themis` solves the reference's own program (the max of the ratios as an epigraph,
//!   1/x as cvxpy's second-order cone) with Clarabel, also an interior-point method, which
//!   stops near the same point (docs/evaluation.md: within 3.4 % of the reference on the
//!   all-at-once trace3_pr, where a simplex vertex or a post-processed spread was +110 %).
//! - `themis-fixed` solves it exactly by **bisection on the max ratio τ**: for a candidate
//!   τ each job needs x_i ≥ lo_i(τ) = W_i / (τ·D_i − (t − submit_i)); τ is feasible iff
//!   every lo_i ≤ 1 and Σ g_i lo_i(τ) ≤ G. Feasibility is monotone in τ, so bisection finds
//!   the minimal τ*, and x = lo(τ*) is the deterministic optimum. The same minimal shares
//!   are `themis`' fallback when the solver does not converge.

use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
};

use super::{Policy, SchedulingContext};
use crate::job::{Job, JobIdx};

/// Which Themis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThemisVariant {
    /// The reference's behaviour, kept for comparability with the paper: the "isolated
    /// throughput" is the allocation fraction a_i = min(1, ⌈G/n⌉/g_i) (iterations divided by
    /// a fraction: dimensionally inconsistent), and a non-unique optimum is resolved by an
    /// interior-point solver, as the reference's ECOS resolves it.
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
    /// This event's rank key: the share over the time executed so far.
    sort_val: f64,
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
    /// R_i: iterations left (the reference's `remaining_iteration`).
    pub remaining_iterations: f64,
    /// Iterations per second at a full share, 1/it_i (the reference's `tput`).
    pub throughput: f64,
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
                    remaining_iterations: remaining,
                    throughput: 1.0 / job.iteration_time,
                }
            })
            .collect()
    }

    /// Ranks the runnable list: descending (sort_val, deficit, allocation), stable.
    fn rank(&mut self, now: f64, jobs: &[Job], runnable: &mut [JobIdx], shares: &[f64]) {
        let interval = now - self.last_event_time;
        for (&j, &x) in runnable.iter().zip(shares) {
            let executed = jobs[j].total_executed_time;
            let m = self.memory_mut(j);
            m.sort_val = if executed == 0.0 {
                x * 1e9
            } else {
                x / executed
            };
            m.allocation = x;
            m.deficit = m.time_should_receive - executed;
            m.time_should_receive += x * interval;
        }
        let memory = &self.memory;
        let key = |j: JobIdx| (memory[j].sort_val, memory[j].deficit, memory[j].allocation);
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

/// Solves the per-event problem.
///
/// `themis-fixed`: τ* by bisection and the minimal shares meeting it (deterministic).
/// `themis`: the reference's epigraph program solved by an interior-point method
/// ([`solve_epigraph_program`]), so that a non-unique optimum is resolved the way the
/// reference's ECOS resolves it; the bisection's minimal shares are the fallback when the
/// solver does not converge.
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
    if variant == ThemisVariant::Fixed {
        return lower;
    }
    solve_epigraph_program(terms, total_gpus).unwrap_or(lower)
}

/// The reference's per-event program, formulated as cvxpy hands it to ECOS, solved with
/// Clarabel (an interior-point conic solver with ECOS's default tolerances, 1e-8).
///
/// ```text
/// minimise τ  over x ∈ ℝⁿ, u ∈ ℝⁿ, τ
///   (elapsed_i + R_i·u_i) / D_i ≤ τ      (the max of the ratios, as an epigraph)
///   u_i ≥ 1/(tput_i·x_i)                  (cvxpy's inv_pos: (v+u, v−u, 2) ∈ SOC₃, v = tput_i·x_i)
///   0 ≤ x_i ≤ 1,  Σ g_i x_i ≤ G
/// ```
///
/// Why an interior point: when capacity does not bind at τ* the optimum is a whole face,
/// and the reference ranks jobs by where ECOS stops on it. A simplex returns a vertex and
/// post-processing the minimal shares (an even spread, an analytic centre) ranks jobs
/// differently (docs/evaluation.md); an interior-point method on the same program stops
/// near the same point. Degenerate jobs (no finite ratio) only take part in the capacity
/// row. `None` when the solver reports neither solved nor almost solved.
fn solve_epigraph_program(terms: &[FairnessTerm], total_gpus: f64) -> Option<Vec<f64>> {
    let program = EpigraphProgram::build(terms, total_gpus);
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .build()
        .ok()?;
    let p = CscMatrix::<f64>::zeros((program.num_vars, program.num_vars));
    let a = CscMatrix::new_from_triplets(
        program.rhs.len(),
        program.num_vars,
        program.rows,
        program.cols,
        program.values,
    );
    let mut solver = DefaultSolver::new(
        &p,
        &program.cost,
        &a,
        &program.rhs,
        &program.cones,
        settings,
    )
    .ok()?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Some(
            solver.solution.x[..terms.len()]
                .iter()
                .map(|x| x.clamp(0.0, 1.0))
                .collect(),
        ),
        status => {
            tracing::warn!(
                ?status,
                jobs = terms.len(),
                "themis: solver did not converge; minimal shares used"
            );
            None
        }
    }
}

/// Clarabel's standard form `A·z + s = b, s ∈ K, minimise cᵀz` of the epigraph program;
/// variables z = (x₀..xₙ₋₁, u₀..uₙ₋₁, τ).
struct EpigraphProgram {
    num_vars: usize,
    cost: Vec<f64>,
    rows: Vec<usize>,
    cols: Vec<usize>,
    values: Vec<f64>,
    rhs: Vec<f64>,
    cones: Vec<SupportedConeT<f64>>,
}

impl EpigraphProgram {
    fn build(terms: &[FairnessTerm], total_gpus: f64) -> Self {
        let n = terms.len();
        let (x, u, tau) = (|i: usize| i, |i: usize| n + i, 2 * n);
        let mut program = EpigraphProgram {
            num_vars: 2 * n + 1,
            cost: vec![0.0; 2 * n + 1],
            rows: Vec::new(),
            cols: Vec::new(),
            values: Vec::new(),
            rhs: Vec::new(),
            cones: Vec::new(),
        };
        program.cost[tau] = 1.0;
        let live: Vec<usize> = (0..n).filter(|&i| !terms[i].is_degenerate()).collect();
        // Nonnegative rows: the ratios, the box and the capacity.
        for &i in &live {
            let t = &terms[i];
            let row = program.row(-t.elapsed / t.isolated);
            program.entry(row, u(i), t.remaining_iterations / t.isolated);
            program.entry(row, tau, -1.0);
        }
        for i in 0..n {
            let row = program.row(0.0);
            program.entry(row, x(i), -1.0);
            let row = program.row(1.0);
            program.entry(row, x(i), 1.0);
        }
        let row = program.row(total_gpus);
        for (i, t) in terms.iter().enumerate() {
            program.entry(row, x(i), t.gpus);
        }
        program
            .cones
            .push(SupportedConeT::NonnegativeConeT(program.rhs.len()));
        // inv_pos: (v + u, v − u, 2) ∈ SOC₃ ⇔ u·v ≥ 1, u, v ≥ 0.
        for &i in &live {
            let tput = terms[i].throughput;
            let row = program.row(0.0);
            program.entry(row, x(i), -tput);
            program.entry(row, u(i), -1.0);
            let row = program.row(0.0);
            program.entry(row, x(i), -tput);
            program.entry(row, u(i), 1.0);
            program.row(2.0);
            program.cones.push(SupportedConeT::SecondOrderConeT(3));
        }
        // Degenerate jobs' u has no row; pin it to 0 so that the program stays bounded.
        for i in (0..n).filter(|&i| terms[i].is_degenerate()) {
            let row = program.row(0.0);
            program.entry(row, u(i), 1.0);
            program.cones.push(SupportedConeT::ZeroConeT(1));
        }
        program
    }

    /// Appends a row with right-hand side `b`; returns its index.
    fn row(&mut self, b: f64) -> usize {
        self.rhs.push(b);
        self.rhs.len() - 1
    }

    fn entry(&mut self, row: usize, col: usize, value: f64) {
        self.rows.push(row);
        self.cols.push(col);
        self.values.push(value);
    }
}

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

    /// A term with a 1 s iteration, so work = remaining iterations.
    fn term(gpus: f64, elapsed: f64, work: f64, isolated: f64) -> FairnessTerm {
        FairnessTerm {
            gpus,
            elapsed,
            work,
            isolated,
            remaining_iterations: work,
            throughput: 1.0,
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
    fn interior_point_stays_inside_the_optimal_face() {
        // Ample capacity: τ* = 1 is set by the slower job at x = 1; the other job is free in
        // [0.5, 1]. The minimal shares take the face's corner; the interior-point solve a
        // point strictly inside it (ECOS, on the reference's program: 0.83).
        let terms = [term(1.0, 0.0, 10.0, 10.0), term(1.0, 0.0, 5.0, 10.0)];
        assert_eq!(min_max_ratio(&terms, 64.0), Some(1.0));
        let fixed = allocate(&terms, 64.0, ThemisVariant::Fixed);
        assert_eq!(fixed, vec![1.0, 0.5]);
        let reference = allocate(&terms, 64.0, ThemisVariant::Reference);
        assert!((reference[0] - 1.0).abs() < 1e-6, "{reference:?}");
        assert!(
            reference[1] > 0.6 && reference[1] < 0.95,
            "not inside the face: {reference:?}"
        );
        let worst = terms
            .iter()
            .zip(&reference)
            .map(|(t, &x)| t.ratio(x))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((worst - 1.0).abs() < 1e-6, "not optimal: max ratio {worst}");
    }

    #[test]
    fn interior_point_matches_bisection_when_capacity_binds() {
        // Unique optimum (capacity binds): both solutions are the same shares.
        let terms = [
            term(4.0, 0.0, 10.0, 10.0),
            term(2.0, 5.0, 30.0, 12.0),
            term(8.0, 0.0, 20.0, 25.0),
        ];
        let fixed = allocate(&terms, 4.0, ThemisVariant::Fixed);
        let reference = allocate(&terms, 4.0, ThemisVariant::Reference);
        let used: f64 = terms.iter().zip(&fixed).map(|(t, x)| t.gpus * x).sum();
        assert!((used - 4.0).abs() < 1e-9, "capacity must bind: {used}");
        for (f, r) in fixed.iter().zip(&reference) {
            assert!((f - r).abs() < 1e-5, "{fixed:?} vs {reference:?}");
        }
    }
}
