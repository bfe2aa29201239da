//! The discrete-event simulator: one event loop for every policy.
//!
//! Events are job arrivals, predicted job completions and policy wake-ups. At each event the
//! simulator runs one [`crate::round::Round`] (complete, admit, credit progress, schedule,
//! transitions, predict the next completions) with the interleaving model as its executor:
//! the clock jumps straight to the next event. The testbed runs the same round with a real
//! executor.

use std::time::Instant;

use crate::cluster::{Cluster, ClusterSpec};
use crate::job::{build_jobs, Job, JobIdx};
use crate::policy::Policy;
use crate::round::{DecisionLog, EventQueue, Round};
use crate::trace::JobSpec;

pub use muri_core::record::{ClusterRecord, JobRecord, SimResult};
pub use muri_core::round::{cluster_record, credit_progress, SimulationError};

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
    events: EventQueue,
    cluster: Cluster,
    policy: Box<dyn Policy>,
    records: Vec<JobRecord>,
    cluster_log: Vec<ClusterRecord>,
    decisions: Option<DecisionLog>,
    events_run: usize,
    observer: Option<PassObserver>,
}

impl Simulation {
    pub fn new(specs: &[JobSpec], spec: ClusterSpec, policy: Box<dyn Policy>) -> Simulation {
        let jobs = build_jobs(specs);
        Simulation {
            records: Vec::with_capacity(jobs.len()),
            events: EventQueue::new(&jobs),
            jobs,
            runnable: Vec::new(),
            cluster: Cluster::new(spec),
            policy,
            cluster_log: Vec::new(),
            decisions: None,
            events_run: 0,
            observer: None,
        }
    }

    /// Calls `observer` after every scheduling pass.
    pub fn with_pass_observer(mut self, observer: PassObserver) -> Simulation {
        self.observer = Some(observer);
        self
    }

    /// Keeps a decision log (`--decisions`), returned in [`SimResult::decisions`].
    pub fn with_decisions(mut self) -> Simulation {
        self.decisions = Some(DecisionLog::new());
        self
    }

    /// Runs to completion. `progress` is told how many jobs are done after each event.
    ///
    /// Fails only where the policy reproduces a reference failure
    /// ([`crate::policy::EndEventRule::ReferenceAntMan`]).
    pub fn run(mut self, progress: Option<Progress<'_>>) -> Result<SimResult, SimulationError> {
        let started = Instant::now();
        let total = self.jobs.len();
        let mut progress = progress;
        while self.events.has_arrivals() || !self.runnable.is_empty() {
            let Some(now) = self.events.next_time(self.policy.as_ref()) else {
                tracing::warn!(
                    "the cluster is not large enough to run the remaining {} jobs",
                    self.runnable.len()
                );
                break;
            };
            self.step(now)?;
            if let Some(p) = progress.as_mut() {
                p(self.records.len(), total);
            }
        }
        Ok(SimResult {
            policy: self.policy.name().to_string(),
            unfinished: total - self.records.len(),
            jobs: self.records,
            cluster: self.cluster_log,
            events: self.events_run,
            wall_seconds: started.elapsed().as_secs_f64(),
            decisions: self.decisions,
        })
    }

    /// One round at the next event's time; the model is the executor, so the round goes
    /// straight from the policy's placements to the transitions.
    fn step(&mut self, now: f64) -> Result<(), SimulationError> {
        let total_gpus = self.cluster.num_gpus();
        let mut round = Round {
            jobs: &mut self.jobs,
            runnable: &mut self.runnable,
            policy: self.policy.as_mut(),
            events: &mut self.events,
            records: &mut self.records,
            decisions: self.decisions.as_mut(),
        };
        round.open(now);
        round.credit(now);
        round.schedule(now, &mut self.cluster);
        round.transitions(now, None);
        round.predict_ends(now)?;
        let row = round.cluster_row(now, total_gpus);
        self.cluster_log.push(row);
        self.events_run += 1;
        // Predicting ends changes no job, so this is the state the pass left.
        if let Some(observe) = self.observer.as_mut() {
            observe(&PassView {
                now,
                jobs: &self.jobs,
                runnable: &self.runnable,
                cluster: *self.cluster.spec(),
            });
        }
        Ok(())
    }
}
