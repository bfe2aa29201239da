//! A job's state while it is simulated (or run on the testbed).

use crate::cluster::Placement;
use crate::interleave::StageProfile;
use crate::models::restart_overhead;
use crate::trace::JobSpec;

/// The reference multiplies trace iteration times by this (its measured solo overhead).
pub const SOLO_ITERATION_OVERHEAD: f64 = 1.015;

/// Index of a job in the simulation's job table (its row in the trace after sorting).
pub type JobIdx = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Arrived, waiting for GPUs (or preempted).
    Pending,
    /// Holding GPUs and making progress.
    Running,
    /// Finished.
    Done,
}

/// Mutable per-job state that the engine and every policy share. Field names follow the
/// reference's `job.csv` where they appear there. What only one policy reads (sort keys,
/// Tiresias' queue, Themis' fairness memory) lives in that policy's own [`PerJob`] table.
///
/// [`PerJob`]: crate::policy::PerJob
#[derive(Debug, Clone)]
pub struct Job {
    pub idx: JobIdx,
    pub spec: JobSpec,
    /// Solo iteration time in seconds (trace ms × 1.015 / 1000).
    pub iteration_time: f64,
    /// Stage times in seconds (no ×1.015, as in the reference).
    pub stage_times: [f64; 3],
    /// Jobs with bit-identical stage and solo times share a profile id; the grouping caches
    /// pair weights per profile.
    pub profile_id: u32,
    pub status: Status,
    pub remaining_iteration: f64,
    /// First time the job was placed.
    pub start_time: Option<f64>,
    pub last_check_time: f64,
    /// Wall-clock seconds spent RUNNING, overheads included.
    pub total_executed_time: f64,
    pub pending_time: f64,
    pub preempt: u32,
    pub resume: u32,
    /// Iteration time of the job's current group (its solo time when alone).
    pub iteration_time_cur: f64,
    /// Progress lost per scheduling interval (restart overhead of its group).
    pub overhead: f64,
    /// Where the job runs now, if placed (shared by all members of a group).
    pub placement: Option<Placement>,
    /// Other members of the job's group, when it runs interleaved.
    pub group: Vec<JobIdx>,
    /// Completion time, once done.
    pub end_time: Option<f64>,
}

impl Job {
    pub fn new(idx: JobIdx, spec: JobSpec) -> Job {
        let iteration_time = spec.iteration_time_ms * SOLO_ITERATION_OVERHEAD / 1000.0;
        let stage_times = spec.resource_time_ms.map(|ms| ms / 1000.0);
        let overhead = restart_overhead(spec.num_gpu, &spec.model_name);
        Job {
            idx,
            remaining_iteration: spec.iterations as f64,
            iteration_time,
            stage_times,
            profile_id: 0,
            status: Status::Pending,
            start_time: None,
            last_check_time: spec.submit_time,
            total_executed_time: 0.0,
            pending_time: 0.0,
            preempt: 0,
            resume: 0,
            iteration_time_cur: iteration_time,
            overhead,
            placement: None,
            group: Vec::new(),
            end_time: None,
            spec,
        }
    }

    pub fn num_gpu(&self) -> u32 {
        self.spec.num_gpu
    }

    pub fn is_running(&self) -> bool {
        self.status == Status::Running
    }

    pub fn stage_profile(&self) -> StageProfile {
        StageProfile {
            stages: self.stage_times,
            solo_iteration_time: self.iteration_time,
        }
    }

    /// Seconds until the job finishes at its current speed (overheads ignored, as the
    /// reference's end-time prediction does).
    pub fn time_to_finish(&self) -> f64 {
        self.remaining_iteration * self.iteration_time_cur
    }
}

/// Builds the job table, giving jobs with identical stage profiles the same profile id.
pub fn build_jobs(specs: &[JobSpec]) -> Vec<Job> {
    let mut seen: Vec<([u64; 3], u64)> = Vec::new();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut job = Job::new(i, s.clone());
            let key = (
                job.stage_times.map(f64::to_bits),
                job.iteration_time.to_bits(),
            );
            job.profile_id = match seen.iter().position(|k| *k == key) {
                Some(p) => p as u32,
                None => {
                    seen.push(key);
                    (seen.len() - 1) as u32
                }
            };
            job
        })
        .collect()
}
