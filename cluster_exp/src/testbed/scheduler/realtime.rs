//! Real-time mode (`--fast_forwarding 0`): every iteration runs for real.
//!
//! The virtual clock is the wall time since the run started ÷ `--time_scale` (emulated stages
//! are scaled by it; real models run at their own speed, so they use a scale of 1). A round
//! is the same [`crate::round::Round`] as in fast-forward mode, run when something happens:
//! an arrival, a trainer reporting that a job ran its last iteration, a launch ending or
//! failing, a submission, a policy wake-up, or the `--schedule_interval` tick. It differs in
//! what completes a job and in how long a launch runs:
//! - a launch runs each member's *remaining* iterations and is never timed out: it ends when
//!   its processes exit, or when a later round kills it (preemption, regrouping);
//! - a job completes when its trainer reports its last iteration (a member that finishes
//!   before the rest of its group is reported at once, the others at the launch's end), not
//!   at a predicted time: no end events are predicted at all;
//! - a killed launch drains (in-flight iterations finish, real models checkpoint) and reports
//!   how many iterations each member ran; the next launch of the job runs the rest, so its
//!   launches together run exactly its trace iterations (real models resume from the
//!   checkpoint that carries their state);
//! - each round polls every launch's rank 0 (`QueryStats`, concurrently, within
//!   [`POLL_DEADLINE`]) for the iterations each member ran so far and the measured time per
//!   group iteration: the polled counts are the running jobs' progress (what `muri status`
//!   and the remaining-time order of SRTF-like policies see), the measured time their speed
//!   until the next poll, and a preempted launch that sent no final report carries its
//!   last polled counts. A failed poll is a warning: the round goes on with the model's
//!   estimate (the round's credit), corrected to the reported counts whenever a launch
//!   ends;
//! - with `--state_dir`, rounds and launches are journaled as in fast-forward mode, and each
//!   job's entry holds the iterations its trainers ran: a restarted scheduler kills the old
//!   launches and relaunches their jobs with the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use muri_runtime::client::TrainerClient;
use muri_runtime::pb;
use muri_runtime::tls::Tls;
use tokio::task::JoinSet;

use super::{Event, LaunchRow, RunSummary, RunningGroup, Testbed};
use crate::job::{JobIdx, Status};

/// Real-time state, kept by the testbed next to the fast-forward one.
#[derive(Debug, Default)]
pub(super) struct RealTime {
    /// Virtual time at the wall-clock start of the run (the first arrival).
    origin: f64,
    /// Iterations each job ran in launches that have ended.
    done: HashMap<JobIdx, u64>,
    /// Launches whose processes run, by launch id.
    launches: BTreeMap<u64, Launch>,
    /// Jobs whose trainers reported their last iteration, with the virtual time of the
    /// report: they complete at the next round.
    finished: Vec<(JobIdx, f64)>,
    /// Virtual time of the last round (the interval tick counts from it).
    last_round: f64,
}

/// A launch under way.
#[derive(Debug)]
struct Launch {
    group: RunningGroup,
    /// Nodes that started processes and have not reported Done.
    awaiting: BTreeSet<u32>,
    /// Iterations each member runs in this launch.
    target: HashMap<JobIdx, u64>,
    /// Iterations each member ran, from the launch's final report.
    ran: HashMap<JobIdx, u64>,
    /// (virtual, wall) time of the launch.
    at: (f64, f64),
    startup_s: Option<f64>,
    iteration_s: Option<f64>,
    /// Rank 0's `QueryStats` service, once it registered.
    stats: Option<TrainerClient>,
    /// Iterations each member ran so far in this launch, from the last poll.
    polled: HashMap<JobIdx, u64>,
    /// Real seconds per group iteration so far, from the last poll.
    polled_iteration_s: Option<f64>,
}

/// How a launch ended.
#[derive(Debug)]
enum Ended {
    /// Its processes exited by themselves, every one with status 0.
    Exited,
    /// The scheduler killed it (preemption or regrouping).
    Preempted,
    /// A process failed, or an Execute was refused.
    Failed(String),
    /// A node of it is gone.
    Lost(String),
}

/// Longest real-time wait between checks for dead workers.
const POLL: Duration = Duration::from_millis(200);

/// How long a round waits for the trainers' `QueryStats` answers: a trainer that does not
/// answer in time (busy starting, exiting) is simply not polled this round.
const POLL_DEADLINE: Duration = Duration::from_millis(500);

