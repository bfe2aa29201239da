//! AntMan, corrected (`antman-fixed`): the reference's AntMan (see [`super::antman`]) with
//! two deliberate changes that make it finish wherever the reference can stall or raise.
//!
//! The GPU-level state is the reference's, with utilisation computed (0.1 per guaranteed,
//! 0.9 per opportunistic job) instead of accumulated as floats:
//!
//! - every GPU holds at most one guaranteed job and any number of opportunistic ones;
//! - a guaranteed job takes GPUs without a guaranteed job: the first node with enough such
//!   GPUs, or whole such nodes for jobs larger than a node. If none fits it may *partially
//!   reserve* GPUs and starts once its gang is complete;
//! - an opportunistic job takes the `num_gpu` least-utilised GPUs below 0.8, all or nothing;
//! - nothing is ever preempted or moved: a running job keeps its GPUs until it ends;
//! - a guaranteed job runs at its solo speed; an opportunistic job runs at the slowest of
//!   its neighbours' effects (as in the reference).
//!
//! The changes:
//! - **One partial reservation at a time.** The reference lets every waiting guaranteed job
//!   reserve part of its gang; two such jobs can hold halves of the same GPUs and wait for
//!   each other forever (nothing running, nothing arriving: the run stops with jobs left).
//!   Here only the first waiting guaranteed job in priority order may hold a partial
//!   reservation, so it waits only on running jobs, which always end.
//! - End events within 1e-4 s of the earliest are all merged (the reference's loop deletes
//!   list items while indexing them and raises IndexError), and a start event merges with an
//!   end event within 1e-4 s.

use super::antman::{
    interleaved_iteration_time, GUARANTEED_UTIL, OPPORTUNISTIC_LIMIT, OPPORTUNISTIC_UTIL,
};
use super::{EndEventRule, Policy, SchedulingContext, TieRule};
use crate::cluster::{NodeShare, Placement};
use crate::job::{Job, JobIdx, Status};

/// One GPU's occupants.
#[derive(Debug, Clone, Default)]
pub struct GpuSlot {
    pub guaranteed: Option<JobIdx>,
    pub opportunistic: Vec<JobIdx>,
}

impl GpuSlot {
    pub fn utilisation(&self) -> f64 {
        let g = if self.guaranteed.is_some() {
            GUARANTEED_UTIL
        } else {
            0.0
        };
        g + OPPORTUNISTIC_UTIL * self.opportunistic.len() as f64
    }
}

/// What the invariant checks saw (tests read it through [`AntManFixed::with_audit`]).
#[derive(Debug, Default, Clone)]
pub struct AntManAudit {
    pub passes: usize,
    pub opportunistic_placements: usize,
    pub violations: Vec<String>,
}

pub type SharedAudit = std::sync::Arc<std::sync::Mutex<AntManAudit>>;

pub struct AntManFixed {
    gpus_per_node: usize,
    gpus: Vec<GpuSlot>,
    /// GPUs each job holds (complete gang, partial reservation or opportunistic share).
    held: Vec<Vec<usize>>,
    /// The guaranteed job currently allowed to hold a partial reservation.
    reserver: Option<JobIdx>,
    audit: Option<SharedAudit>,
    /// Placements of running jobs at the end of the last pass (audit only).
    last_running: Vec<(JobIdx, Vec<usize>)>,
}

impl Default for AntManFixed {
    fn default() -> Self {
        Self::new()
    }
}

impl AntManFixed {
    pub fn new() -> Self {
        AntManFixed {
            gpus_per_node: 0,
            gpus: Vec::new(),
            held: Vec::new(),
            reserver: None,
            audit: None,
            last_running: Vec::new(),
        }
    }

    /// An AntMan that checks its invariants after every pass and records what it saw.
    pub fn with_audit() -> (Self, SharedAudit) {
        let audit = SharedAudit::default();
        let mut a = AntManFixed::new();
        a.audit = Some(audit.clone());
        (a, audit)
    }

