//! Muri: order jobs (by remaining or attained GPU service), choose candidates that could run,
//! group same-size candidates into interleaved groups of up to `packing_num` jobs by repeated
//! maximum-weight matching, drop groups that run slower than their members back to back,
//! and place the groups with yarn.
//!
//! Every step mirrors the reference's `multi_resource_blossom_same_sim_jobs`, including the
//! orders that break ties, because the paper's numbers depend on them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{
    sort_by_gpus_descending, stable_sort_by_key, PerJob, Policy, PolicyOptions, SchedulingContext,
    TieRule,
};
use crate::cluster::Placement;
use crate::float::isclose_rel;
use crate::interleave::{InterleaveModel, SlowdownFactors, StageOrdering, StageProfile};
use crate::job::{Job, JobIdx};
use crate::matching::{BlossomMatcher, RecordedSolve, WeightMatrix};
use crate::models::restart_overhead;
use std::io::Write as _;

/// The Muri family members the paper evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuriVariant {
    /// Muri-S: durations known, shortest remaining GPU service first.
    MuriS,
    /// Muri-L: durations unknown, least attained GPU service first.
    MuriL,
    /// Muri-L with the worst stage ordering (ablation).
    WorstOrdering,
    /// Muri-L grouping candidates sequentially instead of by matching (ablation).
    NoBlossom,
}

/// Settings derived from the variant.
#[derive(Debug, Clone, Copy)]
pub struct MuriOptions {
    pub know_duration: bool,
    pub ordering: StageOrdering,
    pub blossom: bool,
}

impl MuriVariant {
    pub fn options(self) -> MuriOptions {
        let (know_duration, ordering, blossom) = match self {
            MuriVariant::MuriS => (true, StageOrdering::Best, true),
            MuriVariant::MuriL => (false, StageOrdering::Best, true),
            MuriVariant::WorstOrdering => (false, StageOrdering::Worst, true),
            MuriVariant::NoBlossom => (false, StageOrdering::Best, false),
        };
        MuriOptions {
            know_duration,
            ordering,
            blossom,
        }
    }
}

/// The Fx hash (as in rustc): the caches below are keyed by packed profile ids and only
/// looked up, never iterated, so the hash function cannot change a result; SipHash over a
/// 256-entry key per matching was a measurable share of a Muri run.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Bound on remembered matchings (each holds one mate vector).
const MATCH_CACHE_LIMIT: usize = 4096;

/// Appends one profile id to a packed group key (see [`Muri::key`]).
fn push_key(key: u128, profile_id: u32) -> u128 {
    debug_assert!(profile_id < 1 << 31, "profile ids are job indices");
    (key << 31) | u128::from(profile_id)
}

/// Most jobs one group can hold (`--packing_num` is at most 4).
const MAX_GROUP: usize = 4;

/// Jobs that run together, in the order they were merged. A small inline array: the pass
/// builds thousands of groups per event on large clusters, so no heap allocation per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    members: [JobIdx; MAX_GROUP],
    len: usize,
}

impl Group {
    fn single(job: JobIdx) -> Group {
        Group {
            members: [job; MAX_GROUP],
            len: 1,
        }
    }

    fn push(&mut self, job: JobIdx) {
        assert!(self.len < MAX_GROUP, "groups hold at most {MAX_GROUP} jobs");
        self.members[self.len] = job;
        self.len += 1;
    }

    fn extend(&mut self, other: &Group) {
        for &j in other.iter() {
            self.push(j);
        }
    }
}

impl std::ops::Deref for Group {
    type Target = [JobIdx];

    fn deref(&self) -> &[JobIdx] {
        &self.members[..self.len]
    }
}

/// Appends every exact matching instance to a file, one [`RecordedSolve`] line per solve,
/// which `MATCH_REPLAY=FILE cargo bench -p muri --bench matching` replays. Set
/// `MURI_RECORD_MATCHINGS=FILE` to turn it on: it lets anyone rerun (and profile) the
/// solver on the very instances a trace produces.
#[derive(Debug)]
struct MatchingRecorder {
    path: String,
    out: std::io::BufWriter<std::fs::File>,
}