impl RealTime {
    /// A resumed run's journaled count of the iterations `job` ran.
    pub(super) fn resume_iterations(&mut self, job: JobIdx, iterations: u64) {
        if iterations > 0 {
            self.done.insert(job, iterations);
        }
    }
}

impl Testbed {
    /// Runs the trace in real time until every job is done (or forever with `keep_alive`).
    pub(super) async fn run_realtime(&mut self) -> anyhow::Result<RunSummary> {
        self.wait_for_workers().await?;
        self.kill_orphans().await;
        self.started = Instant::now();
        // A resumed run's clock goes on from its last journaled round.
        self.realtime.origin = match self.resumed {
            true => self.now,
            false => self.queue.next_time(self.policy.as_ref()).unwrap_or(0.0),
        };
        tracing::info!(
            time_scale = self.time_scale,
            "real-time mode: every iteration runs"
        );
        loop {
            self.realtime_round().await?;
            self.journal_round()?;
            self.write_logs()?;
            if self.realtime_finished() {
                break;
            }
            self.realtime_wait().await;
        }
        Ok(self.summary())
    }

    /// Virtual seconds now: the wall time since the start ÷ the time scale.
    fn clock(&self) -> f64 {
        self.realtime.origin + self.started.elapsed().as_secs_f64() / self.time_scale
    }

    fn realtime_finished(&self) -> bool {
        !self.cfg.keep_alive
            && self.runnable.is_empty()
            && self.held.is_empty()
            && !self.queue.has_arrivals()
            && self.realtime.launches.is_empty()
            && self.realtime.finished.is_empty()
    }

    async fn realtime_round(&mut self) -> anyhow::Result<()> {
        self.rounds += 1;
        self.now = self.clock();
        self.realtime.last_round = self.now;
        self.kill_orphans().await;
        self.take_submissions();
        self.take_cancels();
        self.reap_dead_workers(None);
        self.end_lost_launches().await;
        self.complete_finished();
        let now = self.now;
        self.round_state().admit_due(now);
        self.release_held();
        self.round_state().credit(now);
        self.poll_progress().await;
        self.correct_remaining();
        self.schedule();
        self.dispatch_realtime().await?;
        self.apply_transitions();
        self.log_cluster();
        self.publish_status();
        Ok(())
    }

