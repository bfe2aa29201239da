//! The 4-stage interleaving rotation (testbed-spec §3.3), made explicit.
//!
//! Stages are numbered t = 0, 1, 2, … and s = t mod 4. The job in slot j runs iteration i as:
//! data load starting at stage 4i + j (on a helper thread, so it may span two stages),
//! compute at stage 4i + j + 2 (after joining its data load), all-reduce + step at stage
//! 4i + j + 3. So in stage s the rotation starts slot s's data load, computes slot (s+2) mod 4
//! and synchronises slot (s+1) mod 4. A stage ends when its compute and its all-reduce are
//! done ("strict" stages), which is exactly the recurrence `muri::interleave` models.
//! A solo job in slot 0 degenerates to load, compute, sync in sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::stage::{Collective, JobWorkload};

pub const SLOTS: usize = 4;

/// A job placed in a pipeline slot, with the iterations it runs in this launch.
pub struct SlotJob {
    pub slot: usize,
    pub iterations: u64,
    pub workload: Arc<Mutex<Box<dyn JobWorkload>>>,
}

/// What the rotation measured.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Seconds per group iteration while k members were alive, longest phase first
    /// (all members, then one fewer, …); empty phases are skipped.
    pub phase_iter_s: Vec<f64>,
    /// Mean seconds per stage kind: data, compute, all-reduce.
    pub stage_s: [f64; 3],
    /// Macro-iterations (passes) run.
    pub passes: u64,
    pub wall_s: f64,
}

/// Iterations ignored at the start of each phase (pipeline fill, thread warm-up).
const WARMUP: usize = 1;

type StageTimes = Arc<Mutex<[(f64, u64); 3]>>;

/// Runs every job's iterations through the rotation. `finished` counts completed group
/// iterations (what `QueryStats` reports).
pub fn run(
    jobs: &[SlotJob],
    comm: &dyn Collective,
    finished: &AtomicU64,
) -> anyhow::Result<Measurement> {
    let mut by_slot: [Option<&SlotJob>; SLOTS] = [None, None, None, None];
    for job in jobs {
        let entry = by_slot
            .get_mut(job.slot)
            .ok_or_else(|| anyhow!("slot {} is out of range 0..{SLOTS}", job.slot))?;
        anyhow::ensure!(entry.is_none(), "two jobs in slot {}", job.slot);
        *entry = Some(job);
    }
    let last_stage = jobs
        .iter()
        .filter(|j| j.iterations > 0)
        .map(|j| 4 * (j.iterations - 1) + j.slot as u64 + 3)
        .max();
    let Some(last_stage) = last_stage else {
        return Ok(Measurement::default());
    };
    let stage_times: StageTimes = Arc::new(Mutex::new([(0.0, 0); 3]));
    let mut data_threads: [Option<JoinHandle<anyhow::Result<()>>>; SLOTS] =
        [None, None, None, None];
    let mut sync_done: Vec<Vec<Instant>> = vec![Vec::new(); SLOTS];
    let started = Instant::now();
    for t in 0..=last_stage {
        let s = (t % 4) as usize;
        if let Some(job) = active(&by_slot, s, t, 0) {
            data_threads[s] = Some(spawn_data_load(job, stage_times.clone()));
        }
        let compute_slot = (s + 2) % 4;
        let data = data_threads[compute_slot].take();
        let sync_slot = (s + 1) % 4;
        let compute_job = active(&by_slot, compute_slot, t, 2);
        let sync_job = active(&by_slot, sync_slot, t, 3);
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let compute = compute_job.map(|job| {
                let times = stage_times.clone();
                scope.spawn(move || compute_stage(job, data, &times))
            });
            if let Some(job) = sync_job {
                sync_stage(job, comm, &stage_times)?;
                sync_done[sync_slot].push(Instant::now());
            }
            if let Some(handle) = compute {
                handle
                    .join()
                    .map_err(|_| anyhow!("compute thread panicked"))??;
            }
            Ok(())
        })?;
        if s == 3 {
            finished.fetch_add(1, Ordering::Relaxed);
        }
    }
    let sums = *stage_times
        .lock()
        .map_err(|_| anyhow!("stage timer poisoned"))?;
    Ok(Measurement {
        phase_iter_s: phase_times(jobs, &sync_done),
        stage_s: sums.map(|(sum, n)| if n == 0 { 0.0 } else { sum / n as f64 }),
        passes: (last_stage + 1).div_ceil(4),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The job in `slot` if it runs an iteration whose stage `offset` falls on stage `t`.
fn active<'a>(
    by_slot: &[Option<&'a SlotJob>; SLOTS],
    slot: usize,
    t: u64,
    offset: u64,
) -> Option<&'a SlotJob> {
    let job = by_slot[slot]?;
    let first = slot as u64 + offset;
    if t < first || (t - first) % 4 != 0 {
        return None;
    }
    ((t - first) / 4 < job.iterations).then_some(job)
}

fn record(times: &StageTimes, kind: usize, elapsed: Duration) {
    if let Ok(mut t) = times.lock() {
        t[kind].0 += elapsed.as_secs_f64();
        t[kind].1 += 1;
    }
}

fn spawn_data_load(job: &SlotJob, times: StageTimes) -> JoinHandle<anyhow::Result<()>> {
    let workload = job.workload.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut w = workload
            .lock()
            .map_err(|_| anyhow!("workload lock poisoned"))?;
        w.load_data()
            .with_context(|| format!("job {}: data stage", w.job_id()))?;
        record(&times, 0, started.elapsed());
        Ok(())
    })
}