impl MatchingRecorder {
    const ENV: &'static str = "MURI_RECORD_MATCHINGS";

    fn from_env() -> Option<Self> {
        let path = std::env::var(Self::ENV).ok()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match file {
            Ok(f) => Some(Self {
                path,
                out: std::io::BufWriter::new(f),
            }),
            Err(e) => {
                tracing::warn!("{}={path}: cannot open ({e}); not recording", Self::ENV);
                None
            }
        }
    }

    fn record(
        &mut self,
        c: usize,
        weights: &[Option<f64>],
        class_of: &[u32],
        mates: &[Option<usize>],
    ) -> std::io::Result<()> {
        let line = RecordedSolve::format(c, weights, class_of, mates);
        writeln!(self.out, "{line}")
    }
}

/// Groups per GPU size, sizes in first-appearance order (the reference's dict order).
type GroupsBySize = Vec<(u32, Vec<Group>)>;

pub struct Muri {
    variant: MuriVariant,
    opts: PolicyOptions,
    muri: MuriOptions,
    model: InterleaveModel,
    matcher: BlossomMatcher,
    /// Used ratio of a concatenated group, keyed by its members' profile ids in order.
    ratio_cache: FxMap<u128, f64>,
    /// Group iteration time by (ordering, profile ids in order).
    time_cache: FxMap<(bool, u128), f64>,
    /// Matchings already computed, keyed by the groups' profile sequences: the weight
    /// matrix is a function of that key, so equal keys give equal matchings.
    match_cache: FxMap<Vec<u128>, Vec<Option<usize>>>,
    /// Scratch weight matrix of [`Muri::match_block`], reused between solves.
    weights: WeightMatrix,
    /// Where every exact matching is recorded for `MATCH_REPLAY` (see
    /// [`MatchingRecorder`]), when `MURI_RECORD_MATCHINGS` names a file.
    recorder: Option<MatchingRecorder>,
    /// Scratch: job marked as a candidate in this pass.
    candidate: Vec<bool>,
    /// Scratch: index of each job's group in the final placement step.
    group_of: Vec<usize>,
    /// Each job's ranking state.
    rank: PerJob<RankState>,
}

/// What Muri ranks a job by.
#[derive(Debug, Clone, Copy, Default)]
struct RankState {
    /// Remaining GPU-time (Muri-S's key; the trace's duration until the job first runs).
    remaining_gputime: f64,
    /// Attained GPU-time (Muri-L's key).
    executed_gputime: f64,
    /// This pass's key: one of the two above.
    sort_val: f64,
}

impl Muri {
    pub fn new(variant: MuriVariant, opts: PolicyOptions) -> Self {
        let factors = if variant == MuriVariant::NoBlossom {
            SlowdownFactors::NO_BLOSSOM
        } else {
            SlowdownFactors::REFERENCE
        };
        Muri {
            variant,
            opts,
            muri: variant.options(),
            model: InterleaveModel {
                stages: opts.multi_resource,
                factors,
            },
            matcher: BlossomMatcher::new(),
            ratio_cache: FxMap::default(),
            time_cache: FxMap::default(),
            match_cache: FxMap::default(),
            weights: WeightMatrix::default(),
            recorder: MatchingRecorder::from_env(),
            candidate: Vec::new(),
            group_of: Vec::new(),
            rank: PerJob::default(),
        }
    }

    fn profiles(jobs: &[Job], members: &[JobIdx]) -> Vec<StageProfile> {
        members.iter().map(|&j| jobs[j].stage_profile()).collect()
    }

    /// Packs the members' profile ids, in order, into one integer: a leading 1 (so that
    /// lengths differ) then 31 bits per member; at most four members fit (1 + 4 × 31 bits).
    fn key(jobs: &[Job], members: &[JobIdx]) -> u128 {
        members
            .iter()
            .fold(1u128, |k, &j| push_key(k, jobs[j].profile_id))
    }