    fn ensure_shape(&mut self, ctx: &SchedulingContext<'_>) {
        if self.gpus.is_empty() {
            let spec = ctx.cluster.spec();
            self.gpus_per_node = spec.num_gpu_p_node as usize;
            self.gpus = vec![GpuSlot::default(); spec.num_gpus() as usize];
        }
        if self.held.len() < ctx.jobs.len() {
            self.held.resize(ctx.jobs.len(), Vec::new());
        }
    }

    fn release(&mut self, j: JobIdx) {
        for g in std::mem::take(&mut self.held[j]) {
            let slot = &mut self.gpus[g];
            if slot.guaranteed == Some(j) {
                slot.guaranteed = None;
            }
            slot.opportunistic.retain(|&o| o != j);
        }
        if self.reserver == Some(j) {
            self.reserver = None;
        }
    }

    fn free_for_guaranteed(&self, node: usize) -> Vec<usize> {
        let base = node * self.gpus_per_node;
        (base..base + self.gpus_per_node)
            .filter(|&g| self.gpus[g].guaranteed.is_none())
            .collect()
    }

    fn num_nodes(&self) -> usize {
        self.gpus.len() / self.gpus_per_node.max(1)
    }

    /// Tries to complete a guaranteed job's gang; returns whether it is complete.
    fn place_guaranteed(&mut self, job: &Job) -> bool {
        let j = job.idx;
        let need = job.num_gpu() as usize - self.held[j].len();
        let may_reserve = self.reserver.is_none() || self.reserver == Some(j);
        let picked = if job.num_gpu() as usize > self.gpus_per_node {
            self.pick_whole_nodes(need, may_reserve)
        } else {
            self.pick_in_node(j, need, may_reserve)
        };
        for &g in &picked {
            self.gpus[g].guaranteed = Some(j);
        }
        self.held[j].extend(picked);
        let complete = self.held[j].len() == job.num_gpu() as usize;
        if complete {
            if self.reserver == Some(j) {
                self.reserver = None;
            }
        } else if !self.held[j].is_empty() {
            self.reserver = Some(j);
        }
        complete
    }

    /// Whole nodes free of guaranteed jobs, first ones in index order; all of `need` or, if
    /// reserving is allowed, as many whole nodes as there are.
    fn pick_whole_nodes(&self, need: usize, may_reserve: bool) -> Vec<usize> {
        let mut picked = Vec::new();
        for node in 0..self.num_nodes() {
            if picked.len() >= need {
                break;
            }
            let free = self.free_for_guaranteed(node);
            if free.len() == self.gpus_per_node && picked.len() + free.len() <= need {
                picked.extend(free);
            }
        }
        if picked.len() < need && !may_reserve {
            picked.clear();
        }
        picked
    }

    /// GPUs of one node: the node already reserved, else the first node with enough free
    /// GPUs, else (reserving) the node with the most free GPUs.
    fn pick_in_node(&self, j: JobIdx, need: usize, may_reserve: bool) -> Vec<usize> {
        if let Some(&first) = self.held[j].first() {
            let mut free = self.free_for_guaranteed(first / self.gpus_per_node);
            free.truncate(need);
            return free;
        }
        let mut best: Vec<usize> = Vec::new();
        for node in 0..self.num_nodes() {
            let mut free = self.free_for_guaranteed(node);
            if free.len() >= need {
                free.truncate(need);
                return free;
            }
            if free.len() > best.len() {
                best = free;
            }
        }
        if may_reserve {
            best
        } else {
            Vec::new()
        }
    }

    /// The `num_gpu` least-utilised GPUs below the limit (stable: lower index first), or
    /// nothing.
    fn place_opportunistic(&mut self, job: &Job) -> bool {
        let mut candidates: Vec<usize> = (0..self.gpus.len())
            .filter(|&g| self.gpus[g].utilisation() < OPPORTUNISTIC_LIMIT)
            .collect();
        let need = job.num_gpu() as usize;
        if candidates.len() < need {
            return false;
        }
        candidates.sort_by(|&a, &b| {
            self.gpus[a]
                .utilisation()
                .total_cmp(&self.gpus[b].utilisation())
        });
        candidates.truncate(need);
        if let Some(audit) = &self.audit {
            let mut a = audit.lock().expect("audit lock");
            a.opportunistic_placements += 1;
            for &g in &candidates {
                let u = self.gpus[g].utilisation();
                if u >= OPPORTUNISTIC_LIMIT {
                    a.violations.push(format!(
                        "job {} placed on GPU {g} at utilisation {u}",
                        job.idx
                    ));
                }
            }
        }
        for &g in &candidates {
            self.gpus[g].opportunistic.push(job.idx);
        }
        self.held[job.idx] = candidates;
        true
    }