fn compute_stage(
    job: &SlotJob,
    data: Option<JoinHandle<anyhow::Result<()>>>,
    times: &StageTimes,
) -> anyhow::Result<()> {
    if let Some(handle) = data {
        handle
            .join()
            .map_err(|_| anyhow!("data thread panicked"))??;
    }
    let started = Instant::now();
    let mut w = job
        .workload
        .lock()
        .map_err(|_| anyhow!("workload lock poisoned"))?;
    w.compute()
        .with_context(|| format!("job {}: compute stage", w.job_id()))?;
    record(times, 1, started.elapsed());
    Ok(())
}

fn sync_stage(job: &SlotJob, comm: &dyn Collective, times: &StageTimes) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut w = job
        .workload
        .lock()
        .map_err(|_| anyhow!("workload lock poisoned"))?;
    w.allreduce_and_step(comm, job.slot)
        .with_context(|| format!("job {}: all-reduce stage", w.job_id()))?;
    record(times, 2, started.elapsed());
    Ok(())
}

/// Per phase (k live members, k = n … 1), the mean gap between consecutive iteration ends
/// of the live jobs, skipping each phase's first [`WARMUP`] iterations.
fn phase_times(jobs: &[SlotJob], sync_done: &[Vec<Instant>]) -> Vec<f64> {
    let mut bounds: Vec<u64> = jobs
        .iter()
        .map(|j| j.iterations)
        .filter(|&n| n > 0)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut phases = Vec::new();
    let mut lo = 0u64;
    for &hi in &bounds {
        let mut sum = 0.0;
        let mut n = 0usize;
        for job in jobs.iter().filter(|j| j.iterations >= hi) {
            let ends = &sync_done[job.slot];
            let from = (lo as usize + WARMUP).max(1);
            for i in from..(hi as usize).min(ends.len()) {
                sum += (ends[i] - ends[i - 1]).as_secs_f64();
                n += 1;
            }
        }
        if n > 0 {
            phases.push(sum / n as f64);
        }
        lo = hi;
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Local;
    use crate::emulated::EmulatedJob;

    fn slot_job(slot: usize, iterations: u64, ms: [f64; 3]) -> SlotJob {
        SlotJob {
            slot,
            iterations,
            workload: Arc::new(Mutex::new(Box::new(EmulatedJob::new(slot as u64, ms, 1.0)))),
        }
    }

    #[test]
    fn solo_job_runs_stages_in_sequence() {
        let jobs = [slot_job(0, 6, [4.0, 6.0, 2.0])];
        let m = run(&jobs, &Local { rank: 0, size: 1 }, &AtomicU64::new(0)).unwrap();
        let t = m.phase_iter_s[0];
        assert!((0.0115..0.02).contains(&t), "period {t}");
    }

    #[test]
    fn complementary_pair_overlaps() {
        // Data-heavy and compute-heavy: one job's data load overlaps the other's compute.
        let jobs = [
            slot_job(0, 8, [10.0, 1.0, 0.0]),
            slot_job(2, 8, [0.5, 10.0, 0.0]),
        ];
        let m = run(&jobs, &Local { rank: 0, size: 1 }, &AtomicU64::new(0)).unwrap();
        let t = m.phase_iter_s[0];
        assert!(
            (0.010..0.0215).contains(&t),
            "period {t}: sequential would be 0.0215"
        );
    }

    #[test]
    fn duplicate_slot_is_an_error() {
        let jobs = [slot_job(0, 1, [0.0; 3]), slot_job(0, 1, [0.0; 3])];
        assert!(run(&jobs, &Local { rank: 0, size: 1 }, &AtomicU64::new(0)).is_err());
    }
}
