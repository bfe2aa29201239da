//! The scheduler's side of `--state_dir`: what a round, a launch and its outcome journal,
//! and how a restarted scheduler resumes from the journal (see [`crate::testbed::journal`]).
//!
//! Resuming restores the job table as the last journaled round left it (finished jobs stay
//! finished with their end times, progress and measured group speeds are kept, the virtual
//! clock goes on from that round), appends the log rows the crash kept from reaching
//! `job.csv`, `cluster.csv` and `launches.csv`, and kills every launch that was sent but
//! whose outcome was not journaled on each of its nodes as its worker registers again: its
//! jobs stay where the last round left them and run again at the next round. In real time
//! (`--fast_forwarding 0`) each job's journal entry also holds the iterations its trainers
//! ran (reports and polls), and the relaunched jobs run only the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinSet;

use super::{
    kill_group, Executor, JobExtra, LaunchOutcome, LaunchRow, RunningGroup, Submission, Testbed,
};
use crate::engine::JobRecord;
use crate::job::{Job, JobIdx, Status};
use crate::output::{self, JOB_HEADER};
use crate::round::EventQueue;
use crate::runinfo::sha256_hex;
use crate::testbed::journal::{
    AppendCsv, GroupState, Header, JobState, Journal, OnlineJob, OpenLaunch, RoundView, State,
};
use crate::testbed::measure;

