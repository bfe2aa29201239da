//! The 4-stage interleaving rotation (testbed-spec §3.3), made explicit.
//!
//! Stages are numbered t = 0, 1, 2, … and s = t mod 4. The job in slot j runs iteration i as:
//! data load starting at stage 4i + j (on a helper thread, so it may span two stages),
//! compute at stage 4i + j + 2 (after joining its data load), all-reduce + step at stage
//! 4i + j + 3. So in stage s the rotation starts slot s's data load, computes slot (s+2) mod 4
//! and synchronises slot (s+1) mod 4. A stage ends when its compute and its all-reduce are
//! done ("strict" stages), which is exactly the recurrence `muri::interleave` models.
//! A solo job in slot 0 degenerates to load, compute, sync in sequence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Iterations each job (in input order) completed in this launch.
    pub iterations_run: Vec<u64>,
    /// Whether a stop request cut the launch short.
    pub stopped: bool,
}

/// Iterations ignored at the start of each phase (pipeline fill, thread warm-up).
const WARMUP: usize = 1;

type StageTimes = Arc<Mutex<[(f64, u64); 3]>>;

/// Runs every job's iterations through the rotation. `finished` counts completed group
/// iterations (what `QueryStats` reports). When `stop` is raised (SIGTERM: the scheduler
/// preempts the group) the rotation *drains*: it starts no new iteration, finishes the ones
/// already in flight and returns, so every job stops on an iteration boundary and can be
/// checkpointed. Ranks agree on the stage at which they stop (see [`Collective::agree_any`]),
/// or their collectives would no longer pair up.
pub fn run(
    jobs: &[SlotJob],
    comm: &dyn Collective,
    finished: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<Measurement> {
    let mut by_slot: [Option<&SlotJob>; SLOTS] = [None, None, None, None];
    for job in jobs {
        let entry = by_slot
            .get_mut(job.slot)
            .ok_or_else(|| anyhow!("slot {} is out of range 0..{SLOTS}", job.slot))?;
        anyhow::ensure!(entry.is_none(), "two jobs in slot {}", job.slot);
        *entry = Some(job);
    }
    let mut limits: [u64; SLOTS] = by_slot.map(|j| j.map_or(0, |j| j.iterations));
    let Some(mut last_stage) = final_stage(&limits) else {
        return Ok(Measurement::default());
    };
    let stage_times: StageTimes = Arc::new(Mutex::new([(0.0, 0); 3]));
    let mut data_threads: [Option<JoinHandle<anyhow::Result<()>>>; SLOTS] =
        [None, None, None, None];
    let mut sync_done: Vec<Vec<Instant>> = vec![Vec::new(); SLOTS];
    let mut draining = false;
    let started = Instant::now();
    // Time the rotation spent beyond its stages' work (spawning, joining, draining checks),
    // handed to the next stage's jobs to make up: see `JobWorkload::absorb_delay`.
    let mut late = Duration::ZERO;
    let mut t = 0;
    while t <= last_stage {
        let stage_started = Instant::now();
        let s = (t % 4) as usize;
        if s == 0 && !draining && comm.agree_any(stop.load(Ordering::Relaxed))? {
            draining = true;
            limits = drained_limits(&limits, t);
            match final_stage(&limits) {
                Some(last) if last >= t => last_stage = last,
                _ => break,
            }
        }
        if let Some(job) = active(&by_slot, &limits, s, t, 0) {
            data_threads[s] = Some(spawn_data_load(job, stage_times.clone()));
        }
        let compute_slot = (s + 2) % 4;
        let data = data_threads[compute_slot].take();
        let sync_slot = (s + 1) % 4;
        let compute_job = active(&by_slot, &limits, compute_slot, t, 2);
        let sync_job = active(&by_slot, &limits, sync_slot, t, 3);
        let owed = if compute_job.is_some() || sync_job.is_some() {
            std::mem::take(&mut late)
        } else {
            Duration::ZERO
        };
        let work = std::thread::scope(|scope| -> anyhow::Result<Duration> {
            let compute = compute_job.map(|job| {
                let times = stage_times.clone();
                scope.spawn(move || compute_stage(job, data, &times, owed))
            });
            let mut work = Duration::ZERO;
            if let Some(job) = sync_job {
                work = sync_stage(job, comm, &stage_times, owed)?;
                sync_done[sync_slot].push(Instant::now());
            }
            if let Some(handle) = compute {
                let took = handle
                    .join()
                    .map_err(|_| anyhow!("compute thread panicked"))??;
                work = work.max(took);
            }
            Ok(work)
        })?;
        late += stage_started.elapsed().saturating_sub(work);
        if s == 3 {
            finished.fetch_add(1, Ordering::Relaxed);
        }
        t += 1;
    }
    let sums = *stage_times
        .lock()
        .map_err(|_| anyhow!("stage timer poisoned"))?;
    let done: Vec<u64> = jobs.iter().map(|j| limits[j.slot]).collect();
    Ok(Measurement {
        phase_iter_s: phase_times(jobs, &done, &sync_done),
        stage_s: sums.map(|(sum, n)| if n == 0 { 0.0 } else { sum / n as f64 }),
        passes: t.div_ceil(4),
        wall_s: started.elapsed().as_secs_f64(),
        iterations_run: done,
        stopped: draining,
    })
}

/// The last stage any slot is busy in: slot j's iteration i syncs at stage 4i + j + 3.
fn final_stage(limits: &[u64; SLOTS]) -> Option<u64> {
    (0..SLOTS)
        .filter(|&j| limits[j] > 0)
        .map(|j| 4 * (limits[j] - 1) + j as u64 + 3)
        .max()
}

/// Per slot, the iterations whose data load started before stage `t` (iteration i of slot j
/// starts at stage 4i + j): those still finish, nothing new starts.
fn drained_limits(limits: &[u64; SLOTS], t: u64) -> [u64; SLOTS] {
    std::array::from_fn(|j| {
        let started = if t > j as u64 {
            (t - 1 - j as u64) / 4 + 1
        } else {
            0
        };
        limits[j].min(started)
    })
}

/// The job in `slot` if it runs an iteration whose stage `offset` falls on stage `t`.
fn active<'a>(
    by_slot: &[Option<&'a SlotJob>; SLOTS],
    limits: &[u64; SLOTS],
    slot: usize,
    t: u64,
    offset: u64,
) -> Option<&'a SlotJob> {
    let job = by_slot[slot]?;
    let first = slot as u64 + offset;
    if t < first || (t - first) % 4 != 0 {
        return None;
    }
    ((t - first) / 4 < limits[slot]).then_some(job)
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

/// Joins the job's data load, then computes; returns how long both took (the stage's work).
fn compute_stage(
    job: &SlotJob,
    data: Option<JoinHandle<anyhow::Result<()>>>,
    times: &StageTimes,
    owed: Duration,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
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
    w.absorb_delay(owed);
    w.compute()
        .with_context(|| format!("job {}: compute stage", w.job_id()))?;
    record(times, 1, started.elapsed());
    Ok(began.elapsed())
}

/// The all-reduce and step; returns how long they took.
fn sync_stage(
    job: &SlotJob,
    comm: &dyn Collective,
    times: &StageTimes,
    owed: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut w = job
        .workload
        .lock()
        .map_err(|_| anyhow!("workload lock poisoned"))?;
    w.absorb_delay(owed);
    w.allreduce_and_step(comm, job.slot)
        .with_context(|| format!("job {}: all-reduce stage", w.job_id()))?;
    let took = started.elapsed();
    record(times, 2, took);
    Ok(took)
}

/// Per phase (k live members, k = n … 1), the mean gap between consecutive iteration ends
/// of the live jobs, skipping each phase's first [`WARMUP`] iterations.
fn phase_times(jobs: &[SlotJob], done: &[u64], sync_done: &[Vec<Instant>]) -> Vec<f64> {
    let mut bounds: Vec<u64> = done.iter().copied().filter(|&n| n > 0).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut phases = Vec::new();
    let mut lo = 0u64;
    for &hi in &bounds {
        let mut sum = 0.0;
        let mut n = 0usize;
        for (job, _) in jobs.iter().zip(done).filter(|(_, &n)| n >= hi) {
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

    /// The rotation on one local rank, with `stop` as the drain flag.
    fn run_local(jobs: &[SlotJob], stop: &AtomicBool) -> anyhow::Result<Measurement> {
        run(jobs, &Local { rank: 0, size: 1 }, &AtomicU64::new(0), stop)
    }

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
        let m = run_local(&jobs, &AtomicBool::new(false)).unwrap();
        let t = m.phase_iter_s[0];
        assert!((0.0115..0.02).contains(&t), "period {t}");
    }

    #[test]
    fn complementary_pair_overlaps() {
        // Data-heavy and compute-heavy: one job's data load overlaps the other's compute.
        // Stages of tens of milliseconds, so that scheduler jitter on a loaded machine stays
        // well inside the gap between overlapped (0.050 s) and sequential (0.1075 s).
        let jobs = [
            slot_job(0, 8, [50.0, 5.0, 0.0]),
            slot_job(2, 8, [2.5, 50.0, 0.0]),
        ];
        let m = run_local(&jobs, &AtomicBool::new(false)).unwrap();
        let t = m.phase_iter_s[0];
        assert!(
            (0.050..0.09).contains(&t),
            "period {t}: overlapped would be 0.050, sequential 0.1075"
        );
    }

    #[test]
    fn drain_keeps_started_iterations_only() {
        // At stage 9 (pass 2, stage 1): slot 0 started iterations 0..=2 (stages 0, 4, 8),
        // slot 1 started 0..=1 (stages 1, 5; stage 9 is not before 9), slots 2 and 3 two each.
        assert_eq!(drained_limits(&[10, 10, 10, 1], 9), [3, 2, 2, 1]);
        assert_eq!(drained_limits(&[10; SLOTS], 0), [0; SLOTS]);
        assert_eq!(final_stage(&[0; SLOTS]), None);
        assert_eq!(final_stage(&[3, 2, 0, 0]), Some(8 + 3));
    }

    #[test]
    fn stop_request_drains_to_an_iteration_boundary() {
        let jobs = [
            slot_job(0, 1000, [1.0, 1.0, 1.0]),
            slot_job(1, 1000, [1.0, 1.0, 1.0]),
            slot_job(3, 1000, [1.0, 1.0, 1.0]),
        ];
        let stop = AtomicBool::new(false);
        let m = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(60));
                stop.store(true, Ordering::Relaxed);
            });
            run_local(&jobs, &stop).unwrap()
        });
        assert!(m.stopped);
        for (job, &ran) in jobs.iter().zip(&m.iterations_run) {
            assert!(ran > 0 && ran < 1000, "ran {ran}");
            // Every iteration that started also finished its all-reduce + step.
            assert_eq!(job.workload.lock().unwrap().iterations_done(), ran);
        }
        // Slots stop within one iteration of each other (they drain from the same stage).
        let (lo, hi) = (m.iterations_run.iter().min(), m.iterations_run.iter().max());
        assert!(hi.unwrap() - lo.unwrap() <= 1, "{:?}", m.iterations_run);
    }

    #[test]
    fn stop_before_start_runs_nothing() {
        let jobs = [slot_job(0, 5, [1.0, 1.0, 1.0])];
        let m = run_local(&jobs, &AtomicBool::new(true)).unwrap();
        assert!(m.stopped);
        assert_eq!(m.iterations_run, vec![0]);
    }

    #[test]
    fn duplicate_slot_is_an_error() {
        let jobs = [slot_job(0, 1, [0.0; 3]), slot_job(0, 1, [0.0; 3])];
        assert!(run_local(&jobs, &AtomicBool::new(false)).is_err());
    }
}
