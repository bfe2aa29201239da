//! Emulated jobs: each stage sleeps for its profiled time × time scale. The all-reduce stage
//! also runs a real collective on a small gradient buffer (through MPI when built with it)
//! and sleeps only for what is left of the profiled time, so the stage keeps its length.
//!
//! A sleep wakes late (by the timer slack, more on a loaded machine), and at small time
//! scales that lateness is several per cent of a stage: the measured iteration times, and with
//! them the testbed's job completion times, came out up to 30 % long. Each job therefore keeps
//! the time its sleeps (and a collective longer than its stage) overran and takes it off its
//! next sleeps, so its iterations keep their profiled length on average while the real work
//! fits in them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stage::{Collective, JobWorkload};

/// Gradient buffer length (f32s) all-reduced per iteration: 64 KiB.
const GRAD_LEN: usize = 16 * 1024;

pub struct EmulatedJob {
    job_id: u64,
    /// Scaled data, compute and all-reduce times.
    stages: [Duration; 3],
    grads: Vec<f32>,
    /// Iterations completed over the job's whole life (restored from checkpoints).
    pub iterations_done: u64,
    /// Seconds this job's sleeps have overrun so far and not yet made up.
    overrun_s: f64,
}

impl EmulatedJob {
    /// `stage_ms`: profiled data / compute / all-reduce ms; `time_scale` shrinks them.
    pub fn new(job_id: u64, stage_ms: [f64; 3], time_scale: f64) -> EmulatedJob {
        let stages =
            stage_ms.map(|ms| Duration::from_secs_f64((ms.max(0.0) * time_scale) / 1000.0));
        EmulatedJob {
            job_id,
            stages,
            grads: vec![1.0; GRAD_LEN],
            iterations_done: 0,
            overrun_s: 0.0,
        }
    }

    /// Sleeps for `wanted` less the overrun still owed, and books how late it woke.
    fn sleep_compensated(&mut self, wanted: Duration) {
        let started = Instant::now();
        let asked = (wanted.as_secs_f64() - self.overrun_s).max(0.0);
        if asked > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(asked));
        }
        self.overrun_s += started.elapsed().as_secs_f64() - wanted.as_secs_f64();
    }
}

impl JobWorkload for EmulatedJob {
    fn job_id(&self) -> u64 {
        self.job_id
    }

    fn load_data(&mut self) -> anyhow::Result<()> {
        self.sleep_compensated(self.stages[0]);
        Ok(())
    }

    fn compute(&mut self) -> anyhow::Result<()> {
        self.sleep_compensated(self.stages[1]);
        Ok(())
    }

    fn allreduce_and_step(&mut self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        if comm.size() > 1 {
            self.grads.fill(1.0);
            comm.allreduce_sum(slot, &mut self.grads)?;
            let expected = comm.size() as f32;
            anyhow::ensure!(
                self.grads[0] == expected,
                "all-reduce of job {} gave {} instead of {expected}",
                self.job_id,
                self.grads[0]
            );
        }
        let spent = started.elapsed();
        match self.stages[2].checked_sub(spent) {
            Some(rest) => self.sleep_compensated(rest),
            // The collective alone outlasted the stage (ranks on an oversubscribed machine):
            // the excess is made up like a late wake-up.
            None => self.overrun_s += (spent - self.stages[2]).as_secs_f64(),
        }
        self.iterations_done += 1;
        Ok(())
    }

    fn checkpoint(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", self.iterations_done))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }

    fn restore(&mut self, path: &Path) -> anyhow::Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        self.iterations_done = text
            .trim()
            .parse()
            .with_context(|| format!("{}: not an iteration count", path.display()))?;
        Ok(())
    }

    fn iterations_done(&self) -> u64 {
        self.iterations_done
    }

    fn absorb_delay(&mut self, late: Duration) {
        self.overrun_s += late.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_overrun_is_taken_off_the_next_sleeps() {
        let mut job = EmulatedJob::new(1, [200.0, 200.0, 0.0], 1.0);
        job.overrun_s = 0.3;
        let started = Instant::now();
        job.load_data().unwrap(); // 0.2 s of the 0.3 s owed: no sleep
        job.compute().unwrap(); // 0.1 s owed left: sleeps about 0.1 s
        let took = started.elapsed().as_secs_f64();
        assert!(took >= 0.1, "slept {took} s");
        assert!(
            took < 0.35,
            "slept {took} s of 0.4 s stages with 0.3 s owed"
        );
        // Whatever the last sleep overran is owed again.
        assert!(
            (job.overrun_s - (took - 0.1)).abs() < 0.01,
            "{}",
            job.overrun_s
        );
    }
}