    /// Iteration time of a group under `ordering` (cached per profile sequence).
    fn group_time(&mut self, jobs: &[Job], members: &[JobIdx], ordering: StageOrdering) -> f64 {
        let key = (ordering == StageOrdering::Best, Self::key(jobs, members));
        if let Some(&t) = self.time_cache.get(&key) {
            return t;
        }
        let t = self
            .model
            .group_iteration_time(&Self::profiles(jobs, members), ordering);
        self.time_cache.insert(key, t);
        t
    }

    /// Edge weight of merging two groups: the used ratio of their concatenation.
    fn pair_ratio(&mut self, jobs: &[Job], a: &[JobIdx], b: &[JobIdx]) -> f64 {
        let key = b
            .iter()
            .fold(Self::key(jobs, a), |k, &j| push_key(k, jobs[j].profile_id));
        if let Some(&r) = self.ratio_cache.get(&key) {
            return r;
        }
        let mut members: Vec<JobIdx> = a.to_vec();
        members.extend_from_slice(b);
        let r = self
            .model
            .used_ratio(&Self::profiles(jobs, &members), self.muri.ordering);
        self.ratio_cache.insert(key, r);
        r
    }

    /// Step 2: walk the sorted list doing dry placements; each success opens a slot for the
    /// next `packing_num` jobs of that size. Returns candidates per size and the GPUs they need.
    fn choose_candidates(&mut self, ctx: &mut SchedulingContext<'_>) -> (GroupsBySize, u32) {
        let jobs = &*ctx.jobs;
        // Sizes in order of first appearance, each list allocated once at its final length
        // (this runs every event, over every runnable job). The third field first counts
        // the size's jobs, then, reset to 0, how many of them the walk below has chosen.
        let mut by_size: Vec<(u32, Vec<JobIdx>, usize)> = Vec::new();
        for &j in ctx.runnable.iter() {
            let g = jobs[j].num_gpu();
            match by_size.iter_mut().find(|(s, _, _)| *s == g) {
                Some((_, _, count)) => *count += 1,
                None => by_size.push((g, Vec::new(), 1)),
            }
        }
        for (_, list, count) in &mut by_size {
            list.reserve_exact(*count);
            *count = 0;
        }
        for &j in ctx.runnable.iter() {
            let g = jobs[j].num_gpu();
            if let Some((_, list, _)) = by_size.iter_mut().find(|(s, _, _)| *s == g) {
                list.push(j);
            }
        }
        if self.candidate.len() < jobs.len() {
            self.candidate.resize(jobs.len(), false);
        }
        for &j in ctx.runnable.iter() {
            self.candidate[j] = false;
        }
        ctx.cluster.empty();
        // Resources only shrink during the walk, so a size that failed once fails again:
        // skipping it (and stopping once every size failed) changes nothing but the cost.
        let mut failed: Vec<u32> = Vec::new();
        for &j in ctx.runnable.iter() {
            if self.candidate[j] {
                continue;
            }
            let g = jobs[j].num_gpu();
            if failed.contains(&g) {
                continue;
            }
            if ctx.cluster.place_yarn(g).is_none() {
                failed.push(g);
                if failed.len() == by_size.len() {
                    break;
                }
                continue;
            }
            let (_, list, chosen) = by_size
                .iter_mut()
                .find(|(s, _, _)| *s == g)
                .expect("every size was listed");
            let upto = (*chosen + self.opts.packing_num).min(list.len());
            for &c in &list[*chosen..upto] {
                self.candidate[c] = true;
            }
            *chosen = upto;
        }
        let mut required = 0;
        let groups = by_size
            .into_iter()
            .map(|(size, list, chosen)| {
                required += size * chosen as u32;
                (
                    size,
                    list[..chosen].iter().map(|&j| Group::single(j)).collect(),
                )
            })
            .collect();
        (groups, required)
    }

