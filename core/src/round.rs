//! One scheduling round, shared by the simulator (`muri::engine`) and the testbed
//! (`muri::testbed::scheduler`).
//!
//! A round at time `now` is: take the event due now (complete the jobs whose end it is, admit
//! the arrivals), credit progress, run the policy on an empty cluster, apply the state
//! transitions, ask the policy for its next wake-up and predict the next completions. The
//! drivers differ only in their clock (the simulator jumps from event to event; the testbed
//! adds retries and an interval tick) and in their executor (the simulator trusts the
//! interleaving model; the testbed launches trainers between [`Round::schedule`] and
//! [`Round::transitions`]). Keeping the round here is what makes `muri simulate
//! --decisions` and `muri scheduler --executor model --decisions` produce the same log.
//!
//! The reference's event semantics live here too (how arrivals and predicted ends become
//! events, how they tie, when overhead is charged); they decide fidelity, so arithmetic and
//! evaluation order must not be "simplified".

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::cluster::Cluster;
use crate::float::{isclose, isclose_rel};
use crate::job::{Job, JobIdx, Status};
use crate::policy::{EndEventRule, Policy, SchedulingContext, TieRule};
use crate::record::{ClusterRecord, JobRecord};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Start,
    End,
    Wakeup,
}

/// The pending events of a run: arrivals (start events), the next predicted completion
/// (end event) and the policy's wake-up.
#[derive(Debug, Default)]
pub struct EventQueue {
    starts: VecDeque<StartEvent>,
    next_end: Option<EndEvent>,
    wakeup: Option<f64>,
}

impl EventQueue {
    /// Start events for every job of `jobs`, grouped as the reference groups arrivals (a job
    /// joins the first event within rel 1e-9 of its submit time).
    pub fn new(jobs: &[Job]) -> EventQueue {
        let mut queue = EventQueue::default();
        for job in jobs {
            queue.push_arrival(job);
        }
        queue
            .starts
            .make_contiguous()
            .sort_by(|a, b| a.time.total_cmp(&b.time));
        queue
    }

    /// Adds a job that arrives later (an online submission): it joins a close start event
    /// or gets its own, in time order.
    pub fn add_arrival(&mut self, job: &Job) {
        let t = job.spec.submit_time;
        match first_close_event(&self.starts, t) {
            Some(k) => self.starts[k].jobs.push(job.idx),
            None => {
                let at = self.starts.partition_point(|e| e.time <= t);
                self.starts.insert(
                    at,
                    StartEvent {
                        time: t,
                        jobs: vec![job.idx],
                        attached_end: None,
                    },
                );
            }
        }
    }

    fn push_arrival(&mut self, job: &Job) {
        let t = job.spec.submit_time;
        match first_close_event(&self.starts, t) {
            Some(k) => self.starts[k].jobs.push(job.idx),
            None => self.starts.push_back(StartEvent {
                time: t,
                jobs: vec![job.idx],
                attached_end: None,
            }),
        }
    }

    /// Forgets a job that will never complete (cancelled or failed).
    pub fn remove_job(&mut self, j: JobIdx) {
        for event in &mut self.starts {
            event.jobs.retain(|&m| m != j);
            if let Some(ends) = &mut event.attached_end {
                ends.retain(|&m| m != j);
            }
        }
        self.starts
            .retain(|e| !e.jobs.is_empty() || e.attached_end.is_some());
        if let Some(end) = &mut self.next_end {
            end.jobs.retain(|&m| m != j);
            if end.jobs.is_empty() {
                self.next_end = None;
            }
        }
    }

    /// Submit time of the next arrival.
    pub fn next_arrival(&self) -> Option<f64> {
        self.starts.front().map(|e| e.time)
    }

    /// The policy's wake-up, as its last round named it.
    pub fn wakeup(&self) -> Option<f64> {
        self.wakeup
    }

    /// Jobs that have not arrived yet remain.
    pub fn has_arrivals(&self) -> bool {
        !self.starts.is_empty()
    }

    /// Time of the next event (arrival, predicted completion, or a wake-up before them);
    /// `None` when neither an arrival nor a completion is pending.
    pub fn next_time(&self, policy: &dyn Policy) -> Option<f64> {
        self.choose_next(policy.tie_rule()).map(|(_, t)| t)
    }

    /// Which event comes next, following the policy's tie rule.
    fn choose_next(&self, rule: TieRule) -> Option<(Next, f64)> {
        let start = self.starts.front().map(|e| e.time);
        let end = self.next_end.as_ref().map(|e| e.time);
        let (next, time) = match (start, end) {
            (Some(s), None) => (Next::Start, s),
            (None, Some(e)) => (Next::End, e),
            (Some(s), Some(e)) => {
                if ties(rule, s, e) || s < e {
                    (Next::Start, s)
                } else {
                    (Next::End, e)
                }
            }
            (None, None) => return None,
        };
        match self.wakeup {
            Some(w) if time > w => Some((Next::Wakeup, w)),
            _ => Some((next, time)),
        }
    }
}

