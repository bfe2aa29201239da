//! The discrete-event simulator: one event loop for every policy.
//!
//! Events are job arrivals, predicted job completions and policy wake-ups. At each event the
//! loop (1) completes the jobs whose end this is, (2) admits arrivals, (3) credits running
//! jobs with progress minus the restart overhead, (4) asks the policy to rebuild the whole
//! allocation from an empty cluster, and (5) predicts the next completions. This is the
//! reference simulator's model; the testbed reuses the policies with a wall clock instead.

use std::collections::VecDeque;
use std::time::Instant;

use crate::cluster::{Cluster, ClusterSpec};
use crate::float::{isclose, isclose_rel};
use crate::job::{build_jobs, Job, JobIdx, Status};
use crate::policy::{EndEventRule, Policy, SchedulingContext, TieRule};
use crate::trace::JobSpec;

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
}

#[derive(Debug)]
struct StartEvent {
    time: f64,
    jobs: Vec<JobIdx>,
    /// End jobs merged into this start event on a tie. Kept on the event until it is
    /// processed (the reference's Tiresias can therefore complete them late: quirk kept).
    attached_end: Option<Vec<JobIdx>>,
}

#[derive(Debug, Clone)]
struct EndEvent {
    time: f64,
    jobs: Vec<JobIdx>,
}

enum Next {
    Start,
    End,
    Wakeup,
}

/// Called after every event with (completed jobs, total jobs).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// The state after one scheduling pass, as a [`PassObserver`] sees it.
pub struct PassView<'a> {
    pub now: f64,
    pub jobs: &'a [Job],
    /// Arrived, unfinished jobs; those with a placement run until the next event.
    pub runnable: &'a [JobIdx],
    pub cluster: ClusterSpec,
}

