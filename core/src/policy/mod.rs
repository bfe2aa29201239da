//! Scheduling policies behind one trait.
//!
//! A policy is the "order → group → place" part of a scheduling pass (the Kubernetes
//! framework's queue-sort / filter / score / bind, minus dispatch). The event loop in
//! `muri::engine` (simulation) or the testbed scheduler owns the clock and the executor
//! and calls the policy at every event; the policy only reorders the runnable list and
//! decides who runs where.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::str::FromStr;

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

/// Every scheduling policy, by its reference (`--schedule`) name and its paper name.
///
/// The one place policy names live: the command line, sweep files, run directories and plot
/// legends all go through [`PolicyKind::parse`] and [`PolicyKind::name`] /
/// [`PolicyKind::paper_name`], so a name accepted in one place is accepted everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    Srtf,
    Srsf,
    Tiresias,
    MuriS,
    MuriL,
    MuriLWorstOrdering,
    MuriLNoBlossom,
    Fifo,
    Themis,
    ThemisFixed,
    AntMan,
    AntManFixed,
}

impl PolicyKind {
    /// Every policy, in the order `muri policies` lists them and `--schedule all` runs them.
    pub const ALL: [PolicyKind; 12] = [
        PolicyKind::Srtf,
        PolicyKind::Srsf,
        PolicyKind::Tiresias,
        PolicyKind::MuriS,
        PolicyKind::MuriL,
        PolicyKind::MuriLWorstOrdering,
        PolicyKind::MuriLNoBlossom,
        PolicyKind::Fifo,
        PolicyKind::Themis,
        PolicyKind::ThemisFixed,
        PolicyKind::AntMan,
        PolicyKind::AntManFixed,
    ];

    /// The policy every ratio is taken to unless the user names another: Muri-S, the paper's
    /// own policy with known durations.
    pub const DEFAULT_BASELINE: PolicyKind = PolicyKind::MuriS;

