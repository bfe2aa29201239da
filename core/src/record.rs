//! What a run produced: the rows of `job.csv` and `cluster.csv`, and the whole result.
//!
//! Both drivers fill these (the simulator in `muri::engine`, the testbed scheduler), and
//! [`crate::output`] and [`crate::metrics`] read them.

use crate::job::Job;
use crate::round::DecisionLog;

/// A row of `job.csv`, written when a job completes.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: u64,
    pub num_gpu: u32,
    pub submit_time: f64,
    pub start_time: f64,
    pub end_time: f64,
    /// `end − first start`.
    pub executed_time: f64,
    /// Seconds actually spent RUNNING, overheads included.
    pub real_executed_time: f64,
    pub jct: f64,
    /// Trace duration in seconds.
    pub duration: f64,
    pub pending_time: f64,
    /// Times the job was preempted. (The reference writes an always-zero counter here.)
    pub preempt: u32,
    pub promote: u32,
}

/// A row of `cluster.csv`, written after every scheduling pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterRecord {
    pub time: f64,
    pub idle_gpu: u32,
    pub busy_gpu: u32,
    pub pending_job: usize,
    pub running_job: usize,
    pub completed_job: usize,
}

/// Everything one simulation produced.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub policy: String,
    /// In completion order.
    pub jobs: Vec<JobRecord>,
    pub cluster: Vec<ClusterRecord>,
    pub events: usize,
    /// Jobs that never ran because the loop found no further event (cluster too small).
    pub unfinished: usize,
    pub wall_seconds: f64,
    /// The decision log, when `Simulation::with_decisions` (the simulator) asked for one.
    pub decisions: Option<DecisionLog>,
}

impl JobRecord {
    /// The `job.csv` row of a job that finished at `now`.
    pub fn finished(job: &Job, now: f64) -> JobRecord {
        let start = job.start_time.unwrap_or(now);
        JobRecord {
            job_id: job.spec.job_id,
            num_gpu: job.num_gpu(),
            submit_time: job.spec.submit_time,
            start_time: start,
            end_time: now,
            executed_time: now - start,
            real_executed_time: job.total_executed_time,
            jct: now - job.spec.submit_time,
            duration: job.spec.duration,
            pending_time: job.pending_time,
            preempt: job.preempt,
            promote: 0,
        }
    }
}
