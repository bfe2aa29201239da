//! AntMan (`antman`): opportunistic GPU sharing, non-preemptive, as the reference runs it.
//!
//! A port of the reference's `antman_sim_jobs` and its AntMan placement (`antman_alloc_res`
//! and the node bookkeeping under it), state for state, so that its results match to the
//! last digit. Jobs carry a trace priority: 0 = *guaranteed*, 1 = *opportunistic*.
//!
//! - Every GPU keeps a list of guaranteed and a list of opportunistic jobs, and a
//!   utilisation that is a running float sum, exactly as the reference accumulates it: a
//!   guaranteed job adds `0.1 − 0.01` per GPU when it takes the GPU and `0.01` per GPU of its
//!   gang once the gang is complete, an opportunistic job adds `0.9`, and a completion
//!   subtracts `0.1` or `0.9`. The sums are not exact (an emptied GPU may read 1e-17), and
//!   the opportunistic placement's stable sort by utilisation sees those residues, so they
//!   are kept.
//! - A guaranteed job of at most one node takes the first node with enough GPUs free of
//!   guaranteed jobs (and enough CPUs and memory); otherwise it *reserves* every free GPU of
//!   the node with the most and completes its gang on that node at later events. A larger
//!   job takes whole free nodes (as many as there are, up to its need) plus, for a remainder,
//!   one more node. It starts once `remaining_gpu` reaches 0. Every waiting guaranteed job
//!   may reserve, so two of them can wait for each other forever; the run then stops with
//!   jobs left, as the reference's does.
//! - An opportunistic job takes the `num_gpu` least-utilised GPUs below 0.8 (stable sort,
//!   lower index first on ties), all or nothing.
//! - Nothing is ever preempted or moved. A guaranteed job runs at its solo speed; an
//!   opportunistic job at the slowest of its neighbours' effects: the interleaving estimate
//!   against a complete guaranteed neighbour, 2× its solo time next to another opportunistic
//!   job.
//! - End events use [`EndEventRule::ReferenceAntMan`]: where the reference's merge of close
//!   end events raises IndexError, the simulation stops with an error naming the time and
//!   the jobs. `antman-fixed` is the corrected variant.
//!
//! The cluster is treated as one switch (the reference's per-switch AntMan placement only
//! makes sense with one, and every shipped cluster spec has one).

use super::{EndEventRule, Policy, SchedulingContext, TieRule};
use crate::cluster::{NodeShare, Placement};
use crate::job::{Job, JobIdx, Status};

/// Utilisation a guaranteed job stands for (`gpu_util`); it takes `0.01` less when it
/// takes a GPU and adds the `0.01` once its gang is complete.
pub const GUARANTEED_UTIL: f64 = 0.1;
/// Utilisation one opportunistic job adds to each of its GPUs.
pub const OPPORTUNISTIC_UTIL: f64 = 0.9;
/// Opportunistic jobs only go to GPUs below this utilisation.
pub const OPPORTUNISTIC_LIMIT: f64 = 0.8;
/// The share of `GUARANTEED_UTIL` added when the gang completes.
const GANG_COMPLETE_UTIL: f64 = 0.01;
/// Memory a single-node worker takes (`JOBS.worker_mem`).
const WORKER_MEM: f64 = 5.0;
/// Parameter-server memory and its per-worker increment (`JOBS.ps_mem`, `JOBS.p_w_mem`).
const PS_MEM: f64 = 6.0;
const PS_PER_WORKER_MEM: f64 = 0.1;

/// One GPU's occupants and its accumulated utilisation.
#[derive(Debug, Clone, Default)]
struct GpuState {
    guaranteed: Vec<JobIdx>,
    opportunistic: Vec<JobIdx>,
    util: f64,
}

#[derive(Debug, Clone)]
struct NodeState {
    free_cpus: i64,
    free_mem: f64,
}

/// What a job holds on one node (the reference's placement `node_dict`). `node` is `None`
/// for the placeholder the reference records when a multi-node job's remainder found no
/// node at all.
#[derive(Debug, Clone, Default)]
struct NodeHold {
    node: Option<usize>,
    gpus: Vec<usize>,
    cpus: i64,
    mem: f64,
}

/// A job's AntMan bookkeeping.
#[derive(Debug, Clone, Default)]
struct JobHold {
    remaining_gpu: u32,
    last_node: Option<usize>,
    nodes: Vec<NodeHold>,
}