fn ties(rule: TieRule, start: f64, end: f64) -> bool {
    match rule {
        TieRule::Exact => start == end,
        TieRule::Close => isclose(end, start, 1e-9, 1e-4),
    }
}

/// What one round reads and changes, borrowed from its driver.
pub struct Round<'a> {
    pub jobs: &'a mut [Job],
    /// Arrived, unfinished jobs, in the order the policy left them.
    pub runnable: &'a mut Vec<JobIdx>,
    pub policy: &'a mut dyn Policy,
    pub events: &'a mut EventQueue,
    /// `job.csv` rows, in completion order.
    pub records: &'a mut Vec<JobRecord>,
    /// The decision log, when one is kept.
    pub decisions: Option<&'a mut DecisionLog>,
}

impl Round<'_> {
    /// Takes the event due at `now`, if any: completes the jobs whose end it is and admits
    /// its arrivals. Returns false when the next event is later (the testbed's retries and
    /// ticks run rounds between events).
    pub fn open(&mut self, now: f64) -> bool {
        let rule = self.policy.tie_rule();
        let chosen = self.events.choose_next(rule);
        // A start/end tie attaches the end jobs to the start event before a wake-up can
        // pre-empt it (the reference mutates the start event the same way).
        if let (Some(start), Some(end)) = (self.events.starts.front_mut(), &self.events.next_end) {
            if ties(rule, start.time, end.time) {
                start.attached_end = Some(end.jobs.clone());
            }
        }
        match chosen {
            Some((Next::End, t)) if t <= now => {
                let end = self.events.next_end.take().expect("end event chosen");
                self.complete(&end.jobs, now);
                true
            }
            Some((Next::Start, t)) if t <= now => {
                let event = self.events.starts.pop_front().expect("start event chosen");
                if let Some(ends) = &event.attached_end {
                    self.complete(ends, now);
                }
                for &j in &event.jobs {
                    self.admit(j);
                }
                true
            }
            Some((Next::Wakeup, t)) => t <= now,
            _ => false,
        }
    }

    /// Admits every arrival due by `now`, for a driver whose jobs complete on reports
    /// from their trainers instead of on predicted end events (the real-time testbed).
    pub fn admit_due(&mut self, now: f64) {
        while self.events.next_arrival().is_some_and(|t| t <= now) {
            if let Some(event) = self.events.starts.pop_front() {
                for &j in &event.jobs {
                    self.admit(j);
                }
            }
        }
    }

    /// Completes `ends` at `now`: records them and takes them out of the runnable jobs.
    pub fn complete(&mut self, ends: &[JobIdx], now: f64) {
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
            if let Some(log) = self.decisions.as_deref_mut() {
                log.finish(now, job);
            }
        }
        let jobs = &*self.jobs;
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
    pub fn credit(&mut self, now: f64) {
        credit_progress(self.jobs, self.runnable, self.policy, now);
    }

    /// Runs the policy on `cluster`, emptied first, after clearing every runnable job's
    /// placement and group.
    pub fn schedule(&mut self, now: f64, cluster: &mut Cluster) {
        for &j in self.runnable.iter() {
            self.jobs[j].placement = None;
            self.jobs[j].group.clear();
        }
        cluster.empty();
        let mut ctx = SchedulingContext {
            now,
            jobs: self.jobs,
            runnable: self.runnable,
            cluster,
        };
        self.policy.schedule(&mut ctx);
    }

    /// Placed pending jobs start (or resume), unplaced running ones are preempted; then the
    /// policy names its next wake-up and the decision log records what changed. `nodes` maps
    /// the policy's node index to the node id written in the log (`None`: the same).
    pub fn transitions(&mut self, now: f64, nodes: Option<&[u32]>) {
        for &j in self.runnable.iter() {
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
        self.events.wakeup = self.policy.next_wakeup(now, self.jobs, self.runnable);
        if let Some(log) = self.decisions.as_deref_mut() {
            log.record(now, self.jobs, self.runnable, nodes);
        }
    }

    /// Rebuilds the next end event from the running jobs' predicted completions.
    ///
    /// Fails only where the policy reproduces a reference failure
    /// ([`EndEventRule::ReferenceAntMan`]).
    pub fn predict_ends(&mut self, now: f64) -> Result<(), SimulationError> {
        let jobs = &*self.jobs;
        let running = self
            .runnable
            .iter()
            .copied()
            .filter(|&j| jobs[j].is_running());
        let ends = running.map(|j| (j, now + jobs[j].time_to_finish()));
        self.events.next_end = match self.policy.end_event_rule() {
            EndEventRule::EarliestOnly => earliest_only(ends),
            EndEventRule::Coalesced => earliest_coalesced(ends.collect()),
            EndEventRule::MergedWithin1e4 => merged_within(ends.collect(), 1e-4),
            EndEventRule::ReferenceAntMan => {
                merged_in_place(ends.collect(), 1e-4).map_err(|merged| {
                    SimulationError::ReferenceIndexError {
                        policy: self.policy.name().to_string(),
                        now,
                        first_end: merged.time,
                        jobs: merged.jobs.iter().map(|&j| jobs[j].spec.job_id).collect(),
                    }
                })?
            }
        };
        Ok(())
    }

    /// Rebuilds what a round leaves for the next (the policy's wake-up, the next end
    /// event) from restored job state: a testbed scheduler resuming from its journal.
    pub fn resume(&mut self, now: f64) -> Result<(), SimulationError> {
        self.events.wakeup = self.policy.next_wakeup(now, self.jobs, self.runnable);
        self.predict_ends(now)
    }

    /// The `cluster.csv` row after this round.
    pub fn cluster_row(&self, now: f64, total_gpus: u32) -> ClusterRecord {
        cluster_record(
            self.jobs,
            self.runnable,
            self.records.len(),
            total_gpus,
            now,
        )
    }
}