/// Called after every scheduling pass; the invariant tests check placements with it.
pub type PassObserver = Box<dyn FnMut(&PassView<'_>) + Send>;

/// A simulation of one trace under one policy on one cluster.
pub struct Simulation {
    jobs: Vec<Job>,
    runnable: Vec<JobIdx>,
    starts: VecDeque<StartEvent>,
    next_end: Option<EndEvent>,
    wakeup: Option<f64>,
    cluster: Cluster,
    policy: Box<dyn Policy>,
    records: Vec<JobRecord>,
    cluster_log: Vec<ClusterRecord>,
    completed: usize,
    events: usize,
    observer: Option<PassObserver>,
}

impl Simulation {
    pub fn new(specs: &[JobSpec], spec: ClusterSpec, policy: Box<dyn Policy>) -> Simulation {
        let jobs = build_jobs(specs);
        let mut starts: VecDeque<StartEvent> = VecDeque::new();
        for job in &jobs {
            let t = job.spec.submit_time;
            match first_close_event(&starts, t) {
                Some(k) => starts[k].jobs.push(job.idx),
                None => starts.push_back(StartEvent {
                    time: t,
                    jobs: vec![job.idx],
                    attached_end: None,
                }),
            }
        }
        starts
            .make_contiguous()
            .sort_by(|a, b| a.time.total_cmp(&b.time));
        Simulation {
            records: Vec::with_capacity(jobs.len()),
            jobs,
            runnable: Vec::new(),
            starts,
            next_end: None,
            wakeup: None,
            cluster: Cluster::new(spec),
            policy,
            cluster_log: Vec::new(),
            completed: 0,
            events: 0,
            observer: None,
        }
    }

    /// Calls `observer` after every scheduling pass.
    pub fn with_pass_observer(mut self, observer: PassObserver) -> Simulation {
        self.observer = Some(observer);
        self
    }

    /// Runs to completion. `progress` is told how many jobs are done after each event.
    pub fn run(mut self, progress: Option<Progress<'_>>) -> SimResult {
        let started = Instant::now();
        let total = self.jobs.len();
        let mut progress = progress;
        while !(self.starts.is_empty() && self.runnable.is_empty()) {
            if self.starts.is_empty() && self.next_end.is_none() {
                tracing::warn!(
                    "the cluster is not large enough to run the remaining {} jobs",
                    self.runnable.len()
                );
                break;
            }
            self.step();
            if let Some(p) = progress.as_mut() {
                p(self.completed, total);
            }
        }
        SimResult {
            policy: self.policy.name().to_string(),
            unfinished: total - self.completed,
            jobs: self.records,
            cluster: self.cluster_log,
            events: self.events,
            wall_seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Which event comes next, following the policy's tie rule.
    fn choose_next(&self) -> (Next, f64) {
        let start = self.starts.front().map(|e| e.time);
        let end = self.next_end.as_ref().map(|e| e.time);
        let (next, time) = match (start, end) {
            (Some(s), None) => (Next::Start, s),
            (None, Some(e)) => (Next::End, e),
            (Some(s), Some(e)) => {
                let tie = match self.policy.tie_rule() {
                    TieRule::Exact => s == e,
                    TieRule::Close => isclose(e, s, 1e-9, 1e-4),
                };
                if tie || s < e {
                    (Next::Start, s)
                } else {
                    (Next::End, e)
                }
            }
            (None, None) => unreachable!("run() checks for an event first"),
        };
        match self.wakeup {
            Some(w) if time > w => (Next::Wakeup, w),
            _ => (next, time),
        }
    }

    fn step(&mut self) {
        let (next, now) = self.choose_next();
        // A start/end tie attaches the end jobs to the start event before a wake-up can
        // pre-empt it (the reference mutates the start event the same way).
        if let (Some(start), Some(end)) = (self.starts.front_mut(), self.next_end.as_ref()) {
            let tie = match self.policy.tie_rule() {
                TieRule::Exact => start.time == end.time,
                TieRule::Close => isclose(end.time, start.time, 1e-9, 1e-4),
            };
            if tie {
                start.attached_end = Some(end.jobs.clone());
            }
        }
        match next {
            Next::End => {
                let end = self.next_end.take().expect("end event chosen");
                self.complete(&end.jobs, now);
            }
            Next::Start => {
                let event = self.starts.pop_front().expect("start event chosen");
                if let Some(ends) = &event.attached_end {
                    self.complete(ends, now);
                }
                for &j in &event.jobs {
                    self.admit(j);
                }
            }
            Next::Wakeup => {}
        }
        self.advance(now);
        self.schedule(now);
        self.predict_ends(now);
        self.log_cluster(now);
        self.events += 1;
    }

    fn complete(&mut self, ends: &[JobIdx], now: f64) {
        for &j in ends {
            let job = &mut self.jobs[j];
            if job.status == Status::Done {
                continue;
            }
            job.total_executed_time += now - job.last_check_time;
            job.status = Status::Done;
            job.end_time = Some(now);
            job.placement = None;
            self.policy.on_completion(job);
            self.records.push(JobRecord::finished(job, now));
            self.completed += 1;
        }
        let jobs = &self.jobs;
        self.runnable.retain(|&j| jobs[j].status != Status::Done);
    }

    fn admit(&mut self, j: JobIdx) {
        let job = &mut self.jobs[j];
        job.status = Status::Pending;
        job.last_check_time = job.spec.submit_time;
        self.policy.on_arrival(job);
        self.runnable.push(j);
    }

    /// Credits progress for the interval since each job's last check.
    fn advance(&mut self, now: f64) {
        credit_progress(&mut self.jobs, &self.runnable, self.policy.as_mut(), now);
    }

    fn schedule(&mut self, now: f64) {
        for &j in &self.runnable {
            self.jobs[j].placement = None;
            self.jobs[j].group.clear();
        }
        self.cluster.empty();
        let mut ctx = SchedulingContext {
            now,
            jobs: &mut self.jobs,
            runnable: &mut self.runnable,
            cluster: &mut self.cluster,
        };
        self.policy.schedule(&mut ctx);
        for &j in &self.runnable {
            let job = &mut self.jobs[j];
            match (job.placement.is_some(), job.status) {
                (true, Status::Pending) => {
                    job.status = Status::Running;
                    job.resume += 1;
                    job.start_time.get_or_insert(now);
                }
                (false, Status::Running) => {
                    job.status = Status::Pending;
                    job.preempt += 1;
                }
                _ => {}
            }
        }
        self.wakeup = self.policy.next_wakeup(now, &self.jobs, &self.runnable);
        if let Some(observe) = self.observer.as_mut() {
            observe(&PassView {
                now,
                jobs: &self.jobs,
                runnable: &self.runnable,
                cluster: *self.cluster.spec(),
            });
        }
    }

    /// Rebuilds the next end event from the running jobs' predicted completions.
    fn predict_ends(&mut self, now: f64) {
        let running = self
            .runnable
            .iter()
            .copied()
            .filter(|&j| self.jobs[j].is_running());
        let ends = running.map(|j| (j, now + self.jobs[j].time_to_finish()));
        self.next_end = match self.policy.end_event_rule() {
            EndEventRule::EarliestOnly => earliest_only(ends),
            EndEventRule::Coalesced => earliest_coalesced(ends.collect()),
            EndEventRule::MergedWithin1e4 => merged_within(ends.collect(), 1e-4),
        };
    }

    fn log_cluster(&mut self, now: f64) {
        let row = cluster_record(
            &self.jobs,
            &self.runnable,
            self.completed,
            self.cluster.num_gpus(),
            now,
        );
        self.cluster_log.push(row);
    }
}

/// Credits every RUNNING job in `runnable` with progress for the interval since its last
/// check, minus its restart overhead (the reference's model; the last interval before a
/// completion is never charged because completions do not call this), and PENDING jobs with
/// pending time. Shared by the simulator and the testbed's virtual clock.
pub fn credit_progress(jobs: &mut [Job], runnable: &[JobIdx], policy: &mut dyn Policy, now: f64) {
    for &j in runnable {
        let job = &mut jobs[j];
        let last = job.last_check_time;
        match job.status {
            Status::Running => {
                let credited = (now - last - job.overhead).max(0.0);
                job.remaining_iteration -= credited / job.iteration_time_cur;
                // Evaluation order as in the reference: (total + now) − last.
                job.total_executed_time = job.total_executed_time + now - last;
                job.last_check_time = now;
                policy.on_progress(job, last, now);
            }
            Status::Pending => {
                job.pending_time += now - last;
                job.last_check_time = now;
            }
            Status::Done => {}
        }
    }
}

/// The `cluster.csv` row after a scheduling pass. A group's members share GPUs, so each
/// running job counts for its GPUs divided by the running members of its group.
pub fn cluster_record(
    jobs: &[Job],
    runnable: &[JobIdx],
    completed: usize,
    total_gpus: u32,
    now: f64,
) -> ClusterRecord {
    let mut running = 0;
    let mut busy = 0.0;
    for &j in runnable {
        let job = &jobs[j];
        if job.is_running() {
            running += 1;
            let sharing = 1 + job.group.iter().filter(|&&m| jobs[m].is_running()).count();
            busy += job.num_gpu() as f64 / sharing as f64;
        }
    }
    let busy = (busy.round() as u32).min(total_gpus);
    ClusterRecord {
        time: now,
        idle_gpu: total_gpus - busy,
        busy_gpu: busy,
        pending_job: runnable.len() - running,
        running_job: running,
        completed_job: completed,
    }
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

/// The first start event (in creation order) within rel 1e-9 of `t`, as the reference's
/// linear search finds it. Jobs arrive sorted, so only the tail can be close: scan back
/// while times are near `t`.
fn first_close_event(starts: &VecDeque<StartEvent>, t: f64) -> Option<usize> {
    let mut found = None;
    for k in (0..starts.len()).rev() {
        let time = starts[k].time;
        if isclose_rel(time, t, 1e-9) {
            found = Some(k);
        } else if time < t - t.abs() * 4e-9 {
            break;
        }
    }
    found
}

/// Tiresias' rule: the single earliest end, plus any job ending at exactly that time.
fn earliest_only(ends: impl Iterator<Item = (JobIdx, f64)>) -> Option<EndEvent> {
    let mut best: Option<EndEvent> = None;
    for (j, t) in ends {
        match &mut best {
            Some(e) if t < e.time => {
                *e = EndEvent {
                    time: t,
                    jobs: vec![j],
                }
            }
            Some(e) if t == e.time => e.jobs.push(j),
            Some(_) => {}
            None => {
                best = Some(EndEvent {
                    time: t,
                    jobs: vec![j],
                })
            }
        }
    }
    best
}

/// The reference's coalescing: each end joins the first existing event within rel 1e-9
/// (the event keeps its first job's time); the earliest event wins.
///
/// Only ends near the minimum can affect the earliest event, so only those are grouped:
/// an end more than 1e-8 (relative) above the minimum can neither belong to the earliest
/// event nor create an event that a member of it would join first.
fn earliest_coalesced(ends: Vec<(JobIdx, f64)>) -> Option<EndEvent> {
    let min = ends.iter().map(|&(_, t)| t).reduce(f64::min)?;
    let cutoff = min + min.abs() * 1e-8;
    let mut events: Vec<EndEvent> = Vec::new();
    for (j, t) in ends.into_iter().filter(|&(_, t)| t <= cutoff) {
        match events.iter_mut().find(|e| isclose_rel(e.time, t, 1e-9)) {
            Some(e) => e.jobs.push(j),
            None => events.push(EndEvent {
                time: t,
                jobs: vec![j],
            }),
        }
    }
    events.into_iter().min_by(|a, b| a.time.total_cmp(&b.time))
}

/// `earliest_coalesced`, then every end within `tol` seconds of that event joins it
/// (AntMan's merge, without the reference's delete-while-indexing bug).
fn merged_within(ends: Vec<(JobIdx, f64)>, tol: f64) -> Option<EndEvent> {
    let mut event = earliest_coalesced(ends.clone())?;
    for (j, t) in ends {
        if !event.jobs.contains(&j) && isclose(event.time, t, 0.0, tol) {
            event.jobs.push(j);
        }
    }
    Some(event)
}