/// The reference's AntMan.
#[derive(Debug, Default)]
pub struct AntMan {
    gpus_per_node: usize,
    cpus_per_node: i64,
    gpus: Vec<GpuState>,
    nodes: Vec<NodeState>,
    holds: Vec<JobHold>,
}

impl AntMan {
    pub fn new() -> Self {
        Self::default()
    }

    fn ensure_shape(&mut self, ctx: &SchedulingContext<'_>) {
        if self.nodes.is_empty() {
            let spec = ctx.cluster.spec();
            self.gpus_per_node = spec.num_gpu_p_node as usize;
            self.cpus_per_node = i64::from(spec.num_cpu_p_node);
            self.gpus = vec![GpuState::default(); spec.num_gpus() as usize];
            self.nodes = vec![
                NodeState {
                    free_cpus: self.cpus_per_node,
                    free_mem: f64::from(spec.mem_p_node),
                };
                spec.num_nodes() as usize
            ];
        }
        let known = self.holds.len();
        if known < ctx.jobs.len() {
            self.holds
                .extend(ctx.jobs[known..].iter().map(|job| JobHold {
                    remaining_gpu: job.num_gpu(),
                    ..JobHold::default()
                }));
        }
    }

    fn gpu(&mut self, node: usize, local: usize) -> &mut GpuState {
        &mut self.gpus[node * self.gpus_per_node + local]
    }

    /// Local indices of the node's GPUs without a guaranteed job (`get_free_gpus(0)`).
    fn free_for_guaranteed(&self, node: usize) -> Vec<usize> {
        let base = node * self.gpus_per_node;
        (0..self.gpus_per_node)
            .filter(|&g| self.gpus[base + g].guaranteed.is_empty())
            .collect()
    }

    /// `alloc_job_res` for a guaranteed job: GPUs, utilisation and CPUs (memory is booked by
    /// the callers, as in the reference).
    fn take_for_guaranteed(&mut self, j: JobIdx, node: usize, gpus: &[usize], cpus: i64) {
        for &g in gpus {
            let state = self.gpu(node, g);
            state.guaranteed.push(j);
            state.util += GUARANTEED_UTIL - GANG_COMPLETE_UTIL;
        }
        self.nodes[node].free_cpus -= cpus;
    }

    /// `add_job_gpu_util`: the gang is complete.
    fn complete_gang(&mut self, j: JobIdx) {
        let holds = std::mem::take(&mut self.holds[j].nodes);
        for hold in &holds {
            if let Some(node) = hold.node {
                for &g in &hold.gpus {
                    self.gpu(node, g).util += GANG_COMPLETE_UTIL;
                }
            }
        }
        self.holds[j].nodes = holds;
    }

    fn cpus_per_gpu(job: &Job) -> i64 {
        if job.num_gpu() == 1 {
            2
        } else {
            6
        }
    }