impl Testbed {
    /// Opens the logs, and with `--state_dir` the journal: a directory holding a run
    /// resumes it, a new one starts journaling this run.
    pub(super) fn open_state(&mut self) -> anyhow::Result<()> {
        let dir = self.cfg.log_path.clone();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let Some(state_dir) = self.cfg.state_dir.clone() else {
            return self.create_logs();
        };
        let started = Instant::now();
        let opened = Journal::open(&state_dir, &self.header())?;
        self.journal = Some(opened.journal);
        let Some(state) = opened.resumed else {
            return self.create_logs();
        };
        if state.now().is_some() {
            self.restore(&state)?;
        } else {
            // Died in its first round: nothing but its launches to clean up (and their ids
            // not to reuse).
            self.create_logs()?;
            self.next_group_id = state.next_launch_id.max(1);
        }
        self.reopen_logs(&state)?;
        let (records, bytes) = opened.replayed;
        let finished = self
            .jobs
            .iter()
            .filter(|j| j.status == Status::Done)
            .count();
        tracing::info!(
            state_dir = %state_dir.display(),
            now = self.now,
            finished,
            jobs = self.jobs.len(),
            journal_records = records,
            journal_bytes = bytes,
            orphaned_launches = self.orphans.len(),
            resume_ms = started.elapsed().as_secs_f64() * 1e3,
            "resumed from the journal"
        );
        eprintln!(
            "resumed from {} at t={:.0}: {finished} of {} jobs finished, {} launches to kill, read in {:.0} ms",
            state_dir.display(),
            self.now,
            self.jobs.len(),
            self.orphans.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// What this run is: a state directory only resumes a run of the same inputs, and in
    /// the same clock mode (a real-time run's jobs carry counts a fast-forward one lacks).
    fn header(&self) -> Header {
        let trace = self
            .cfg
            .trace
            .as_ref()
            .map(|t| sha256_hex(format!("{:?}", t.jobs).as_bytes()))
            .unwrap_or_default();
        Header::new(
            trace,
            format!("{:?}", self.cfg.spec),
            self.cfg.policy.clone(),
            format!("{:?}", self.cfg.opts),
            match (self.cfg.executor, self.cfg.fast_forwarding) {
                (Executor::Trainers, 0) => "Trainers in real time".to_string(),
                (executor, _) => format!("{executor:?}"),
            },
        )
    }

    fn create_logs(&mut self) -> anyhow::Result<()> {
        let dir = &self.cfg.log_path;
        self.job_csv = Some(AppendCsv::create(&dir.join("job.csv"), JOB_HEADER)?);
        self.cluster_csv = Some(AppendCsv::create(
            &dir.join("cluster.csv"),
            &measure::cluster_csv_header(),
        )?);
        Ok(())
    }

    /// Jobs in the trace; online submissions follow them in the job table.
    fn trace_jobs(&self) -> usize {
        self.cfg.trace.as_ref().map_or(0, |t| t.jobs.len())
    }

    /// The job table and queues as the last journaled round left them.
    fn restore(&mut self, state: &State) -> anyhow::Result<()> {
        for o in &state.online {
            let sub = Submission {
                job_id: o.job_id,
                model: o.model.clone(),
                num_gpu: o.num_gpu,
                iterations: o.iterations,
            };
            anyhow::ensure!(
                self.add_online_job(&sub, o.submit_time.into()),
                "the journal's online job {} (model {}) has no profile",
                o.job_id,
                o.model
            );
        }
        anyhow::ensure!(
            state.jobs.len() == self.jobs.len(),
            "the journal has {} jobs, the trace and its submissions {}",
            state.jobs.len(),
            self.jobs.len()
        );
        for (job, (saved, extra)) in self
            .jobs
            .iter_mut()
            .zip(state.jobs.iter().zip(self.extra.iter_mut()))
        {
            saved.restore(job);
            self.realtime
                .resume_iterations(job.idx, saved.iterations_done);
            *extra = JobExtra {
                attempts: saved.attempts,
                failed: saved.failed,
                cancelled: saved.cancelled,
                error: saved.error.clone(),
            };
        }
        let next_id = self
            .jobs
            .iter()
            .map(|j| j.spec.job_id + 1)
            .max()
            .unwrap_or(0);
        self.shared.next_job_id.fetch_max(next_id, Ordering::SeqCst);
        self.now = state.now().unwrap_or(0.0);
        self.rounds = state.rounds;
        self.launches = state.launches;
        self.next_group_id = state.next_launch_id.max(1);
        self.runnable = state.runnable.clone();
        self.held = state.held.iter().map(|&(j, t)| (j, t.into())).collect();
        self.running = state
            .running
            .iter()
            .map(|g| RunningGroup {
                members: g.members.clone(),
                gpus: g.gpus.clone(),
            })
            .collect();
        self.measured = state
            .measured
            .iter()
            .map(|(m, t)| (m.clone(), (*t).into()))
            .collect();
        self.startup_seen = state
            .startup_seen
            .iter()
            .map(|(m, t)| (m.clone(), (*t).into()))
            .collect();
        let by_id: HashMap<u64, JobIdx> =
            self.jobs.iter().map(|j| (j.spec.job_id, j.idx)).collect();
        self.records = state
            .completed
            .iter()
            .filter_map(|id| by_id.get(id))
            .map(|&j| JobRecord::finished(&self.jobs[j], self.jobs[j].end_time.unwrap_or(0.0)))
            .collect();
        self.cluster_lines = state.cluster_lines();
        self.rebuild_queue(state)?;
        self.resumed = true;
        Ok(())
    }

    /// Arrivals still to come, the policy told of the arrived unfinished jobs (its own
    /// bookkeeping starts afresh), and the next end event and wake-up.
    fn rebuild_queue(&mut self, state: &State) -> anyhow::Result<()> {
        let arrived: HashSet<JobIdx> = self
            .runnable
            .iter()
            .copied()
            .chain(self.held.iter().map(|&(j, _)| j))
            .collect();
        let to_come: Vec<Job> = self
            .jobs
            .iter()
            .filter(|j| j.status == Status::Pending && !arrived.contains(&j.idx))
            .cloned()
            .collect();
        self.queue = EventQueue::new(&to_come);
        let mut told: Vec<JobIdx> = arrived.into_iter().collect();
        told.sort_unstable();
        for j in told {
            self.policy.on_arrival(&mut self.jobs[j]);
            state.jobs[j].restore(&mut self.jobs[j]);
        }
        let now = self.now;
        self.round_state()
            .resume(now)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Appends the rows the journal holds and the logs lack, and records the launches
    /// whose outcome the crash lost (to be killed on their nodes).
    fn reopen_logs(&mut self, state: &State) -> anyhow::Result<()> {
        let dir = self.cfg.log_path.clone();
        if self.resumed {
            let (mut jobs, rows) =
                AppendCsv::resume(&dir.join("job.csv"), JOB_HEADER, self.records.len())?;
            let lines: Vec<String> = self
                .records
                .get(rows.len()..)
                .unwrap_or_default()
                .iter()
                .map(output::job_csv_line)
                .collect();
            jobs.append(&lines)?;
            self.job_csv = Some(jobs);
            let (mut cluster, rows) = AppendCsv::resume(
                &dir.join("cluster.csv"),
                &measure::cluster_csv_header(),
                self.cluster_lines.len(),
            )?;
            cluster.append(self.cluster_lines.get(rows.len()..).unwrap_or_default())?;
            self.cluster_csv = Some(cluster);
        }
        let header = LaunchRow::HEADER.trim_end();
        let (mut launches, rows) =
            AppendCsv::resume(&dir.join("launches.csv"), header, usize::MAX)?;
        let written: HashSet<u64> = rows
            .iter()
            .filter_map(|r| r.split(',').next()?.parse().ok())
            .collect();
        let missing: Vec<String> = state
            .launch_rows
            .iter()
            .filter(|(id, _)| !written.contains(id))
            .map(|(_, row)| row.clone())
            .collect();
        launches.append(&missing)?;
        for (&id, open) in &state.open_launches {
            if let Some(journal) = &mut self.journal {
                journal.launch_ended(id, open.lost_row.clone())?;
            }
            if !written.contains(&id) {
                launches.append(std::slice::from_ref(&open.lost_row))?;
            }
            tracing::warn!(launch = id, nodes = ?open.nodes, "launch lost with the scheduler: killing it");
            self.orphans.insert(id, open.nodes.clone());
        }
        self.launch_log = Some(launches);
        Ok(())
    }

    /// Kills the launches lost with the previous scheduler on every node whose worker has
    /// registered; the others wait for their worker.
    pub(super) async fn kill_orphans(&mut self) {
        if self.orphans.is_empty() {
            return;
        }
        let mut kills = JoinSet::new();
        let mut left = BTreeMap::new();
        for (id, nodes) in std::mem::take(&mut self.orphans) {
            let mut waiting = Vec::new();
            for node in nodes {
                match self.worker_client(node) {
                    Some(client) => {
                        kills.spawn(kill_group(client, node, id, self.rpc_deadline()));
                    }
                    None => waiting.push(node),
                }
            }
            if !waiting.is_empty() {
                left.insert(id, waiting);
            }
        }
        self.orphans = left;
        while kills.join_next().await.is_some() {}
    }

    /// Journals a launch before its Execute goes out, with the row it gets if the scheduler
    /// dies before its outcome is known.
    pub(super) fn journal_launch(
        &mut self,
        id: u64,
        group: &RunningGroup,
        launched_at: (f64, f64),
    ) -> anyhow::Result<()> {
        if self.journal.is_none() {
            return Ok(());
        }
        let lost = LaunchOutcome::Lost("scheduler restarted".into());
        let lost_row = self
            .launch_row(id, group, &lost, None, launched_at)
            .to_csv();
        let nodes = group.gpus.iter().map(|(n, _)| *n).collect();
        if let Some(journal) = &mut self.journal {
            journal.launch(id, OpenLaunch { nodes, lost_row })?;
        }
        Ok(())
    }

    /// Journals launch outcomes (their `launches.csv` rows) before the rows are written.
    pub(super) fn journal_launch_rows(&mut self, rows: &[LaunchRow]) -> anyhow::Result<()> {
        if let Some(journal) = &mut self.journal {
            for row in rows {
                journal.launch_ended(row.launch_id, row.to_csv())?;
            }
        }
        Ok(())
    }

    /// Journals the state the round left, before its log rows are written.
    pub(super) fn journal_round(&mut self) -> anyhow::Result<()> {
        if self.journal.is_none() {
            return Ok(());
        }
        let view = self.round_view();
        if let Some(journal) = &mut self.journal {
            journal.round(&view, &self.cluster_lines)?;
        }
        Ok(())
    }

    fn round_view(&self) -> RoundView {
        let done =
            |members: &[JobIdx]| members.iter().any(|&m| self.jobs[m].status == Status::Done);
        let mut measured: Vec<(Vec<JobIdx>, f64)> = self
            .measured
            .iter()
            .filter(|(m, _)| !done(m))
            .map(|(m, t)| (m.clone(), *t))
            .collect();
        measured.sort_by(|a, b| a.0.cmp(&b.0));
        let mut startup_seen: Vec<(String, f64)> = self
            .startup_seen
            .iter()
            .map(|(m, t)| (m.clone(), *t))
            .collect();
        startup_seen.sort_by(|a, b| a.0.cmp(&b.0));
        RoundView {
            now: self.now,
            rounds: self.rounds,
            launches: self.launches,
            next_launch_id: self.next_group_id,
            online: self.jobs[self.trace_jobs()..]
                .iter()
                .map(|j| OnlineJob {
                    job_id: j.spec.job_id,
                    model: j.spec.model_name.clone(),
                    num_gpu: j.spec.num_gpu,
                    iterations: j.spec.iterations,
                    submit_time: j.spec.submit_time.into(),
                })
                .collect(),
            jobs: self
                .jobs
                .iter()
                .zip(&self.extra)
                .map(|(j, e)| JobState {
                    iterations_done: self.iterations_done(j.idx),
                    ..JobState::of(j, e.attempts, e.failed, e.cancelled, &e.error)
                })
                .collect(),
            runnable: self.runnable.clone(),
            held: self.held.clone(),
            running: self
                .running
                .iter()
                .map(|g| GroupState {
                    members: g.members.clone(),
                    gpus: g.gpus.clone(),
                })
                .collect(),
            measured,
            startup_seen,
            completed: self.records.iter().map(|r| r.job_id).collect(),
        }
    }
}