    /// Waits (real time) until the next round is due: an event that completes a job or
    /// ends a launch, a submission or worker registration, or the next arrival, policy
    /// wake-up, retry or interval tick.
    async fn realtime_wait(&mut self) {
        let due = self.next_realtime_round();
        loop {
            let wait = match due {
                Some(t) => {
                    let wall = (t - self.clock()) * self.time_scale;
                    if wall <= 0.0 {
                        return;
                    }
                    Duration::from_secs_f64(wall.min(POLL.as_secs_f64()))
                }
                None => POLL,
            };
            tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    if self.realtime_event(event).await {
                        return;
                    }
                }
                _ = self.shared.wake.notified() => return,
                _ = tokio::time::sleep(wait) => {
                    self.reap_dead_workers(None);
                    if self.launch_on_lost_node() {
                        return;
                    }
                }
            }
        }
    }

    /// Virtual time of the next arrival, policy wake-up, retry or interval tick (the tick
    /// only while jobs wait or run).
    fn next_realtime_round(&self) -> Option<f64> {
        let now = self.now;
        let arrival = self.queue.next_arrival();
        let wakeup = self.queue.wakeup().filter(|&t| t > now);
        let retries = self.held.iter().map(|&(_, t)| t);
        let tick = (!self.runnable.is_empty())
            .then_some(self.realtime.last_round + self.cfg.schedule_interval);
        arrival
            .into_iter()
            .chain(wakeup)
            .chain(retries)
            .chain(tick)
            .reduce(f64::min)
    }

    /// Takes one event from a trainer or worker; returns whether a round is due (a job
    /// finished or a launch ended).
    async fn realtime_event(&mut self, event: Event) -> bool {
        match event {
            Event::Report(r) => self.realtime_report(&r),
            Event::Trainer(t) => {
                self.trainer_registered(&t);
                false
            }
            // Real time has no samples to line up: every launch starts when it is ready.
            Event::SampleReady { go, .. } => {
                let _ = go.send(());
                false
            }
            Event::Done(d) => {
                let Some(launch) = self.realtime.launches.get_mut(&d.group_id) else {
                    return false;
                };
                launch.awaiting.remove(&d.node_id);
                if d.exit_code != 0 || d.signal != 0 {
                    let why = format!(
                        "node {}: exit code {}, signal {}{}{}",
                        d.node_id,
                        d.exit_code,
                        d.signal,
                        if d.error.is_empty() { "" } else { ": " },
                        d.error
                    );
                    self.end_launch(d.group_id, Ended::Failed(why)).await;
                    true
                } else if launch.awaiting.is_empty() {
                    self.end_launch(d.group_id, Ended::Exited).await;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A trainer's report: iterations run (final report) and jobs finished.
    fn realtime_report(&mut self, r: &pb::ReportIterTimeRequest) -> bool {
        let now = self.clock();
        let Some(launch) = self.realtime.launches.get(&r.group_id) else {
            return false;
        };
        let by_id: HashMap<u64, JobIdx> = launch
            .target
            .keys()
            .map(|&m| (self.jobs[m].spec.job_id, m))
            .collect();
        if !r.partial {
            if let Some(launch) = self.realtime.launches.get_mut(&r.group_id) {
                for (id, &n) in r.job_ids.iter().zip(&r.job_iterations) {
                    if let Some(&m) = by_id.get(id) {
                        launch.ran.insert(m, n);
                    }
                }
                launch.startup_s = Some(r.startup_s).filter(|s| s.is_finite() && *s >= 0.0);
                launch.iteration_s = r
                    .phase_iter_s
                    .first()
                    .copied()
                    .filter(|t| t.is_finite() && *t > 0.0);
            }
        }
        let finished: Vec<JobIdx> = r
            .finished_job_ids
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
        let mut any = false;
        for m in finished {
            if !self.realtime.finished.iter().any(|&(f, _)| f == m)
                && self.jobs[m].status != Status::Done
            {
                tracing::info!(job = self.jobs[m].spec.job_id, now, "reported finished");
                self.realtime.finished.push((m, now));
                any = true;
            }
        }
        any
    }

    /// Completes the jobs reported finished, at the time of their reports; their launches
    /// run on for the other members.
    fn complete_finished(&mut self) {
        let mut finished = std::mem::take(&mut self.realtime.finished);
        finished.sort_by(|a, b| a.1.total_cmp(&b.1));
        for (j, t) in finished {
            if self.jobs[j].status == Status::Done {
                continue;
            }
            self.jobs[j].remaining_iteration = 0.0;
            self.round_state().complete(&[j], t);
            tracing::info!(job = self.jobs[j].spec.job_id, now = t, "completed");
        }
        self.sync_running();
    }

    /// `running` mirrors the launches: their members that have not completed.
    fn sync_running(&mut self) {
        let jobs = &self.jobs;
        self.running = self
            .realtime
            .launches
            .values()
            .map(|l| RunningGroup {
                members: l
                    .group
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| jobs[m].status != Status::Done)
                    .collect(),
                gpus: l.group.gpus.clone(),
            })
            .filter(|g| !g.members.is_empty())
            .collect();
    }

    /// Keeps a client for the `QueryStats` of a launch's rank 0 (plaintext, with the token:
    /// the trainer serves it so).
    fn trainer_registered(&mut self, t: &pb::RegisterTrainerRequest) {
        let Some(launch) = self.realtime.launches.get_mut(&t.group_id) else {
            return;
        };
        match muri_runtime::client::connect_lazy(
            &t.addr,
            &self.cfg.token,
            &Tls::plaintext(),
            POLL_DEADLINE,
        ) {
            Ok(channel) => launch.stats = Some(TrainerClient::new(channel)),
            Err(e) => {
                tracing::warn!(launch = t.group_id, addr = %t.addr, "QueryStats client: {e:#}")
            }
        }
    }

    /// Asks every launch's rank 0 how far it got, all at once, each within
    /// [`POLL_DEADLINE`]; a failed poll is logged and leaves the last one in place. A
    /// launch whose final report came is not asked: its counts are known, and its trainer
    /// is exiting.
    async fn poll_progress(&mut self) {
        let mut polls = JoinSet::new();
        for (&id, launch) in &self.realtime.launches {
            let Some(mut client) = launch.stats.clone().filter(|_| launch.ran.is_empty()) else {
                continue;
            };
            polls.spawn(async move {
                let reply = tokio::time::timeout(
                    POLL_DEADLINE,
                    client.query_stats(pb::QueryStatsRequest {}),
                )
                .await;
                (id, reply)
            });
        }
        while let Some(joined) = polls.join_next().await {
            let Ok((id, reply)) = joined else { continue };
            match reply {
                Ok(Ok(reply)) => self.record_poll(id, &reply.into_inner()),
                Ok(Err(status)) => {
                    tracing::warn!(launch = id, "QueryStats failed: {}", status.message())
                }
                Err(_) => tracing::warn!(
                    launch = id,
                    "QueryStats: no answer within {POLL_DEADLINE:?}"
                ),
            }
        }
    }

    /// A poll's per-member counts (at most what each member runs in the launch) and its
    /// measured speed, which the members' progress is credited at until the next poll.
    fn record_poll(&mut self, id: u64, reply: &pb::QueryStatsReply) {
        let jobs = &self.jobs;
        let Some(launch) = self.realtime.launches.get_mut(&id) else {
            return;
        };
        for (job_id, &ran) in reply.job_ids.iter().zip(&reply.job_iterations) {
            let member = launch
                .target
                .iter()
                .find(|(&m, _)| jobs[m].spec.job_id == *job_id);
            if let Some((&m, &target)) = member {
                launch.polled.insert(m, ran.min(target));
            }
        }
        if reply.iteration_s.is_finite() && reply.iteration_s > 0.0 {
            launch.polled_iteration_s = Some(reply.iteration_s);
            let live: Vec<JobIdx> = launch
                .group
                .members
                .iter()
                .copied()
                .filter(|&m| jobs[m].status != Status::Done)
                .collect();
            self.measured
                .insert(live, reply.iteration_s / self.time_scale);
        }
        tracing::debug!(launch = id, polled = ?self.realtime.launches.get(&id).map(|l| &l.polled), "progress polled");
    }

    /// Iterations a running `job` ran so far in its launch, from the last poll.
    fn polled_iterations(&self, job: JobIdx) -> Option<u64> {
        self.realtime
            .launches
            .values()
            .find_map(|l| l.polled.get(&job).copied())
    }

    /// Iterations `job`'s trainers ran: its ended launches, plus the last poll of the one
    /// running it (what `--state_dir` journals).
    pub(super) fn iterations_done(&self, job: JobIdx) -> u64 {
        let ended = self.realtime.done.get(&job).copied().unwrap_or(0);
        ended + self.polled_iterations(job).unwrap_or(0)
    }

    /// Iterations `job` has left: its trace iterations less those its ended launches ran.
    pub(super) fn remaining_iterations(&self, job: JobIdx) -> u64 {
        let done = self.realtime.done.get(&job).copied().unwrap_or(0);
        self.jobs[job].spec.iterations.saturating_sub(done)
    }

    /// The round's credit estimates progress with the model; a job not running has its
    /// reported count, a running one its polled count (the model's estimate until a poll
    /// answered), and never looks done before its trainer says so.
    fn correct_remaining(&mut self) {
        let running: BTreeSet<JobIdx> = self
            .running
            .iter()
            .flat_map(|g| g.members.iter().copied())
            .collect();
        for i in 0..self.runnable.len() {
            let j = self.runnable[i];
            let left = self.remaining_iterations(j) as f64;
            let polled = self.polled_iterations(j);
            let job = &mut self.jobs[j];
            job.remaining_iteration = match (running.contains(&j), polled) {
                (true, Some(ran)) => (left - ran as f64).max(1.0_f64.min(left)),
                (true, None) => job.remaining_iteration.clamp(1.0_f64.min(left), left),
                (false, _) => left,
            };
        }
    }

    /// Kills launches the policy no longer runs as they are, then launches the new groups.
    async fn dispatch_realtime(&mut self) -> anyhow::Result<()> {
        let alive = self.alive_nodes();
        let planned: Vec<RunningGroup> = self
            .planned_groups(&alive)
            .into_iter()
            .map(|mut g| {
                let jobs = &self.jobs;
                g.members.retain(|&m| jobs[m].status != Status::Done);
                g
            })
            .filter(|g| !g.members.is_empty())
            .collect();
        // A launch whose unfinished members the policy no longer runs, as they are and
        // where they are, is killed (a launch whose members all finished exits by itself).
        let jobs = &self.jobs;
        let stale: Vec<u64> = self
            .realtime
            .launches
            .iter()
            .filter(|(_, l)| {
                let live = RunningGroup {
                    members: l
                        .group
                        .members
                        .iter()
                        .copied()
                        .filter(|&m| jobs[m].status != Status::Done)
                        .collect(),
                    gpus: l.group.gpus.clone(),
                };
                !live.members.is_empty() && !planned.contains(&live)
            })
            .map(|(&id, _)| id)
            .collect();
        self.preempt_launches(&stale).await;
        self.sync_running();
        let to_launch: Vec<RunningGroup> = planned
            .into_iter()
            .filter(|g| !self.running.contains(g))
            .filter(|g| g.members.iter().all(|&m| self.remaining_iterations(m) > 0))
            .collect();
        for group in to_launch {
            self.start_launch(group).await?;
        }
        self.sync_running();
        Ok(())
    }

    /// Kills launches on all their nodes at once; each trainer drains and reports what it
    /// ran before it exits (a Kill returns once the processes are gone), so the reports are
    /// in the event queue when the kills return.
    async fn preempt_launches(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut kills = JoinSet::new();
        for id in ids {
            if let Some(l) = self.realtime.launches.get(id) {
                for (node, _) in &l.group.gpus {
                    if let Some(client) = self.worker_client(*node) {
                        kills.spawn(super::kill_group(client, *node, *id, self.rpc_deadline()));
                    }
                }
            }
        }
        while kills.join_next().await.is_some() {}
        while let Ok(event) = self.events.try_recv() {
            Box::pin(self.realtime_event(event)).await;
        }
        for &id in ids {
            if self.realtime.launches.contains_key(&id) {
                self.end_launch(id, Ended::Preempted).await;
            }
        }
    }

    /// Journals the launch (with `--state_dir`), then sends the group's Execute to every
    /// node of it; the launch runs until its processes exit or a round kills it.
    async fn start_launch(&mut self, group: RunningGroup) -> anyhow::Result<()> {
        let id = self.next_group_id;
        self.next_group_id += 1;
        self.launches += 1;
        let at = (self.now, self.started.elapsed().as_secs_f64());
        self.journal_launch(id, &group, at)?;
        let req = self.execute_request(id, &group);
        let target = group
            .members
            .iter()
            .map(|&m| (m, self.remaining_iterations(m)))
            .collect();
        self.realtime.launches.insert(
            id,
            Launch {
                group: group.clone(),
                awaiting: BTreeSet::new(),
                target,
                ran: HashMap::new(),
                at,
                startup_s: None,
                iteration_s: None,
                stats: None,
                polled: HashMap::new(),
                polled_iteration_s: None,
            },
        );
        let mut calls = JoinSet::new();
        for (node, _) in &group.gpus {
            let Some(mut client) = self.worker_client(*node) else {
                self.end_launch(id, Ended::Lost(format!("worker {node} is gone")))
                    .await;
                return Ok(());
            };
            let (req, node) = (req.clone(), *node);
            calls.spawn(async move { (node, client.execute(req).await) });
        }
        let mut failure = None;
        while let Some(joined) = calls.join_next().await {
            let Ok((node, result)) = joined else { continue };
            match result {
                Ok(reply) if reply.get_ref().local_processes > 0 => {
                    if let Some(l) = self.realtime.launches.get_mut(&id) {
                        l.awaiting.insert(node);
                    }
                }
                Ok(_) => {}
                Err(status) => {
                    let why = format!("node {node}: Execute refused: {}", status.message());
                    failure.get_or_insert(if status.code() == tonic::Code::Unavailable {
                        Ended::Lost(why)
                    } else {
                        Ended::Failed(why)
                    });
                }
            }
        }
        let started_nothing = self
            .realtime
            .launches
            .get(&id)
            .is_some_and(|l| l.awaiting.is_empty());
        if let Some(how) = failure {
            self.end_launch(id, how).await;
        } else if started_nothing {
            self.end_launch(id, Ended::Failed("no node started a process".into()))
                .await;
        }
        Ok(())
    }

    /// Launches with a node whose worker is gone end, and their other nodes' ranks are
    /// killed.
    async fn end_lost_launches(&mut self) {
        let alive = self.alive_nodes();
        let lost: Vec<(u64, u32)> = self
            .realtime
            .launches
            .iter()
            .filter_map(|(&id, l)| {
                let node = l.group.gpus.iter().find(|(n, _)| !alive.contains(n))?;
                Some((id, node.0))
            })
            .collect();
        for (id, node) in lost {
            self.end_launch(id, Ended::Lost(format!("worker {node} died")))
                .await;
        }
    }

    fn launch_on_lost_node(&self) -> bool {
        let alive = self.alive_nodes();
        self.realtime
            .launches
            .values()
            .any(|l| l.group.gpus.iter().any(|(n, _)| !alive.contains(n)))
    }

    /// Books a launch's end: the iterations its members ran carry over, members that did
    /// not finish are retried (failure), counted an attempt (lost) or simply wait for the
    /// next round (preempted), and the launch becomes a row of launches.csv. A launch that
    /// did not end by itself is killed on every node it still has.
    async fn end_launch(&mut self, id: u64, how: Ended) {
        let Some(launch) = self.realtime.launches.remove(&id) else {
            return;
        };
        if matches!(how, Ended::Failed(_) | Ended::Lost(_)) {
            let nodes: Vec<u32> = launch.group.gpus.iter().map(|(n, _)| *n).collect();
            self.kill_launch(&nodes, id).await;
        }
        // A preempted launch without a final report drained and checkpointed all the same:
        // it carries its last polled counts. A failed or lost one may not have saved its
        // state, so only a report counts there.
        let polled = matches!(how, Ended::Preempted).then_some(&launch.polled);
        for (&m, &target) in &launch.target {
            let ran = launch
                .ran
                .get(&m)
                .or(polled.and_then(|p| p.get(&m)))
                .copied()
                .unwrap_or(0)
                .min(target);
            *self.realtime.done.entry(m).or_insert(0) += ran;
            if self.jobs[m].status != Status::Done {
                self.jobs[m].remaining_iteration = self.remaining_iterations(m) as f64;
            }
        }
        let unfinished: Vec<JobIdx> = launch
            .group
            .members
            .iter()
            .copied()
            .filter(|&m| self.jobs[m].status != Status::Done)
            .filter(|&m| !self.realtime.finished.iter().any(|&(f, _)| f == m))
            .collect();
        let short = RunningGroup {
            members: unfinished.clone(),
            gpus: launch.group.gpus.clone(),
        };
        let status = match &how {
            Ended::Exited if unfinished.is_empty() => "ok".to_string(),
            Ended::Exited => {
                let why = "exited before its iterations were done";
                self.trainer_failed(&short, why);
                format!("failed: {why}")
            }
            Ended::Preempted => {
                if launch.ran.is_empty() {
                    tracing::warn!(
                        launch = id,
                        polled = ?launch.polled,
                        "preempted launch sent no final report: it keeps its last polled progress"
                    );
                }
                "preempted".to_string()
            }
            Ended::Failed(why) => {
                tracing::warn!(launch = id, jobs = ?self.ids(&unfinished), "launch failed: {why}");
                self.trainer_failed(&short, why);
                format!("failed: {why}")
            }
            Ended::Lost(why) => {
                tracing::warn!(launch = id, jobs = ?self.ids(&unfinished), "launch lost: {why}");
                self.launch_lost(&short, why);
                format!("lost: {why}")
            }
        };
        if matches!(how, Ended::Exited) && unfinished.is_empty() {
            for &m in &launch.group.members {
                self.extra[m].attempts = 0;
            }
        }
        let ran: Vec<u64> = launch
            .group
            .members
            .iter()
            .map(|m| launch.ran.get(m).copied().unwrap_or(0))
            .collect();
        tracing::info!(
            launch = id,
            jobs = ?self.ids(&launch.group.members),
            iterations = ?ran,
            %status,
            "launch ended"
        );
        let row = self.realtime_launch_row(id, &launch, status);
        if let Err(e) = self.journal_launch_rows(std::slice::from_ref(&row)) {
            tracing::error!("journaling launch {id}'s end: {e:#}");
        }
        if let Err(e) = self.append_launch_rows(&[row]) {
            tracing::error!("launches.csv: {e:#}");
        }
        self.sync_running();
    }

    fn realtime_launch_row(&self, id: u64, launch: &Launch, status: String) -> LaunchRow {
        let group = &launch.group;
        LaunchRow {
            launch_id: id,
            virtual_time: launch.at.0,
            wall_time: launch.at.1,
            job_ids: self.ids(&group.members),
            nodes: group.gpus.iter().map(|(n, _)| *n).collect(),
            hosts: group
                .gpus
                .iter()
                .map(|(n, _)| self.worker_ip(*n).unwrap_or_else(|| "?".into()))
                .collect(),
            ranks: group.gpus.iter().map(|(_, g)| g.len()).collect(),
            status,
            startup_s: launch.startup_s,
            iteration_s: launch.iteration_s.or(launch.polled_iteration_s),
            sample_window: None,
        }
    }
}