/// Credits every RUNNING job in `runnable` with progress for the interval since its last
/// check, minus its restart overhead (the reference's model; the last interval before a
/// completion is never charged because completions do not call this), and PENDING jobs with
/// pending time.
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

/// The reference AntMan's end events: each end joins the first event within rel 1e-9, the
/// events are stably sorted by time, and then
/// `for i in range(1, n): if isclose(e[0], e[i], abs_tol=tol): merge e[i] into e[0]; del e[i]`
/// runs with `n` fixed, so after a deletion it skips an event, and it reads past the list's
/// end (IndexError) unless the deletion was at the last index. Returns the first event, or
/// as `Err` the first event with what had been merged into it when the loop would fail.
fn merged_in_place(ends: Vec<(JobIdx, f64)>, tol: f64) -> Result<Option<EndEvent>, EndEvent> {
    let mut events: Vec<EndEvent> = Vec::new();
    for (j, t) in ends {
        match events.iter_mut().find(|e| isclose_rel(e.time, t, 1e-9)) {
            Some(e) => e.jobs.push(j),
            None => events.push(EndEvent {
                time: t,
                jobs: vec![j],
            }),
        }
    }
    events.sort_by(|a, b| a.time.total_cmp(&b.time));
    let n = events.len();
    for i in 1..n {
        if i >= events.len() {
            return Err(events.swap_remove(0));
        }
        if isclose(events[0].time, events[i].time, 1e-9, tol) {
            let merged = events.remove(i);
            events[0].jobs.extend(merged.jobs);
        }
    }
    Ok(events.into_iter().next())
}

/// Why a simulation stopped before its end.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulationError {
    /// The reference AntMan's end-event merge would raise IndexError here: it deletes a
    /// merged event from the list it is indexing and then reads past the shortened end.
    #[error(
        "{policy}: at t = {now} s the predicted ends of jobs {jobs:?} fall within 1e-4 s of the \
         earliest ({first_end} s); the reference simulator's end-event merge raises IndexError \
         here (it deletes list items while indexing them), so this run has no reference result \
         (antman-fixed merges them and runs on)"
    )]
    ReferenceIndexError {
        policy: String,
        now: f64,
        first_end: f64,
        /// Trace job ids of the merged ends, the earliest first.
        jobs: Vec<u64>,
    },
}

// ---- the decision log --------------------------------------------------------------------

/// Header of a decision log (`--decisions FILE`).
pub const DECISIONS_HEADER: &str = "time,job_id,action,group_id,nodes,num_gpu";

/// What happened to a job in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It runs and did not before.
    Start,
    /// It ran and is preempted.
    Stop,
    /// It keeps running, in another group or on other nodes.
    Regroup,
    /// It completed.
    Finish,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Regroup => "regroup",
            Action::Finish => "finish",
        }
    }
}

/// Where a job runs: its group's id and node ids.
#[derive(Debug, Clone, PartialEq)]
struct Assignment {
    group: u64,
    nodes: Vec<u32>,
}