    fn placement_of(&self, j: JobIdx) -> Placement {
        let mut shares: Vec<NodeShare> = Vec::new();
        for &g in &self.held[j] {
            let node = (g / self.gpus_per_node) as u32;
            match shares.iter_mut().find(|s| s.node == node) {
                Some(s) => s.gpus += 1,
                None => shares.push(NodeShare { node, gpus: 1 }),
            }
        }
        Placement { shares }
    }

    /// Iteration time of a running job given its neighbours on its GPUs.
    fn iteration_time(&self, jobs: &[Job], j: JobIdx) -> f64 {
        let job = &jobs[j];
        if job.spec.priority == 0 {
            return job.iteration_time;
        }
        let mut neighbours: Vec<JobIdx> = Vec::new();
        for &g in &self.held[j] {
            let slot = &self.gpus[g];
            neighbours.extend(slot.guaranteed);
            neighbours.extend(slot.opportunistic.iter().copied().filter(|&o| o != j));
        }
        neighbours.sort_unstable();
        neighbours.dedup();
        let mut time = job.iteration_time;
        for n in neighbours {
            let other = &jobs[n];
            if other.spec.priority == 0 {
                if self.held[n].len() < other.num_gpu() as usize {
                    continue; // partial reservation: not running yet
                }
                time = time.max(interleaved_iteration_time(job, other));
            } else {
                time = time.max(job.iteration_time * 2.0);
            }
        }
        time
    }

    fn audit_pass(&mut self, jobs: &[Job], runnable: &[JobIdx]) {
        let Some(audit) = self.audit.clone() else {
            return;
        };
        let mut a = audit.lock().expect("audit lock");
        a.passes += 1;
        for (j, gpus) in &self.last_running {
            if jobs[*j].status == Status::Running && &self.held[*j] != gpus {
                a.violations.push(format!(
                    "running job {j} moved from {gpus:?} to {:?}",
                    self.held[*j]
                ));
            }
        }
        for (g, slot) in self.gpus.iter().enumerate() {
            let guaranteed_here = self.held.iter().enumerate().filter(|(j, h)| {
                jobs.get(*j).is_some_and(|job| job.spec.priority == 0) && h.contains(&g)
            });
            if guaranteed_here.count() > 1 {
                a.violations
                    .push(format!("GPU {g} holds more than one guaranteed job"));
            }
            let util = slot.utilisation();
            if slot.opportunistic.len() > 1 && util >= 2.0 * OPPORTUNISTIC_UTIL + GUARANTEED_UTIL {
                a.violations
                    .push(format!("GPU {g} oversubscribed (utilisation {util})"));
            }
        }
        self.last_running = runnable
            .iter()
            .filter(|&&j| jobs[j].placement.is_some())
            .map(|&j| (j, self.held[j].clone()))
            .collect();
    }
}

impl Policy for AntManFixed {
    fn name(&self) -> &str {
        "antman-fixed"
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::Close
    }

    fn end_event_rule(&self) -> EndEventRule {
        EndEventRule::MergedWithin1e4
    }

    fn on_completion(&mut self, job: &Job) {
        if job.idx < self.held.len() {
            self.release(job.idx);
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
            let placed = match jobs[j].status {
                Status::Running => true,
                Status::Done => false,
                Status::Pending if jobs[j].spec.priority == 0 => self.place_guaranteed(&jobs[j]),
                Status::Pending => self.place_opportunistic(&jobs[j]),
            };
            if placed {
                running.push(j);
            }
        }
        for &j in &running {
            let p = self.placement_of(j);
            jobs[j].placement = Some(p);
        }
        for &j in &running {
            jobs[j].iteration_time_cur = self.iteration_time(jobs, j);
        }
        self.audit_pass(jobs, ctx.runnable);
    }
}
