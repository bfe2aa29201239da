//! Emulated jobs: each stage sleeps for its profiled time × time scale. The all-reduce stage
//! also runs a real collective on a small gradient buffer (through MPI when built with it)
//! and sleeps only for what is left of the profiled time, so the stage keeps its length.

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
    /// How much longer than asked this job's sleeps have run so far, not yet made up for.
    overslept: Duration,
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
            overslept: Duration::ZERO,
        }
    }

    /// Sleeps for `want`, less what earlier sleeps overran: a sleep ends up to the timer
    /// slack (~50-100 µs) late, which at small time scales (stages of a few hundred µs in
    /// real-time runs) would otherwise stretch every iteration. Over many stages the job's
    /// sleeps then add up to its profiled times.
    fn sleep_stage(&mut self, want: Duration) {
        let asked = want.saturating_sub(self.overslept);
        self.overslept = self.overslept.saturating_sub(want);
        if asked.is_zero() {
            return;
        }
        let started = Instant::now();
        std::thread::sleep(asked);
        self.overslept += started.elapsed().saturating_sub(asked);
    }
}

impl JobWorkload for EmulatedJob {
    fn job_id(&self) -> u64 {
        self.job_id
    }

    fn load_data(&mut self) -> anyhow::Result<()> {
        self.sleep_stage(self.stages[0]);
        Ok(())
    }

    fn compute(&mut self) -> anyhow::Result<()> {
        self.sleep_stage(self.stages[1]);
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
        if let Some(rest) = self.stages[2].checked_sub(started.elapsed()) {
            self.sleep_stage(rest);
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
        self.overslept += late;
    }
}