    /// The reference's `--schedule` name, also the run directory name.
    pub const fn name(self) -> &'static str {
        match self {
            PolicyKind::Srtf => "shortest",
            PolicyKind::Srsf => "shortest-gpu",
            PolicyKind::Tiresias => "dlas-gpu",
            PolicyKind::MuriS => "multi-resource-blossom-same-gpu",
            PolicyKind::MuriL => "multi-resource-blossom-same-gpu-unaware",
            PolicyKind::MuriLWorstOrdering => {
                "multi-resource-blossom-same-gpu-unaware-worstordering"
            }
            PolicyKind::MuriLNoBlossom => "multi-resource-gpu-unaware",
            PolicyKind::Fifo => "fifo",
            PolicyKind::Themis => "themis",
            PolicyKind::ThemisFixed => "themis-fixed",
            PolicyKind::AntMan => "antman",
            PolicyKind::AntManFixed => "antman-fixed",
        }
    }

    /// The short name the paper and every table use.
    pub const fn paper_name(self) -> &'static str {
        match self {
            PolicyKind::Srtf => "SRTF",
            PolicyKind::Srsf => "SRSF",
            PolicyKind::Tiresias => "Tiresias",
            PolicyKind::MuriS => "Muri-S",
            PolicyKind::MuriL => "Muri-L",
            PolicyKind::MuriLWorstOrdering => "Muri-L-worst",
            PolicyKind::MuriLNoBlossom => "Muri-L-noblossom",
            PolicyKind::Fifo => "FIFO",
            PolicyKind::Themis => "Themis",
            PolicyKind::ThemisFixed => "Themis-fixed",
            PolicyKind::AntMan => "AntMan",
            PolicyKind::AntManFixed => "AntMan-fixed",
        }
    }

    /// One line for `muri policies` and `--help`.
    pub const fn description(self) -> &'static str {
        match self {
            PolicyKind::Srtf => "SRTF: shortest remaining time first",
            PolicyKind::Srsf => "SRSF: shortest remaining GPU-time first",
            PolicyKind::Tiresias => "Tiresias: 2D least-attained-service with 3 queues",
            PolicyKind::MuriS => "Muri-S: SRSF order + blossom interleaving (durations known)",
            PolicyKind::MuriL => "Muri-L: least attained GPU service + blossom interleaving",
            PolicyKind::MuriLWorstOrdering => "Muri-L ablation: worst stage ordering",
            PolicyKind::MuriLNoBlossom => "Muri-L ablation: sequential grouping instead of blossom",
            PolicyKind::Fifo => "FIFO: arrival order, non-preemptive, no backfill",
            PolicyKind::Themis => "Themis: finish-time fairness (the reference's formulation)",
            PolicyKind::ThemisFixed => {
                "Themis, corrected: isolated throughput in iterations/s, deterministic optimum"
            }
            PolicyKind::AntMan => "AntMan: guaranteed + opportunistic GPU sharing, non-preemptive",
            PolicyKind::AntManFixed => {
                "AntMan, corrected: one partial reservation at a time, close end events merged"
            }
        }
    }

    /// Reads a reference name (`shortest`) or a paper name (`SRTF`), ignoring ASCII case.
    pub fn parse(text: &str) -> Result<PolicyKind, UnknownPolicy> {
        let text = text.trim();
        PolicyKind::ALL
            .into_iter()
            .find(|k| {
                k.name().eq_ignore_ascii_case(text) || k.paper_name().eq_ignore_ascii_case(text)
            })
            .ok_or_else(|| UnknownPolicy(text.to_string()))
    }

    /// Reads a comma-separated list of names, or `all` for every policy. Duplicates are
    /// dropped (the first mention keeps its place).
    pub fn parse_list(text: &str) -> Result<Vec<PolicyKind>, UnknownPolicy> {
        if text.trim().eq_ignore_ascii_case("all") {
            return Ok(PolicyKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = PolicyKind::parse(part)?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(UnknownPolicy(text.to_string()));
        }
        Ok(kinds)
    }

    /// The default baseline when it is among `kinds`, else Muri-L, else the first of `kinds`.
    pub fn baseline_among(kinds: &[PolicyKind]) -> Option<PolicyKind> {
        [PolicyKind::DEFAULT_BASELINE, PolicyKind::MuriL]
            .into_iter()
            .find(|k| kinds.contains(k))
            .or_else(|| kinds.first().copied())
    }

    /// A fresh policy object with these options.
    pub fn build(self, opts: PolicyOptions) -> Box<dyn Policy> {
        let muri = |variant| Box::new(muri::Muri::new(variant, opts)) as Box<dyn Policy>;
        match self {
            PolicyKind::Srtf => Box::new(srtf::ShortestFirst::new(false)),
            PolicyKind::Srsf => Box::new(srtf::ShortestFirst::new(true)),
            PolicyKind::Tiresias => Box::new(tiresias::Tiresias::new()),
            PolicyKind::Fifo => Box::new(fifo::Fifo),
            PolicyKind::Themis => Box::new(themis::Themis::new(ThemisVariant::Reference)),
            PolicyKind::ThemisFixed => Box::new(themis::Themis::new(ThemisVariant::Fixed)),
            PolicyKind::AntMan => Box::new(antman::AntMan::new()),
            PolicyKind::AntManFixed => Box::new(antman_fixed::AntManFixed::new()),
            PolicyKind::MuriS => muri(MuriVariant::MuriS),
            PolicyKind::MuriL => muri(MuriVariant::MuriL),
            PolicyKind::MuriLWorstOrdering => muri(MuriVariant::WorstOrdering),
            PolicyKind::MuriLNoBlossom => muri(MuriVariant::NoBlossom),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::parse(s)
    }
}

/// `--schedule` and `--policies` take paper or reference names, with help per policy.
#[cfg(feature = "clap")]
impl clap::ValueEnum for PolicyKind {
    fn value_variants<'a>() -> &'a [Self] {
        &PolicyKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(
            clap::builder::PossibleValue::new(self.name())
                .alias(self.paper_name())
                .help(self.description()),
        )
    }

    fn from_str(input: &str, _ignore_case: bool) -> Result<Self, String> {
        PolicyKind::parse(input).map_err(|e| e.to_string())
    }
}

/// The paper name of a reference policy name (`shortest` → `SRTF`); other text unchanged.
pub fn display_name(policy: &str) -> &str {
    match PolicyKind::parse(policy) {
        Ok(kind) => kind.paper_name(),
        Err(_) => policy,
    }
}

/// `--schedule` named a policy we do not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl UnknownPolicy {
    /// The known name closest to the unknown one, when one is close enough to be a typo.
    pub fn suggestion(&self) -> Option<&'static str> {
        let wanted = self.0.to_ascii_lowercase();
        PolicyKind::ALL
            .into_iter()
            .flat_map(|k| [k.name(), k.paper_name()])
            .map(|n| (strsim::jaro_winkler(&wanted, &n.to_ascii_lowercase()), n))
            .filter(|(score, _)| *score >= 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| n)
    }
}

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown policy `{}`", self.0)?;
        if let Some(s) = self.suggestion() {
            write!(f, "; did you mean `{s}`?")?;
        }
        let names: Vec<String> = PolicyKind::ALL
            .iter()
            .map(|k| format!("{} ({})", k.name(), k.paper_name()))
            .collect();
        write!(
            f,
            " Choose one or more of (case does not matter): {}, or `all`",
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}