    /// Step 3 (blossom): up to `packing_num` rounds of matching; pairs merge only while the
    /// candidates need more GPUs than the cluster has.
    fn group_by_matching(
        &mut self,
        jobs: &[Job],
        mut groups: GroupsBySize,
        mut required: u32,
        cluster_gpus: u32,
    ) -> GroupsBySize {
        for _ in 0..self.opts.packing_num {
            groups = self.matching_round(jobs, groups, &mut required, cluster_gpus);
            if required <= cluster_gpus {
                break;
            }
        }
        groups
    }

    fn matching_round(
        &mut self,
        jobs: &[Job],
        groups: GroupsBySize,
        required: &mut u32,
        cluster_gpus: u32,
    ) -> GroupsBySize {
        if *required <= cluster_gpus && self.matching_cannot_matter(&groups) {
            return groups;
        }
        // `ready`: per size, vertex order; a matched pair at its larger vertex.
        let vertices = groups.iter().map(|(_, nodes)| nodes.len()).sum();
        let mut ready: Vec<(usize, usize, Option<usize>)> = Vec::with_capacity(vertices);
        for (size_pos, (_, nodes)) in groups.iter().enumerate() {
            let mates = self.match_groups(jobs, nodes);
            for (u, mate) in mates.iter().enumerate() {
                match *mate {
                    Some(v) if v < u => ready.push((size_pos, v, Some(u))),
                    Some(_) => {}
                    None => ready.push((size_pos, u, None)),
                }
            }
        }
        let mut slots: Vec<Vec<Option<Group>>> = groups
            .iter()
            .map(|(_, nodes)| nodes.iter().copied().map(Some).collect())
            .collect();
        let mut out: GroupsBySize = Vec::new();
        for (size_pos, a, b) in ready {
            let size = groups[size_pos].0;
            let pos = match out.iter().position(|(s, _)| *s == size) {
                Some(p) => p,
                None => {
                    out.push((size, Vec::with_capacity(groups[size_pos].1.len())));
                    out.len() - 1
                }
            };
            let mut first = slots[size_pos][a].take().expect("each vertex emitted once");
            match b {
                Some(b) if *required > cluster_gpus => {
                    let second = slots[size_pos][b].take().expect("each vertex emitted once");
                    first.extend(&second);
                    *required -= size;
                    out[pos].1.push(first);
                }
                Some(b) => {
                    let second = slots[size_pos][b].take().expect("each vertex emitted once");
                    out[pos].1.push(first);
                    out[pos].1.push(second);
                }
                None => out[pos].1.push(first),
            }
        }
        out
    }

    /// Whether a round without contention can skip the matching without changing anything.
    ///
    /// With enough GPUs no pair merges, so the round only permutes each size's singletons
    /// (a matched pair moves next to its partner). Later steps use that order only to break
    /// ties: without autopack only group membership matters; with autopack the entries are
    /// stably sorted by `sort_val` and same-size entries keep their relative order only when
    /// their keys tie. So when no two candidates of one size share a `sort_val`, the
    /// permutation cannot change the outcome and the O(n³) matching is pure cost.
    fn matching_cannot_matter(&self, groups: &GroupsBySize) -> bool {
        if !self.opts.autopack {
            return true;
        }
        groups.iter().all(|(_, list)| {
            let mut keys: Vec<f64> = list
                .iter()
                .flat_map(|g| g.iter().map(|&j| self.rank[j].sort_val))
                .collect();
            keys.sort_by(f64::total_cmp);
            keys.windows(2).all(|w| w[0] != w[1])
        })
    }

    /// Maximum-weight matching over the groups of one size; edge weight = used ratio of the
    /// merged group, for pairs small enough to merge and above the λ threshold.
    fn match_groups(&mut self, jobs: &[Job], nodes: &[Group]) -> Vec<Option<usize>> {
        let key: Vec<u128> = nodes.iter().map(|g| Self::key(jobs, g)).collect();
        if let Some(m) = self.match_cache.get(&key) {
            return m.clone();
        }
        let mates = self.compute_matching(jobs, nodes);
        if self.match_cache.len() >= MATCH_CACHE_LIMIT {
            self.match_cache.clear();
        }
        self.match_cache.insert(key, mates.clone());
        mates
    }

