//! SRTF (`shortest`) and SRSF (`shortest-gpu`): preemptive shortest-remaining-first with
//! backfilling, placed by yarn.

use super::{stable_sort_by_key, PerJob, Policy, SchedulingContext};
use crate::job::Job;

pub struct ShortestFirst {
    /// Rank by remaining GPU-time (SRSF) instead of remaining time (SRTF).
    gpu_time: bool,
    /// Each job's sort key: remaining time (SRTF) or remaining GPU-time (SRSF), refreshed on
    /// arrival and after progress.
    remaining: PerJob<f64>,
}

impl ShortestFirst {
    pub fn new(gpu_time: bool) -> Self {
        ShortestFirst {
            gpu_time,
            remaining: PerJob::default(),
        }
    }

    fn update(&mut self, job: &Job) {
        let remaining_time = job.remaining_iteration * job.iteration_time;
        self.remaining[job.idx] = if self.gpu_time {
            remaining_time * job.num_gpu() as f64
        } else {
            remaining_time
        };
    }
}

impl Policy for ShortestFirst {
    fn name(&self) -> &str {
        if self.gpu_time {
            "shortest-gpu"
        } else {
            "shortest"
        }
    }

    fn on_arrival(&mut self, job: &mut Job) {
        self.update(job);
    }

    fn on_progress(&mut self, job: &mut Job, _start: f64, _now: f64) {
        self.update(job);
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        let jobs = &mut *ctx.jobs;
        let remaining = &self.remaining;
        stable_sort_by_key(ctx.runnable, |j| remaining[j]);
        // A job that does not fit is skipped, so smaller jobs further down backfill. Free
        // resources only shrink, so a size that failed once is not tried again.
        let mut failed: Vec<u32> = Vec::new();
        for &j in ctx.runnable.iter() {
            let g = jobs[j].num_gpu();
            if failed.contains(&g) {
                continue;
            }
            jobs[j].placement = ctx.cluster.place_yarn(g);
            if jobs[j].placement.is_none() {
                failed.push(g);
            }
        }
    }
}