/// Builds a policy from a reference or paper name.
pub fn build(name: &str, opts: PolicyOptions) -> Result<Box<dyn Policy>, UnknownPolicy> {
    Ok(PolicyKind::parse(name)?.build(opts))
}

/// A policy's own per-job state, indexed by [`JobIdx`] and grown on first write: state that
/// only one policy reads stays out of [`Job`]. A job never written reads as `T::default()`.
#[derive(Debug, Clone, Default)]
pub struct PerJob<T> {
    rows: Vec<T>,
    unset: T,
}

impl<T: Clone + Default> Index<JobIdx> for PerJob<T> {
    type Output = T;

    fn index(&self, j: JobIdx) -> &T {
        self.rows.get(j).unwrap_or(&self.unset)
    }
}

impl<T: Clone + Default> IndexMut<JobIdx> for PerJob<T> {
    fn index_mut(&mut self, j: JobIdx) -> &mut T {
        if self.rows.len() <= j {
            self.rows.resize(j + 1, T::default());
        }
        &mut self.rows[j]
    }
}

/// Python's stable `list.sort(key=...)` on f64 keys (no NaNs occur), in `total_cmp` order.
///
/// Runs every event over every runnable job (thousands on the `_pr` traces), so each key is
/// read once and the (stable, run-adaptive) sort compares compact `(key, job)` pairs. Keys
/// come from the policy's own [`PerJob`] table.
pub(crate) fn stable_sort_by_key(runnable: &mut [JobIdx], key: impl Fn(JobIdx) -> f64) {
    sort_by_int_key(runnable, |j| total_order(key(j)));
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
    use super::{total_order, PolicyKind};

    #[test]
    fn every_policy_parses_from_both_names_in_any_case() {
        for kind in PolicyKind::ALL {
            assert_eq!(PolicyKind::parse(kind.name()), Ok(kind));
            assert_eq!(
                PolicyKind::parse(&kind.paper_name().to_uppercase()),
                Ok(kind)
            );
            assert_eq!(
                PolicyKind::parse(&kind.paper_name().to_lowercase()),
                Ok(kind)
            );
        }
        assert_eq!(
            PolicyKind::parse_list(" SRTF, muri-s ,Tiresias,srtf"),
            Ok(vec![
                PolicyKind::Srtf,
                PolicyKind::MuriS,
                PolicyKind::Tiresias
            ])
        );
        assert_eq!(
            PolicyKind::parse_list("ALL").unwrap().len(),
            PolicyKind::ALL.len()
        );
    }

    #[test]
    fn no_name_means_two_policies() {
        let mut names: Vec<String> = PolicyKind::ALL
            .iter()
            .flat_map(|k| {
                let mut own = vec![
                    k.name().to_ascii_lowercase(),
                    k.paper_name().to_ascii_lowercase(),
                ];
                own.dedup();
                own
            })
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn typos_get_the_nearest_name_and_nonsense_gets_none() {
        let err = PolicyKind::parse("shortset").unwrap_err();
        assert_eq!(err.suggestion(), Some("shortest"));
        assert!(
            err.to_string().contains("did you mean `shortest`?"),
            "{err}"
        );
        assert_eq!(
            PolicyKind::parse("muri-ss").unwrap_err().suggestion(),
            Some("Muri-S")
        );
        assert_eq!(PolicyKind::parse("zzz").unwrap_err().suggestion(), None);
    }

    #[test]
    fn the_baseline_is_muri_s_then_muri_l_then_the_first() {
        use PolicyKind::*;
        assert_eq!(
            PolicyKind::baseline_among(&[Srtf, MuriL, MuriS]),
            Some(MuriS)
        );
        assert_eq!(PolicyKind::baseline_among(&[Srtf, MuriL]), Some(MuriL));
        assert_eq!(PolicyKind::baseline_among(&[Fifo, Srtf]), Some(Fifo));
        assert_eq!(PolicyKind::baseline_among(&[]), None);
    }

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