    /// A guaranteed job of at most one node (`try_single_node_alloc_antman`).
    fn place_guaranteed_in_node(&mut self, job: &Job) -> bool {
        let j = job.idx;
        let need = self.holds[j].remaining_gpu as usize;
        let need_cpu = need as i64 * Self::cpus_per_gpu(job);
        if need == job.num_gpu() as usize {
            let mut best: Option<(usize, Vec<usize>)> = None;
            for node in 0..self.nodes.len() {
                let free = self.free_for_guaranteed(node);
                let state = &self.nodes[node];
                if free.len() >= need && state.free_cpus >= need_cpu && state.free_mem >= WORKER_MEM
                {
                    let gpus = &free[..need];
                    self.take_for_guaranteed(j, node, gpus, need_cpu);
                    self.nodes[node].free_mem -= WORKER_MEM;
                    self.holds[j].nodes.push(NodeHold {
                        node: Some(node),
                        gpus: gpus.to_vec(),
                        cpus: need_cpu,
                        mem: WORKER_MEM,
                    });
                    self.holds[j].remaining_gpu -= need as u32;
                    self.holds[j].last_node = Some(node);
                    self.complete_gang(j);
                    return true;
                }
                if free.len() > best.as_ref().map_or(0, |(_, b)| b.len()) {
                    best = Some((node, free));
                }
            }
            // Not enough anywhere: reserve every free GPU of the node with the most.
            if let Some((node, gpus)) = best {
                let cpus = gpus.len() as i64 * Self::cpus_per_gpu(job);
                self.take_for_guaranteed(j, node, &gpus, cpus);
                self.nodes[node].free_mem -= WORKER_MEM;
                self.holds[j].remaining_gpu -= gpus.len() as u32;
                self.holds[j].last_node = Some(node);
                self.holds[j].nodes.push(NodeHold {
                    node: Some(node),
                    gpus,
                    cpus,
                    mem: WORKER_MEM,
                });
            }
            return false;
        }
        // Part of the gang is reserved: complete it on the same node.
        let Some(node) = self.holds[j].last_node else {
            return false;
        };
        let free = self.free_for_guaranteed(node);
        let state = &self.nodes[node];
        let enough =
            free.len() >= need && state.free_cpus >= need_cpu && state.free_mem >= WORKER_MEM;
        let (gpus, cpus): (Vec<usize>, i64) = if enough {
            (free[..need].to_vec(), need_cpu)
        } else {
            // The reference books 6 CPUs per GPU here whatever the job, and no memory
            // (though its placement records the worker's memory, returned at release).
            (free.clone(), free.len() as i64 * 6)
        };
        if gpus.is_empty() {
            return false;
        }
        self.take_for_guaranteed(j, node, &gpus, cpus);
        if enough {
            self.nodes[node].free_mem -= WORKER_MEM;
        }
        self.holds[j].remaining_gpu -= gpus.len() as u32;
        let first = &mut self.holds[j].nodes[0];
        first.gpus.extend(gpus);
        first.cpus += cpus;
        first.mem += WORKER_MEM;
        if enough {
            self.complete_gang(j);
        }
        enough
    }

    /// A guaranteed job larger than a node (`try_cross_node_alloc_antman`): whole free nodes
    /// plus one node for the remainder, reserving what there is.
    fn place_guaranteed_across_nodes(&mut self, job: &Job) -> bool {
        let j = job.idx;
        let per_node = self.gpus_per_node;
        let need = self.holds[j].remaining_gpu as usize;
        let num_full_nodes = need / per_node;
        let last_node_gpu = need % per_node;
        let first_remainder = job.num_gpu() as usize % per_node;
        let idle_node_cpu = per_node as i64 * 6;
        let ps_w_mem = PS_MEM + need as f64 * PS_PER_WORKER_MEM + WORKER_MEM;
        let mut full_nodes: Vec<usize> = Vec::new();
        if num_full_nodes > 0 {
            for node in 0..self.nodes.len() {
                let state = &self.nodes[node];
                if self.free_for_guaranteed(node).len() >= per_node
                    && state.free_cpus >= idle_node_cpu
                    && state.free_mem >= ps_w_mem * per_node as f64
                {
                    full_nodes.push(node);
                    if full_nodes.len() == num_full_nodes {
                        break;
                    }
                }
            }
        }
        let mut enough = full_nodes.len() == num_full_nodes;
        let mut last_node = None;
        if last_node_gpu != 0 {
            if last_node_gpu < first_remainder {
                last_node = self.holds[j].last_node;
            } else {
                let mut max_node: Option<(usize, usize)> = None;
                for node in (0..self.nodes.len()).filter(|n| !full_nodes.contains(n)) {
                    let free = self.free_for_guaranteed(node).len();
                    let state = &self.nodes[node];
                    if free >= last_node_gpu
                        && state.free_cpus >= last_node_gpu as i64 * 6
                        && state.free_mem >= ps_w_mem * last_node_gpu as f64
                    {
                        last_node = Some(node);
                        break;
                    }
                    if free > max_node.map_or(0, |(_, c)| c) {
                        max_node = Some((node, free));
                    }
                }
                if last_node.is_none() {
                    enough = false;
                    last_node = max_node.map(|(n, _)| n);
                }
            }
        }
        let mut new_holds: Vec<NodeHold> = Vec::new();
        if last_node_gpu != 0 {
            let first_time = last_node_gpu == first_remainder;
            match last_node {
                None if first_time => new_holds.push(NodeHold::default()),
                None => {}
                Some(node) => {
                    let mut gpus = self.free_for_guaranteed(node);
                    gpus.truncate(last_node_gpu);
                    let cpus = gpus.len() as i64 * 6;
                    let mem = ps_w_mem * gpus.len() as f64;
                    self.take_for_guaranteed(j, node, &gpus, cpus);
                    self.nodes[node].free_mem -= mem;
                    self.holds[j].remaining_gpu -= gpus.len() as u32;
                    if first_time {
                        self.holds[j].last_node = Some(node);
                    }
                    let add = NodeHold {
                        node: Some(node),
                        gpus,
                        cpus,
                        mem,
                    };
                    match self.holds[j].nodes.first_mut() {
                        Some(hold) => {
                            hold.node = Some(node);
                            hold.gpus.extend(add.gpus);
                            hold.cpus += add.cpus;
                            hold.mem += add.mem;
                        }
                        None => new_holds.push(add),
                    }
                }
            }
        }
        for &node in &full_nodes {
            let gpus: Vec<usize> = (0..per_node).collect();
            let mem = ps_w_mem * per_node as f64;
            self.take_for_guaranteed(j, node, &gpus, idle_node_cpu);
            self.nodes[node].free_mem -= mem;
            new_holds.push(NodeHold {
                node: Some(node),
                gpus,
                cpus: idle_node_cpu,
                mem,
            });
        }
        self.holds[j].remaining_gpu -= (full_nodes.len() * per_node) as u32;
        self.holds[j].nodes.extend(new_holds);
        if enough {
            self.complete_gang(j);
        }
        enough
    }