    /// Exact blossom matching up to `match_block` groups (always the case on the paper's
    /// 64-GPU cluster: at most 4 × 64 candidates). Beyond that, O(n³) per event is too slow
    /// for 1,000-GPU clusters, so a greedy matching over profile classes is used instead.
    fn compute_matching(&mut self, jobs: &[Job], nodes: &[Group]) -> Vec<Option<usize>> {
        if nodes.len() <= self.opts.match_block.max(2) {
            self.match_block(jobs, nodes)
        } else {
            self.match_greedy_by_class(jobs, nodes)
        }
    }

    /// Greedy matching for large candidate lists. Groups with the same profile key have the
    /// same weights, so the graph collapses to a few classes: repeatedly take the heaviest
    /// class pair that still has free members and pair them off in priority order.
    /// A greedy matching weighs at least half the optimum; with a handful of classes it is
    /// usually optimal or close.
    fn match_greedy_by_class(&mut self, jobs: &[Job], nodes: &[Group]) -> Vec<Option<usize>> {
        let mut classes: Vec<(u128, Vec<usize>)> = Vec::new();
        for (v, g) in nodes.iter().enumerate() {
            let key = Self::key(jobs, g);
            match classes.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(v),
                None => classes.push((key, vec![v])),
            }
        }
        let c = classes.len();
        let mut weight = vec![None; c * c];
        for a in 0..c {
            for b in a..c {
                let (ra, rb) = (classes[a].1[0], classes[b].1[0]);
                weight[a * c + b] = self.edge_weight(jobs, &nodes[ra], &nodes[rb]);
            }
        }
        let mut next = vec![0usize; c];
        let mut mates = vec![None; nodes.len()];
        loop {
            let free = |k: usize, next: &[usize]| classes[k].1.len() - next[k];
            let best = (0..c)
                .flat_map(|a| (a..c).map(move |b| (a, b)))
                .filter(|&(a, b)| {
                    if a == b {
                        free(a, &next) >= 2
                    } else {
                        free(a, &next) >= 1 && free(b, &next) >= 1
                    }
                })
                .filter_map(|(a, b)| weight[a * c + b].map(|w| (w, a, b)))
                .fold(None, |best: Option<(f64, usize, usize)>, x| match best {
                    Some(b) if b.0 >= x.0 => Some(b),
                    _ => Some(x),
                });
            let Some((_, a, b)) = best else { break };
            let pairs = if a == b {
                free(a, &next) / 2
            } else {
                free(a, &next).min(free(b, &next))
            };
            for _ in 0..pairs {
                let u = classes[a].1[next[a]];
                next[a] += 1;
                let v = classes[b].1[next[b]];
                next[b] += 1;
                mates[u] = Some(v);
                mates[v] = Some(u);
            }
        }
        mates
    }

    /// The edge weight between two groups, or `None` when they may not merge (too many jobs,
    /// or a used ratio not above the λ threshold).
    fn edge_weight(&mut self, jobs: &[Job], a: &[JobIdx], b: &[JobIdx]) -> Option<f64> {
        let job_sum = a.len() + b.len();
        if job_sum > self.opts.packing_num {
            return None;
        }
        let weight = self.pair_ratio(jobs, a, b);
        let threshold = self.opts.weight_lbd * (job_sum as f64 / self.opts.multi_resource as f64);
        (weight > threshold && !isclose_rel(weight, threshold, 1e-5)).then_some(weight)
    }

    fn match_block(&mut self, jobs: &[Job], nodes: &[Group]) -> Vec<Option<usize>> {
        let n = nodes.len();
        // Weights depend only on the groups' profile keys, and a graph has few distinct keys:
        // compute each class pair once, then fill the matrix by lookup.
        let mut class_keys: Vec<u128> = Vec::new();
        let mut class_rep: Vec<usize> = Vec::new();
        let class_of: Vec<u32> = nodes
            .iter()
            .enumerate()
            .map(|(v, g)| {
                let key = Self::key(jobs, g);
                match class_keys.iter().position(|&k| k == key) {
                    Some(c) => c as u32,
                    None => {
                        class_keys.push(key);
                        class_rep.push(v);
                        (class_keys.len() - 1) as u32
                    }
                }
            })
            .collect();
        let c = class_keys.len();
        let mut class_weight = vec![None; c * c];
        for a in 0..c {
            for b in 0..c {
                let (ra, rb) = (class_rep[a], class_rep[b]);
                class_weight[a * c + b] = self.edge_weight(jobs, &nodes[ra], &nodes[rb]);
            }
        }
        let any_edge = class_weight.iter().any(Option::is_some);
        let mut w = std::mem::take(&mut self.weights);
        w.fill_from_classes(&class_of, |a, b| class_weight[a as usize * c + b as usize]);
        let mates = if any_edge {
            self.matcher.solve(&w)
        } else {
            vec![None; n]
        };
        self.weights = w;
        if let (Some(rec), true) = (&mut self.recorder, any_edge) {
            if let Err(e) = rec.record(c, &class_weight, &class_of, &mates) {
                tracing::warn!("{}: {e}; no longer recording matchings", rec.path);
                self.recorder = None;
            }
        }
        mates
    }

    /// Step 3 (no blossom): consecutive candidates of a slot form its group while GPUs are short.
    fn group_sequentially(
        &self,
        candidates: GroupsBySize,
        mut required: u32,
        cluster_gpus: u32,
    ) -> GroupsBySize {
        let p = self.opts.packing_num;
        candidates
            .into_iter()
            .map(|(size, singles)| {
                let list: Vec<JobIdx> = singles.into_iter().map(|g| g[0]).collect();
                let mut out = Vec::new();
                for slot_start in (0..list.len()).step_by(p) {
                    let mut group = Group::single(list[slot_start]);
                    for &j in list.iter().skip(slot_start + 1).take(p - 1) {
                        if required > cluster_gpus {
                            group.push(j);
                            required -= size;
                        } else {
                            out.push(Group::single(j));
                        }
                    }
                    out.push(group);
                }
                (size, out)
            })
            .collect()
    }

    /// Step 4: split groups slower than their members run back to back, then keep the
    /// entries (by sort key) whose first member still fits.
    fn autopack(&mut self, ctx: &mut SchedulingContext<'_>, groups: GroupsBySize) -> GroupsBySize {
        let jobs = &*ctx.jobs;
        let groups_in = groups.iter().map(|(_, list)| list.len()).sum::<usize>();
        let mut entries: Vec<(u32, Group, f64)> = Vec::with_capacity(groups_in * MAX_GROUP);
        for (size, list) in groups {
            for group in list {
                let together = self.group_time(jobs, &group, StageOrdering::Best);
                let mut apart = 0.0;
                for &j in group.iter() {
                    apart += jobs[j].iteration_time;
                }
                if together / apart > 1.0 {
                    entries.extend(
                        group
                            .iter()
                            .map(|&j| (size, Group::single(j), self.rank[j].sort_val)),
                    );
                } else {
                    let key = group
                        .iter()
                        .map(|&j| self.rank[j].sort_val)
                        .fold(f64::INFINITY, |m, v| if v < m { v } else { m });
                    entries.push((size, group, key));
                }
            }
        }
        entries.sort_by(|a, b| a.2.total_cmp(&b.2));
        ctx.cluster.empty();
        let mut kept: GroupsBySize = Vec::new();
        for (size, group, _) in entries {
            if ctx.cluster.place_yarn(jobs[group[0]].num_gpu()).is_none() {
                continue;
            }
            match kept.iter_mut().find(|(s, _)| *s == size) {
                Some((_, list)) => list.push(group),
                None => kept.push((size, vec![group])),
            }
        }
        kept
    }

    /// Step 5: place groups, largest jobs first; members share the first member's GPUs.
    fn place(&mut self, ctx: &mut SchedulingContext<'_>, groups: GroupsBySize) {
        let all: Vec<Group> = groups.into_iter().flat_map(|(_, l)| l).collect();
        // Each job is in at most one group; index it by job for the scan below.
        if self.group_of.len() < ctx.jobs.len() {
            self.group_of.resize(ctx.jobs.len(), usize::MAX);
        }
        for &j in ctx.runnable.iter() {
            self.group_of[j] = usize::MAX;
        }
        for (gi, g) in all.iter().enumerate() {
            for &j in g.iter() {
                if self.group_of[j] == usize::MAX {
                    self.group_of[j] = gi;
                }
            }
        }
        ctx.cluster.empty();
        sort_by_gpus_descending(ctx.runnable, ctx.jobs);
        // The first member to be placed places the group; the others share its GPUs.
        let mut shared: Vec<Option<Placement>> = vec![None; all.len()];
        for pos in 0..ctx.runnable.len() {
            let j = ctx.runnable[pos];
            let gi = self.group_of[j];
            if gi == usize::MAX {
                continue;
            }
            let members = all[gi];
            let it = self.group_time(ctx.jobs, &members, self.muri.ordering);
            let num_gpu = ctx.jobs[j].num_gpu();
            let overhead: f64 = members
                .iter()
                .map(|&m| restart_overhead(num_gpu, &ctx.jobs[m].spec.model_name))
                .sum();
            let placement = match &shared[gi] {
                Some(p) => Some(p.clone()),
                None => {
                    let p = ctx.cluster.place_yarn(num_gpu);
                    shared[gi].clone_from(&p);
                    p
                }
            };
            let job = &mut ctx.jobs[j];
            job.iteration_time_cur = it;
            job.overhead = overhead;
            job.group.clear();
            job.group
                .extend(members.iter().copied().filter(|&m| m != j));
            job.placement = placement;
        }
    }
}