/// A group's identity: its members (sorted) and its placement. A group keeps its id from
/// round to round while both stay the same.
type GroupKey = (Vec<JobIdx>, Vec<(u32, u32)>);

/// One line per decision: job starts, stops, regroupings and completions, in round order
/// (completions first, then the round's transitions by job id). Two drivers that run the
/// same rounds write the same log, so `muri diff` of two logs checks that they do.
#[derive(Debug, Clone, Default)]
pub struct DecisionLog {
    groups: HashMap<GroupKey, u64>,
    assigned: HashMap<JobIdx, Assignment>,
    next_group: u64,
    text: String,
    lines: usize,
}

impl DecisionLog {
    pub fn new() -> DecisionLog {
        DecisionLog {
            next_group: 1,
            ..DecisionLog::default()
        }
    }

    /// Decisions written so far.
    pub fn len(&self) -> usize {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The log as CSV, header included.
    pub fn to_csv(&self) -> String {
        format!("{DECISIONS_HEADER}\n{}", self.text)
    }

    /// Writes the log to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_csv())
            .with_context(|| format!("writing the decision log {}", path.display()))
    }

    fn push(&mut self, now: f64, job: &Job, action: Action, at: &Assignment) {
        let nodes: Vec<String> = at.nodes.iter().map(u32::to_string).collect();
        let _ = writeln!(
            self.text,
            "{now:?},{},{},{},{},{}",
            job.spec.job_id,
            action.as_str(),
            at.group,
            nodes.join("+"),
            job.num_gpu()
        );
        self.lines += 1;
    }

    /// A job completed at `now` (in its last group).
    fn finish(&mut self, now: f64, job: &Job) {
        let at = self.assigned.remove(&job.idx).unwrap_or(Assignment {
            group: 0,
            nodes: Vec::new(),
        });
        self.push(now, job, Action::Finish, &at);
    }

    /// Compares the running groups after a round's transitions with the previous round's
    /// and logs every job whose group changed.
    fn record(&mut self, now: f64, jobs: &[Job], runnable: &[JobIdx], nodes: Option<&[u32]>) {
        let mut groups: HashMap<GroupKey, u64> = HashMap::new();
        let mut assigned: HashMap<JobIdx, Assignment> = HashMap::new();
        for &j in runnable {
            let job = &jobs[j];
            if !job.is_running() || assigned.contains_key(&j) {
                continue;
            }
            let Some(placement) = &job.placement else {
                continue;
            };
            let mut members: Vec<JobIdx> = std::iter::once(j)
                .chain(job.group.iter().copied().filter(|&m| jobs[m].is_running()))
                .collect();
            members.sort_unstable();
            members.dedup();
            let shares = placement.shares.iter().map(|s| (s.node, s.gpus)).collect();
            let key = (members, shares);
            let id = match self.groups.get(&key) {
                Some(&id) => id,
                None => {
                    self.next_group += 1;
                    self.next_group - 1
                }
            };
            let node_ids = placement
                .shares
                .iter()
                .map(|s| {
                    nodes
                        .and_then(|n| n.get(s.node as usize).copied())
                        .unwrap_or(s.node)
                })
                .collect::<Vec<u32>>();
            for &m in &key.0 {
                assigned.insert(
                    m,
                    Assignment {
                        group: id,
                        nodes: node_ids.clone(),
                    },
                );
            }
            groups.insert(key, id);
        }
        let mut touched: Vec<JobIdx> = self
            .assigned
            .keys()
            .chain(assigned.keys())
            .copied()
            .collect();
        touched.sort_unstable_by_key(|&j| (jobs[j].spec.job_id, j));
        touched.dedup();
        for j in touched {
            let old = self.assigned.get(&j).cloned();
            match (old, assigned.get(&j)) {
                (None, Some(new)) => self.push(now, &jobs[j], Action::Start, new),
                (Some(old), None) => self.push(now, &jobs[j], Action::Stop, &old),
                (Some(old), Some(new)) if old != *new => {
                    self.push(now, &jobs[j], Action::Regroup, new)
                }
                _ => {}
            }
        }
        self.groups = groups;
        self.assigned = assigned;
    }
}

/// The first difference between two decision logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstDifference {
    /// 1-based line number (the header is line 1).
    pub line: usize,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// Compares two decision logs line by line (line ends and trailing blanks ignored).
pub fn first_difference(left: &str, right: &str) -> Option<FirstDifference> {
    let mut a = left.lines().map(str::trim_end);
    let mut b = right.lines().map(str::trim_end);
    let mut line = 0;
    loop {
        line += 1;
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                return Some(FirstDifference {
                    line,
                    left: x.map(str::to_string),
                    right: y.map(str::to_string),
                })
            }
        }
    }
}