    /// The `num_gpu` least-utilised GPUs below the limit, or nothing.
    fn place_opportunistic(&mut self, job: &Job) -> bool {
        let mut candidates: Vec<usize> = (0..self.gpus.len())
            .filter(|&g| self.gpus[g].util < OPPORTUNISTIC_LIMIT)
            .collect();
        let need = job.num_gpu() as usize;
        if candidates.len() < need {
            return false;
        }
        // Python's stable sort compares with `<`: equal keys (0.0 and -0.0 too) keep their order.
        candidates.sort_by(|&a, &b| {
            self.gpus[a]
                .util
                .partial_cmp(&self.gpus[b].util)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        candidates.truncate(need);
        let mut holds: Vec<NodeHold> = Vec::new();
        for &g in &candidates {
            let state = &mut self.gpus[g];
            state.util += OPPORTUNISTIC_UTIL;
            state.opportunistic.push(job.idx);
            let (node, local) = (g / self.gpus_per_node, g % self.gpus_per_node);
            match holds.iter_mut().find(|h| h.node == Some(node)) {
                Some(h) => h.gpus.push(local),
                None => holds.push(NodeHold {
                    node: Some(node),
                    gpus: vec![local],
                    cpus: 0,
                    mem: WORKER_MEM,
                }),
            }
        }
        for hold in &holds {
            if let Some(node) = hold.node {
                self.nodes[node].free_mem -= WORKER_MEM;
            }
        }
        let state = &mut self.holds[job.idx];
        state.nodes.extend(holds);
        state.remaining_gpu = 0;
        true
    }

    /// Gives back everything a finished job holds (`release_job_res`).
    fn release(&mut self, job: &Job) {
        let j = job.idx;
        let guaranteed = job.spec.priority == 0;
        let util = if guaranteed {
            GUARANTEED_UTIL
        } else {
            OPPORTUNISTIC_UTIL
        };
        for hold in std::mem::take(&mut self.holds[j].nodes) {
            let Some(node) = hold.node else { continue };
            if guaranteed {
                let free = &mut self.nodes[node].free_cpus;
                *free = (*free + hold.cpus).min(self.cpus_per_node);
            }
            for &g in &hold.gpus {
                let state = self.gpu(node, g);
                let list = if guaranteed {
                    &mut state.guaranteed
                } else {
                    &mut state.opportunistic
                };
                if let Some(pos) = list.iter().position(|&o| o == j) {
                    list.remove(pos);
                    state.util -= util;
                }
            }
            self.nodes[node].free_mem += hold.mem;
        }
    }

    fn placement_of(&self, j: JobIdx) -> Placement {
        let mut shares: Vec<NodeShare> = Vec::new();
        for hold in &self.holds[j].nodes {
            let Some(node) = hold.node else { continue };
            let node = node as u32;
            let gpus = hold.gpus.len() as u32;
            match shares.iter_mut().find(|s| s.node == node) {
                Some(s) => s.gpus += gpus,
                None => shares.push(NodeShare { node, gpus }),
            }
        }
        Placement { shares }
    }

    /// Iteration time of a running job given its neighbours on its GPUs
    /// (`antman_find_collocate_job`, `antman_calc_iter_time`).
    fn iteration_time(&self, jobs: &[Job], j: JobIdx) -> f64 {
        let job = &jobs[j];
        if job.spec.priority == 0 {
            return job.iteration_time;
        }
        let mut neighbours: Vec<JobIdx> = Vec::new();
        for hold in &self.holds[j].nodes {
            let Some(node) = hold.node else { continue };
            for &g in &hold.gpus {
                let state = &self.gpus[node * self.gpus_per_node + g];
                neighbours.extend(state.guaranteed.iter().copied());
                neighbours.extend(state.opportunistic.iter().copied().filter(|&o| o != j));
            }
        }
        neighbours.sort_unstable();
        neighbours.dedup();
        let mut time = job.iteration_time;
        for n in neighbours {
            let other = &jobs[n];
            if other.spec.priority == 0 {
                if self.holds[n].remaining_gpu > 0 {
                    continue; // a reservation, not running yet
                }
                time = time.max(interleaved_iteration_time(job, other));
            } else {
                time = time.max(job.iteration_time * 2.0);
            }
        }
        time
    }
}

/// The reference's estimate of an opportunistic job's iteration time next to a guaranteed
/// job: how many of the neighbour's iterations the job's three stages span when they slot
/// into the neighbour's idle stages.
pub fn interleaved_iteration_time(job: &Job, neighbour: &Job) -> f64 {
    let [t0, mut t1, mut t2] = job.stage_times;
    let [c0, c1, c2] = neighbour.stage_times;
    if c1 + c2 <= 0.0 || c0 + c2 <= 0.0 || c0 + c1 <= 0.0 {
        return job.iteration_time * 2.0;
    }
    let mut iters = (t0 / (c1 + c2)).floor();
    let data_extra = t0 % (c1 + c2);
    if data_extra > 0.0 {
        iters += 1.0;
        t1 -= t1.min(c2).min(c1 + c2 - data_extra);
    }
    iters += (t1 / (c0 + c2)).floor();
    let gpu_extra = t1 % (c0 + c2);
    if gpu_extra > 0.0 {
        iters += 1.0;
        if gpu_extra < c0 {
            t2 -= t2.min(c0 + c1 - gpu_extra);
        }
    }
    iters += (t2 / (c0 + c1)).floor();
    if t2 % (c0 + c1) > c0 {
        iters += 1.0;
    }
    job.iteration_time.max(iters * neighbour.iteration_time)
}

impl Policy for AntMan {
    fn name(&self) -> &str {
        "antman"
    }

    /// The reference tests `end < start`, then `end > start`, and only then closeness, so
    /// only equal times merge.
    fn tie_rule(&self) -> TieRule {
        TieRule::Exact
    }

    fn end_event_rule(&self) -> EndEventRule {
        EndEventRule::ReferenceAntMan
    }

    fn on_completion(&mut self, job: &Job) {
        if job.idx < self.holds.len() {
            self.release(job);
        }
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        self.ensure_shape(ctx);
        let jobs = &mut *ctx.jobs;
        ctx.runnable.sort_by(|&a, &b| {
            let (x, y) = (&jobs[a].spec, &jobs[b].spec);
            x.priority
                .cmp(&y.priority)
                .then(x.submit_time.total_cmp(&y.submit_time))
                .then(a.cmp(&b))
        });
        let mut running: Vec<JobIdx> = Vec::new();
        for &j in ctx.runnable.iter() {
            let job = &jobs[j];
            let placed = match job.status {
                Status::Running => true,
                Status::Done => false,
                Status::Pending if job.spec.priority != 0 => self.place_opportunistic(job),
                Status::Pending if job.num_gpu() as usize > self.gpus_per_node => {
                    self.place_guaranteed_across_nodes(job)
                }
                Status::Pending => self.place_guaranteed_in_node(job),
            };
            if placed {
                running.push(j);
            }
        }
        for &j in &running {
            jobs[j].placement = Some(self.placement_of(j));
        }
        for &j in &running {
            jobs[j].iteration_time_cur = self.iteration_time(jobs, j);
        }
    }
}