impl Policy for Muri {
    fn name(&self) -> &str {
        match self.variant {
            MuriVariant::MuriS => "multi-resource-blossom-same-gpu",
            MuriVariant::MuriL => "multi-resource-blossom-same-gpu-unaware",
            MuriVariant::WorstOrdering => "multi-resource-blossom-same-gpu-unaware-worstordering",
            MuriVariant::NoBlossom => "multi-resource-gpu-unaware",
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::Close
    }

    fn on_arrival(&mut self, job: &mut Job) {
        let r = &mut self.rank[job.idx];
        r.remaining_gputime = job.spec.duration * job.num_gpu() as f64;
        r.executed_gputime = 0.0;
    }

    fn on_progress(&mut self, job: &mut Job, _start: f64, _now: f64) {
        let r = &mut self.rank[job.idx];
        let remaining_time = job.remaining_iteration * job.iteration_time;
        r.remaining_gputime = remaining_time * job.num_gpu() as f64;
        if !self.muri.know_duration {
            r.executed_gputime = job.total_executed_time * job.num_gpu() as f64;
        }
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        for &j in ctx.runnable.iter() {
            let r = &mut self.rank[j];
            r.sort_val = if self.muri.know_duration {
                r.remaining_gputime
            } else {
                r.executed_gputime
            };
        }
        let rank = &self.rank;
        stable_sort_by_key(ctx.runnable, |j| rank[j].sort_val);
        let (candidates, required) = self.choose_candidates(ctx);
        let cluster_gpus = ctx.cluster.num_gpus();
        let groups = if self.muri.blossom {
            self.group_by_matching(ctx.jobs, candidates, required, cluster_gpus)
        } else {
            self.group_sequentially(candidates, required, cluster_gpus)
        };
        let groups = if self.opts.autopack {
            self.autopack(ctx, groups)
        } else {
            groups
        };
        self.place(ctx, groups);
    }
}
