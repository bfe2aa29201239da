//! FIFO: jobs run in arrival order and keep their GPUs until they finish; the queue head
//! blocks everyone behind it (no backfilling). The reference accepts `fifo` as a flag but
//! simulates nothing for it; this is the textbook policy instead.

use super::{Policy, SchedulingContext};

pub struct Fifo;

impl Policy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn schedule(&mut self, ctx: &mut SchedulingContext<'_>) {
        let jobs = &mut *ctx.jobs;
        // Arrival order is the runnable order (arrivals are appended); running jobs first
        // so that nobody is preempted.
        let (running, waiting): (Vec<usize>, Vec<usize>) =
            ctx.runnable.iter().partition(|&&j| jobs[j].is_running());
        for j in running {
            jobs[j].placement = ctx.cluster.place_yarn(jobs[j].num_gpu());
        }
        for j in waiting {
            jobs[j].placement = ctx.cluster.place_yarn(jobs[j].num_gpu());
            if jobs[j].placement.is_none() {
                break;
            }
        }
    }
}
