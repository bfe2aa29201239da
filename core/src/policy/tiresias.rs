//! Tiresias (`dlas-gpu`): discretised two-dimensional least-attained-service.
//!
//! Three FIFO queues with GPU-second thresholds 3250 and 7200; a running job is demoted one
//! level per event once its attained GPU time passes its queue's limit; the pass counts GPUs
//! only (no fragmentation) and keeps running jobs in front of pending ones in every queue.
//! Starvation handling is off, as in the paper's runs.

use super::{EndEventRule, PerJob, Policy, SchedulingContext};
use crate::cluster::Placement;
use crate::job::{Job, JobIdx};

const QUEUE_LIMITS: [f64; 3] = [3250.0, 7200.0, 18000.0];
const NUM_QUEUES: usize = 3;

pub struct Tiresias {
    queues: [Vec<JobIdx>; NUM_QUEUES],
    attained: PerJob<Attained>,
}

/// What Tiresias knows of a job.
#[derive(Debug, Clone, Copy, Default)]
struct Attained {
    /// Attained service: seconds the job has run (times its GPUs gives GPU-seconds).
    executed_time: f64,
    /// Index of the queue the job is in.
    queue: usize,
}

impl Tiresias {
    pub fn new() -> Self {
        Tiresias {
            queues: Default::default(),
            attained: PerJob::default(),
        }
    }
}

impl Policy for Tiresias {
    fn name(&self) -> &str {
        "dlas-gpu"
    }

    fn end_event_rule(&self) -> EndEventRule {
        EndEventRule::EarliestOnly
    }

    fn on_arrival(&mut self, job: &mut Job) {
        self.attained[job.idx].queue = 0;
        self.queues[0].push(job.idx);
    }

    fn on_progress(&mut self, job: &mut Job, interval_start: f64, now: f64) {
        let a = &mut self.attained[job.idx];
        a.executed_time = a.executed_time + now - interval_start;
        let q = a.queue;
        if q + 1 < NUM_QUEUES && a.executed_time * job.num_gpu() as f64 >= QUEUE_LIMITS[q] {
            a.queue = q + 1;
            self.queues[q + 1].push(job.idx);
            self.queues[q].retain(|&j| j != job.idx);
        }
    }

    fn on_completion(&mut self, job: &Job) {
        self.queues[self.attained[job.idx].queue].retain(|&j| j != job.idx);
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        let jobs = &mut *ctx.jobs;
        let mut free = ctx.cluster.num_gpus();
        for queue in &self.queues {
            for &j in queue {
                if free >= jobs[j].num_gpu() {
                    free -= jobs[j].num_gpu();
                    jobs[j].placement = Some(Placement::default());
                }
            }
        }
        // Pending jobs move behind the running ones, keeping their relative order.
        for queue in &mut self.queues {
            let (placed, pending): (Vec<_>, Vec<_>) =
                queue.iter().partition(|&&j| jobs[j].placement.is_some());
            *queue = placed;
            queue.extend(pending);
        }
    }

    fn next_wakeup(&mut self, now: f64, jobs: &[Job], runnable: &[JobIdx]) -> Option<f64> {
        runnable
            .iter()
            .map(|&j| &jobs[j])
            .filter(|j| j.placement.is_some() && self.attained[j.idx].queue + 1 < NUM_QUEUES)
            .map(|j| {
                let a = self.attained[j.idx];
                (QUEUE_LIMITS[a.queue] / j.num_gpu() as f64).ceil() - a.executed_time + now
            })
            .reduce(f64::min)
    }
}
