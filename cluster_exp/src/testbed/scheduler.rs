//! `muri scheduler`: the policy loop on a virtual clock with real executors.
//!
//! Each round (at virtual time `now`) is the simulator's [`Round`] — complete jobs whose
//! predicted end has come, admit arrivals, credit progress, run the policy on an empty
//! cluster, apply the transitions, predict the next completions — with the testbed's
//! executor between the policy and the transitions: instead of trusting the interleaving
//! model, it dispatches every new or moved group to the worker owning its GPUs (or, with
//! `--executor model`, completes launches with the simulator's model). In fast-forward mode
//! (`--fast_forwarding N`) a launch runs N iterations of every member; the measured group
//! iteration time (scaled back by `--time_scale`) becomes the group's speed, and the virtual
//! clock jumps to the next round: the next predicted completion, arrival, policy wake-up,
//! retry, or `--schedule_interval` tick, whichever is first. Unchanged groups keep their measured
//! speed without a relaunch (quirk 19 of the reference, which relaunches everything).
//! With `--fast_forwarding 0` the real-time driver (`scheduler/realtime.rs`) runs the same
//! round on the wall clock instead: launches run every remaining iteration and jobs complete
//! when their trainers report it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::pb;
use muri_runtime::tls::Tls;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use super::journal::{AppendCsv, Journal};
use super::measure::{self, GroupUsage};
use super::service::{Event, SchedulerService, Shared, Submission, WorkerEntry};
use super::Workload;
use crate::cluster::{Cluster, ClusterSpec, Placement};
use crate::engine::JobRecord;
use crate::interleave::{InterleaveModel, StageProfile};
use crate::job::{build_jobs, Job, JobIdx, Status};
use crate::models;
use crate::output;
use crate::policy::{self, Policy, PolicyOptions};
use crate::round::{DecisionLog, EventQueue, Round};
use crate::trace::{JobSpec, Trace};

mod durable;
mod gpu_assign;
mod node_labels;
mod realtime;

use gpu_assign::GpuAssigner;

/// Everything `muri scheduler` is told.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub listen: SocketAddr,
    /// The IP trainers report to; `None` = the listen IP (which then must not be 0.0.0.0).
    pub advertise: Option<IpAddr>,
    pub spec: ClusterSpec,
    /// Jobs to replay; `None` = online submissions only.
    pub trace: Option<Trace>,
    pub policy: String,
    pub opts: PolicyOptions,
    pub log_path: PathBuf,
    /// Virtual seconds between rounds when nothing else happens.
    pub schedule_interval: f64,
    /// Iterations each launch runs (the sample).
    pub fast_forwarding: u64,
    /// Fast-forward samples that may run at once (0: no limit), each after every launch of its
    /// round has started up (`--concurrent_samples`).
    pub concurrent_samples: usize,
    /// Emulated stage time = profiled time × this (so measured / this = virtual seconds);
    /// `None`: what the workers run decides ([`Workload::default_time_scale`]).
    pub time_scale: Option<f64>,
    /// Workers to wait for before the first round.
    pub workers: usize,
    pub token: Token,
    /// Served to workers, trainers and control clients, and used to dial the workers.
    pub tls: Tls,
    pub heartbeat_interval: Duration,
    /// A worker silent this long is removed and its groups re-queued.
    pub heartbeat_timeout: Duration,
    /// Real-time limit for one round's samples.
    pub sample_timeout: Duration,
    /// Tries before a job whose trainer keeps failing is marked failed.
    pub max_attempts: u32,
    /// Virtual seconds before the first retry (doubles per failure).
    pub retry_backoff: f64,
    /// Keep serving `muri submit` after the trace is done (online mode).
    pub keep_alive: bool,
    pub checkpoint_dir: Option<PathBuf>,
    /// What completes a launch.
    pub executor: Executor,
    /// Where the decision log goes (`--decisions`), if anywhere.
    pub decisions: Option<PathBuf>,
    /// Where the state is journaled (`--state_dir`); a directory holding a run resumes it.
    pub state_dir: Option<PathBuf>,
}

/// What completes a launch (`--executor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// Trainers on the workers run a sample; its measured speed is the group's speed.
    Trainers,
    /// The simulator's progress model: the policy's iteration times, no launch cost, no
    /// trainer. Workers still register, and rounds follow the simulator's events only (no
    /// interval tick), so the decision log equals `muri simulate --decisions`.
    Model,
}

impl Executor {
    /// Parses `--executor`.
    pub fn parse(name: &str) -> anyhow::Result<Executor> {
        match name {
            "trainers" => Ok(Executor::Trainers),
            "model" => Ok(Executor::Model),
            other => bail!("--executor `{other}`: expected `trainers` or `model`"),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub completed: usize,
    pub failed: usize,
    pub rounds: usize,
    pub launches: usize,
    pub wall_seconds: f64,
    pub virtual_seconds: f64,
    /// The longest round in real seconds (dispatch and samples included).
    pub longest_round_s: f64,
}

/// Per-job bookkeeping the core's `Job` does not have.
#[derive(Debug, Clone, Default)]
struct JobExtra {
    /// Consecutive trainer failures.
    attempts: u32,
    failed: bool,
    cancelled: bool,
    error: String,
}

/// A group as dispatched: members (sorted), where, and its launch id.
#[derive(Debug, Clone, PartialEq)]
struct RunningGroup {
    members: Vec<JobIdx>,
    /// (node id of the worker, GPU ids) per node, the head (rank 0) first.
    gpus: Vec<(u32, Vec<u32>)>,
}

/// Members of a placed group and its GPU ids per node, if its nodes have workers.
type PlacedGroup = (Vec<JobIdx>, Option<Vec<(u32, Vec<u32>)>>);

/// Outcome of one launched sample.
#[derive(Debug)]
enum LaunchOutcome {
    /// The sample ran: its measured speed and startup (real time).
    Measured(Sample),
    /// The trainer exited non-zero (or spawned nothing).
    TrainerFailed(String),
    /// The sample did not finish in time: not the trainer's failure, but an attempt.
    Lost(String),
    /// A worker of the launch died, paused, was fenced, or lost the launch: neither the
    /// trainer's failure nor an attempt.
    WorkerLost(String),
}

/// A launch whose sample is under way: it is resolved when every node that started
/// processes has reported Done, when one of them fails, or when any of its nodes is lost.
struct PendingLaunch {
    members: Vec<JobIdx>,
    /// Every node of the launch, head first.
    nodes: Vec<u32>,
    /// The registration epoch of each node when the launch was sent: a node registered
    /// again since then has lost the launch.
    epochs: Vec<u64>,
    /// Nodes whose heartbeats stopped listing the launch before it reported Done, since when.
    missing_since: BTreeMap<u32, Instant>,
    /// Nodes that started processes and have not reported Done yet.
    awaiting: BTreeSet<u32>,
    /// How the launch failed (a refused Execute, a non-zero exit), first cause only.
    failure: Option<LaunchOutcome>,
    /// What rank 0 reported (ReportIterTime).
    report: Option<Sample>,
    /// Rank 0 said StartSample (it has started up) and waits for this to be sent.
    ready: Option<oneshot::Sender<()>>,
    /// When its sample was let go (see [`start_samples`]).
    sample_started: Option<Instant>,
    /// When rank 0 reported its sample.
    reported_at: Option<Instant>,
}

/// What a launch's rank 0 reported, in real seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Seconds per group iteration.
    iter_s: f64,
    /// Process start to first iteration: model build, checkpoint restore and warm-up.
    startup_s: f64,
    /// Stage busy shares and rank 0's process usage over the sample.
    usage: GroupUsage,
}

impl PendingLaunch {
    /// Seconds per group iteration in the first phase (all members alive), if reported.
    fn iteration_s(&self) -> Option<f64> {
        self.report.map(|r| r.iter_s)
    }

    /// Whether rank 0 has said StartSample (its sample may have been let go since).
    fn started_up(&self) -> bool {
        self.ready.is_some() || self.sample_started.is_some()
    }
}

/// One row of launches.csv.
struct LaunchRow {
    launch_id: u64,
    virtual_time: f64,
    wall_time: f64,
    job_ids: Vec<u64>,
    nodes: Vec<u32>,
    hosts: Vec<String>,
    ranks: Vec<usize>,
    status: String,
    startup_s: Option<f64>,
    iteration_s: Option<f64>,
    /// Wall seconds (since the first round) from which the sample ran and at which it was
    /// reported, where the scheduler saw both (fast-forward).
    sample_window: Option<(f64, f64)>,
}

impl LaunchRow {
    const HEADER: &'static str =
        "launch_id,virtual_time,wall_time,job_ids,node_ids,hosts,ranks_per_host,status,startup_s,iteration_s,sample_start,sample_end\n";

    /// Lists are `+`-separated, so every row has the header's twelve fields.
    fn to_csv(&self) -> String {
        fn join<T: ToString>(items: &[T]) -> String {
            items.iter().map(T::to_string).collect::<Vec<_>>().join("+")
        }
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        format!(
            "{},{:.3},{:.3},{},{},{},{},{},{},{},{},{}\n",
            self.launch_id,
            self.virtual_time,
            self.wall_time,
            join(&self.job_ids),
            join(&self.nodes),
            join(&self.hosts),
            join(&self.ranks),
            self.status.replace([',', '\n'], " "),
            opt(self.startup_s),
            opt(self.iteration_s),
            opt(self.sample_window.map(|w| w.0)),
            opt(self.sample_window.map(|w| w.1))
        )
    }
}

/// Runs the scheduler until every job is done (or forever with `keep_alive`).
pub async fn run_scheduler(mut cfg: SchedulerConfig) -> anyhow::Result<RunSummary> {
    validate(&cfg)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let first_online_id = cfg
        .trace
        .as_ref()
        .and_then(|t| t.jobs.iter().map(|j| j.job_id).max())
        .map_or(0, |m| m + 1);
    let shared = Arc::new(Shared {
        spec: cfg.spec,
        token: cfg.token.clone(),
        tls: cfg.tls.clone(),
        heartbeat_interval: cfg.heartbeat_interval,
        heartbeat_timeout: cfg.heartbeat_timeout,
        workers: Mutex::new(BTreeMap::new()),
        workload: Mutex::new(None),
        next_epoch: AtomicU64::new(super::service::first_epoch()),
        events: tx,
        submissions: Mutex::new(Vec::new()),
        cancels: Mutex::new(Vec::new()),
        next_job_id: AtomicU64::new(first_online_id),
        status: Mutex::new(pb::StatusReply::default()),
        wake: Notify::new(),
    });
    let (server, bound) = spawn_server(cfg.listen, shared.clone()).await?;
    // With port 0 the OS picks the port; trainers must be told the real one.
    cfg.listen = bound;
    let mut testbed = Testbed::new(cfg, shared, rx)?;
    let result = testbed.run().await;
    testbed.shutdown_workers().await;
    server.abort();
    result
}

fn validate(cfg: &SchedulerConfig) -> anyhow::Result<()> {
    super::advertised_ip(cfg.listen, cfg.advertise)?;
    anyhow::ensure!(
        cfg.fast_forwarding != 1,
        "--fast_forwarding must be 0 (real time) or at least 2 iterations"
    );
    anyhow::ensure!(
        cfg.schedule_interval.is_finite() && cfg.schedule_interval > 0.0,
        "--schedule_interval must be > 0"
    );
    anyhow::ensure!(
        cfg.time_scale.is_none_or(|s| s.is_finite() && s > 0.0),
        "--time_scale must be > 0"
    );
    anyhow::ensure!(cfg.max_attempts >= 1, "--max_attempts must be at least 1");
    if let Some(trace) = &cfg.trace {
        crate::simulate::check_fits(trace, &cfg.spec)?;
    }
    policy::build(&cfg.policy, cfg.opts)?;
    Ok(())
}

/// Binds `listen` (port 0: any free port) and serves the scheduler's gRPC services;
/// returns the server task and the address actually bound.
async fn spawn_server(
    listen: SocketAddr,
    shared: Arc<Shared>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the scheduler to {listen}"))?;
    let bound = listener.local_addr()?;
    let svc = SchedulerService {
        shared: shared.clone(),
    };
    let check = CheckToken(shared.token.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = shared.tls.server_config() {
        builder = builder
            .tls_config(tls)
            .context("setting up the scheduler's TLS")?;
    }
    let router = builder
        .add_service(
            pb::worker_to_scheduler_server::WorkerToSchedulerServer::with_interceptor(
                svc.clone(),
                check.clone(),
            ),
        )
        .add_service(
            pb::trainer_to_scheduler_server::TrainerToSchedulerServer::with_interceptor(
                svc.clone(),
                check.clone(),
            ),
        )
        .add_service(pb::control_server::ControlServer::with_interceptor(
            svc, check,
        ));
    tracing::info!(%bound, tls = shared.tls.is_server_tls(), "scheduler listening");
    eprintln!("scheduler listening on {bound}");
    let server = tokio::spawn(async move {
        let incoming = muri_runtime::server::incoming(listener);
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!("scheduler server stopped: {e}");
        }
    });
    Ok((server, bound))
}

struct Testbed {
    cfg: SchedulerConfig,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    jobs: Vec<Job>,
    extra: Vec<JobExtra>,
    /// Arrivals, the next predicted completion and the policy's wake-up.
    queue: EventQueue,
    runnable: Vec<JobIdx>,
    /// Jobs waiting out a retry back-off: (job, virtual time it may run again).
    held: Vec<(JobIdx, f64)>,
    policy: Box<dyn Policy>,
    /// Profile keys in profile-id order (online jobs get ids the way `build_jobs` does).
    profiles: Vec<([u64; 3], u64)>,
    now: f64,
    started: Instant,
    running: Vec<RunningGroup>,
    /// Measured seconds (virtual) per group iteration, by sorted member list.
    measured: HashMap<Vec<JobIdx>, f64>,
    /// Virtual seconds of startup measured this round, by the sorted member list of each
    /// group launched this round: the restart overhead its members are charged.
    startup_now: HashMap<Vec<JobIdx>, f64>,
    /// Largest startup measured per model (real seconds): what the sample timeout expects.
    startup_seen: HashMap<String, f64>,
    /// Each running group's last measured usage, by sorted member list.
    usage: HashMap<Vec<JobIdx>, GroupUsage>,
    records: Vec<JobRecord>,
    /// cluster.csv's lines (newline included): the reference's columns, then the round's
    /// measurements ([`measure::MEASURE_HEADER`]).
    cluster_lines: Vec<String>,
    /// launches.csv, created (with its header) at the first launch of the run.
    launch_log: Option<AppendCsv>,
    /// job.csv and cluster.csv, appended after every round.
    job_csv: Option<AppendCsv>,
    cluster_csv: Option<AppendCsv>,
    /// The `--state_dir` journal.
    journal: Option<Journal>,
    /// The run resumed from the journal (its clock goes on from the last journaled round).
    resumed: bool,
    /// Launches lost with a previous scheduler, by id: nodes still to kill them on.
    orphans: BTreeMap<u64, Vec<u32>>,
    next_group_id: u64,
    rounds: usize,
    launches: usize,
    decisions: Option<DecisionLog>,
    /// Decisions already in the file.
    decisions_written: usize,
    /// The registration epoch of every worker the loop knows: a node missing from the
    /// workers table, or there with another epoch, has lost its groups.
    epochs: BTreeMap<u32, u64>,
    /// Stray launches (node, launch id) the workers were told to kill, and when.
    strays_sent: HashMap<(u32, u64), Instant>,
    /// Consecutive rounds that lost a launch with its worker: the real-time back-off.
    lost_streak: u32,
    /// The longest round (real time) and its number.
    longest_round: (Duration, usize),
    /// Launches and progress of the real-time mode (`--fast_forwarding 0`).
    realtime: realtime::RealTime,
    /// Emulated stage time = profiled time × this: `--time_scale`, else chosen for what the
    /// workers run once they registered.
    time_scale: f64,
}

impl Testbed {
    fn new(
        cfg: SchedulerConfig,
        shared: Arc<Shared>,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> anyhow::Result<Testbed> {
        let specs: Vec<JobSpec> = cfg
            .trace
            .as_ref()
            .map(|t| t.jobs.clone())
            .unwrap_or_default();
        let jobs = build_jobs(&specs);
        let mut profiles = Vec::new();
        for j in &jobs {
            let key = profile_key(j);
            if !profiles.contains(&key) {
                profiles.push(key);
            }
        }
        let mut testbed = Testbed {
            policy: policy::build(&cfg.policy, cfg.opts)?,
            extra: vec![JobExtra::default(); jobs.len()],
            queue: EventQueue::new(&jobs),
            jobs,
            shared,
            events,
            runnable: Vec::new(),
            held: Vec::new(),
            profiles,
            now: 0.0,
            started: Instant::now(),
            running: Vec::new(),
            measured: HashMap::new(),
            startup_now: HashMap::new(),
            startup_seen: HashMap::new(),
            usage: HashMap::new(),
            records: Vec::new(),
            cluster_lines: Vec::new(),
            launch_log: None,
            job_csv: None,
            cluster_csv: None,
            journal: None,
            resumed: false,
            orphans: BTreeMap::new(),
            next_group_id: 1,
            rounds: 0,
            launches: 0,
            decisions: cfg.decisions.as_ref().map(|_| DecisionLog::new()),
            decisions_written: 0,
            epochs: BTreeMap::new(),
            strays_sent: HashMap::new(),
            lost_streak: 0,
            longest_round: (Duration::ZERO, 0),
            realtime: realtime::RealTime::default(),
            time_scale: cfg.time_scale.unwrap_or(Workload::EMULATED_TIME_SCALE),
            cfg,
        };
        testbed.open_state()?;
        Ok(testbed)
    }

    async fn run(&mut self) -> anyhow::Result<RunSummary> {
        if self.cfg.fast_forwarding == 0 && self.cfg.executor == Executor::Trainers {
            return self.run_realtime().await;
        }
        self.wait_for_workers().await?;
        self.kill_orphans().await;
        self.started = Instant::now();
        let first = match self.resumed {
            true => self.next_round_time(),
            false => Some(self.queue.next_time(self.policy.as_ref()).unwrap_or(0.0)),
        };
        // A resumed run with nothing left to do ends without another round.
        let mut finished = first.is_none() && !self.cfg.keep_alive && !self.workers_missing();
        self.now = first.map_or(self.now, |t| t.max(self.now));
        while !finished {
            let began = Instant::now();
            self.round().await?;
            self.journal_round()?;
            self.write_logs()?;
            self.time_round(began.elapsed());
            self.back_off_after_lost_launches().await;
            match self.next_round_time() {
                Some(t) => self.now = t.max(self.now),
                None if self.cfg.keep_alive || self.workers_missing() => self.idle_wait().await,
                None => finished = true,
            }
        }
        Ok(self.summary())
    }

    fn summary(&self) -> RunSummary {
        let summary = RunSummary {
            completed: self.records.len(),
            failed: self.extra.iter().filter(|e| e.failed).count(),
            rounds: self.rounds,
            launches: self.launches,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            virtual_seconds: self.now,
            longest_round_s: self.longest_round.0.as_secs_f64(),
        };
        tracing::info!(?summary, "all jobs finished");
        eprintln!(
            "longest round: {:.3} s wall (round {} of {})",
            summary.longest_round_s, self.longest_round.1, self.rounds
        );
        summary
    }

    /// Logs a round's real duration (what a stopped worker must never stretch beyond the
    /// heartbeat timeout) and keeps the longest.
    fn time_round(&mut self, took: Duration) {
        tracing::debug!(
            round = self.rounds,
            wall_ms = took.as_secs_f64() * 1e3,
            "round"
        );
        if took > self.longest_round.0 {
            self.longest_round = (took, self.rounds);
        }
    }

    /// After a round that lost launches with their workers, waits (real time) before the
    /// next one: a heartbeat interval, doubling per such round up to the heartbeat
    /// timeout, so that the workers table settles (a dead worker is reaped, a restarted one
    /// registers) instead of rounds spinning through lost launches while the virtual clock
    /// runs on.
    async fn back_off_after_lost_launches(&self) {
        if self.lost_streak == 0 {
            return;
        }
        let wait = self
            .cfg
            .heartbeat_interval
            .saturating_mul(1 << (self.lost_streak - 1).min(16))
            .min(self.cfg.heartbeat_timeout);
        tracing::info!(
            streak = self.lost_streak,
            wait_ms = wait.as_millis() as u64,
            "launches lost with their workers: backing off"
        );
        tokio::time::sleep(wait).await;
    }

    async fn wait_for_workers(&mut self) -> anyhow::Result<()> {
        let want = self.cfg.workers.min(self.cfg.spec.num_nodes() as usize);
        eprintln!("waiting for {want} workers");
        while self.shared.worker_count() < want {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), self.shared.wake.notified()).await;
        }
        self.choose_time_scale();
        Ok(())
    }

    /// `--time_scale` when given; else the default for what the registered workers run (1
    /// for real models, which run at their own speed), so that a worker started by hand
    /// with `--workload real` gets a true clock.
    fn choose_time_scale(&mut self) {
        let workload = self
            .shared
            .workload
            .lock()
            .ok()
            .and_then(|w| *w)
            .unwrap_or(Workload::Emulated);
        self.time_scale = match self.cfg.time_scale {
            Some(given) => given,
            None => workload.default_time_scale(),
        };
        tracing::info!(
            workload = workload.as_str(),
            time_scale = self.time_scale,
            given = self.cfg.time_scale.is_some(),
            "time scale"
        );
        eprintln!(
            "workers run {} workloads: time scale {}{}",
            workload.as_str(),
            self.time_scale,
            if self.cfg.time_scale.is_some() {
                " (--time_scale)"
            } else {
                " (default)"
            }
        );
    }

    fn workers_missing(&self) -> bool {
        !self.runnable.is_empty() && self.shared.worker_count() == 0
    }

    /// Nothing to do in virtual time: wait (real time) for a submission or a worker.
    async fn idle_wait(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.shared.wake.notified()).await;
        self.reap_dead_workers(None);
        self.reconcile(&mut BTreeMap::new(), Instant::now());
    }

    async fn round(&mut self) -> anyhow::Result<()> {
        self.rounds += 1;
        self.kill_orphans().await;
        self.take_submissions();
        self.take_cancels();
        self.reap_dead_workers(None);
        self.reconcile(&mut BTreeMap::new(), Instant::now());
        self.open();
        self.release_held();
        let now = self.now;
        self.round_state().credit(now);
        self.schedule();
        self.dispatch().await?;
        self.apply_transitions();
        self.round_state().predict_ends(now)?;
        self.log_cluster();
        self.publish_status();
        Ok(())
    }

    // ---- inputs ------------------------------------------------------------------------

    fn take_submissions(&mut self) {
        let subs: Vec<Submission> = match self.shared.submissions.lock() {
            Ok(mut s) => s.drain(..).collect(),
            Err(_) => return,
        };
        for s in subs {
            if self.add_online_job(&s, self.now) {
                tracing::info!(job = s.job_id, model = %s.model, gpus = s.num_gpu, "submitted");
            }
        }
    }

    /// Adds a submitted job arriving at `submit_time`; false if its model has no profile.
    fn add_online_job(&mut self, s: &Submission, submit_time: f64) -> bool {
        let Some(p) = models::profile(&s.model, s.num_gpu) else {
            return false;
        };
        let spec = JobSpec {
            job_id: s.job_id,
            num_gpu: s.num_gpu,
            submit_time,
            iterations: s.iterations,
            model_name: s.model.clone(),
            batch_size: p.batch_size,
            duration: (s.iterations as f64 * p.iteration_time_ms / 1000.0).floor(),
            iteration_time_ms: p.iteration_time_ms,
            resource_time_ms: p.resource_time_ms,
            priority: 0,
        };
        let mut job = Job::new(self.jobs.len(), spec);
        job.profile_id = self.profile_id(&job);
        self.queue.add_arrival(&job);
        self.jobs.push(job);
        self.extra.push(JobExtra::default());
        true
    }

    fn profile_id(&mut self, job: &Job) -> u32 {
        let key = profile_key(job);
        match self.profiles.iter().position(|k| *k == key) {
            Some(p) => p as u32,
            None => {
                self.profiles.push(key);
                (self.profiles.len() - 1) as u32
            }
        }
    }

    fn take_cancels(&mut self) {
        let ids: Vec<u64> = match self.shared.cancels.lock() {
            Ok(mut c) => c.drain(..).collect(),
            Err(_) => return,
        };
        for id in ids {
            let Some(j) = self.jobs.iter().position(|j| j.spec.job_id == id) else {
                continue;
            };
            if self.jobs[j].status == Status::Done {
                continue;
            }
            tracing::info!(job = id, "cancelled");
            self.extra[j].cancelled = true;
            self.finish_without_record(j);
        }
    }

    /// Removes a job that will not complete (failed or cancelled) from every queue.
    fn finish_without_record(&mut self, j: JobIdx) {
        let job = &mut self.jobs[j];
        job.status = Status::Done;
        job.placement = None;
        self.runnable.retain(|&r| r != j);
        self.queue.remove_job(j);
        self.held.retain(|&(r, _)| r != j);
        self.running.retain(|g| !g.members.contains(&j));
    }

    /// Workers silent for longer than the heartbeat timeout are forgotten, and a node
    /// registered again (its old registration fenced) counts as lost too; their groups are
    /// re-queued at the next schedule (the policy then sees a smaller cluster). `pending`:
    /// the launches under way, whose members are named in the log as well.
    fn reap_dead_workers(&mut self, pending: Option<&BTreeMap<u64, PendingLaunch>>) {
        let timeout = self.cfg.heartbeat_timeout;
        let current: BTreeMap<u32, u64> = match self.shared.workers.lock() {
            Ok(mut w) => {
                w.retain(|_, e| e.last_seen.elapsed() <= timeout);
                w.iter().map(|(&n, e)| (n, e.epoch)).collect()
            }
            Err(_) => return,
        };
        let lost: Vec<(u32, &str)> = self
            .epochs
            .iter()
            .filter_map(|(&node, &epoch)| match current.get(&node) {
                None => Some((node, "missed its heartbeats")),
                Some(&now) if now != epoch => Some((node, "registered again (old one fenced)")),
                Some(_) => None,
            })
            .collect();
        self.epochs = current;
        for (node, why) in lost {
            self.node_lost(node, why, pending);
        }
    }

    /// Preempts the running groups on a lost node and logs every job it took down.
    fn node_lost(&mut self, node: u32, why: &str, pending: Option<&BTreeMap<u64, PendingLaunch>>) {
        let (lost, kept): (Vec<RunningGroup>, Vec<RunningGroup>) =
            std::mem::take(&mut self.running)
                .into_iter()
                .partition(|g| g.gpus.iter().any(|(n, _)| *n == node));
        self.running = kept;
        let mut ids = Vec::new();
        for &m in lost.iter().flat_map(|g| &g.members) {
            // The group's processes are gone: a preemption, whatever the job does next.
            self.jobs[m].preempt += 1;
            ids.push(self.jobs[m].spec.job_id);
        }
        let launching = pending
            .into_iter()
            .flat_map(|p| p.values())
            .filter(|l| l.nodes.contains(&node))
            .flat_map(|l| l.members.iter().map(|&m| self.jobs[m].spec.job_id));
        ids.extend(launching);
        ids.sort_unstable();
        ids.dedup();
        tracing::warn!(node, now = self.now, preempted = ?ids, "worker {why}: removed, its groups are re-queued");
        if ids.is_empty() {
            eprintln!(
                "worker {node} lost at t={:.0} ({why}): no job was running on it",
                self.now
            );
        } else {
            eprintln!(
                "worker {node} lost at t={:.0} ({why}): preempted jobs {ids:?}",
                self.now
            );
        }
    }

    /// Compares what the workers' heartbeats report with what the loop knows. A launch a
    /// worker runs that is not under way here (given up, or from before a restart) is a
    /// stray: the next heartbeat reply tells the worker to kill it. A launch under way that
    /// a worker stopped listing (fresh heartbeats, since `since`, lack it) and that sent no
    /// Done within the heartbeat timeout is lost with that worker, and its jobs re-queued.
    fn reconcile(&mut self, pending: &mut BTreeMap<u64, PendingLaunch>, since: Instant) {
        let grace = self.cfg.heartbeat_timeout;
        let Ok(mut workers) = self.shared.workers.lock() else {
            return;
        };
        self.strays_sent.retain(|_, at| at.elapsed() <= grace);
        for (&node, w) in workers.iter_mut() {
            for &launch in &w.reported {
                let known = pending
                    .get(&launch)
                    .is_some_and(|l| l.nodes.contains(&node));
                if known || self.strays_sent.contains_key(&(node, launch)) {
                    continue;
                }
                tracing::info!(
                    node,
                    launch,
                    "worker runs a launch that is not under way: killing it"
                );
                w.strays.push(launch);
                self.strays_sent.insert((node, launch), Instant::now());
            }
        }
        for (&id, launch) in pending.iter_mut() {
            for &node in &launch.awaiting {
                let Some(w) = workers.get(&node) else {
                    continue;
                };
                if w.reported_at.is_none_or(|t| t <= since) {
                    continue;
                }
                if w.reported.contains(&id) {
                    launch.missing_since.remove(&node);
                    continue;
                }
                let first = *launch
                    .missing_since
                    .entry(node)
                    .or_insert_with(Instant::now);
                if first.elapsed() > grace && launch.failure.is_none() {
                    launch.failure = Some(LaunchOutcome::WorkerLost(format!(
                        "node {node} no longer runs launch {id} and sent no Done"
                    )));
                }
            }
        }
    }

    // ---- the round's steps, on the virtual clock -----------------------------------------

    /// The round's state, borrowed for one of [`Round`]'s steps.
    fn round_state(&mut self) -> Round<'_> {
        Round {
            jobs: &mut self.jobs,
            runnable: &mut self.runnable,
            policy: self.policy.as_mut(),
            events: &mut self.queue,
            records: &mut self.records,
            decisions: self.decisions.as_mut(),
        }
    }

    /// Takes the event due now (completions, arrivals); groups with a completed member stop.
    fn open(&mut self) {
        let now = self.now;
        let before = self.records.len();
        self.round_state().open(now);
        for r in &self.records[before..] {
            tracing::info!(job = r.job_id, now, "completed");
        }
        let jobs = &self.jobs;
        self.running
            .retain(|g| g.members.iter().all(|&m| jobs[m].status != Status::Done));
    }

    /// Jobs whose retry back-off is over become runnable again.
    fn release_held(&mut self) {
        let now = self.now;
        let (ready, waiting): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|&(_, t)| t <= now);
        self.held = waiting;
        for (j, _) in ready {
            self.runnable.push(j);
        }
    }

    /// Node ids of live workers, in order: the policy's node i is `alive[i]`.
    fn alive_nodes(&self) -> Vec<u32> {
        let limit = self.cfg.spec.num_nodes();
        self.shared
            .workers
            .lock()
            .map(|w| w.keys().copied().filter(|&n| n < limit).collect())
            .unwrap_or_default()
    }

    /// Runs the policy on a cluster of the live workers (the spec itself while all live).
    fn schedule(&mut self) {
        let alive = self.alive_nodes();
        if alive.is_empty() {
            for &j in &self.runnable {
                self.jobs[j].placement = None;
                self.jobs[j].group.clear();
            }
            return;
        }
        let spec = if alive.len() == self.cfg.spec.num_nodes() as usize {
            self.cfg.spec
        } else {
            ClusterSpec {
                num_switch: 1,
                num_node_p_switch: alive.len() as u32,
                ..self.cfg.spec
            }
        };
        let mut cluster = Cluster::new(spec);
        let now = self.now;
        self.round_state().schedule(now, &mut cluster);
    }

    // ---- dispatch ----------------------------------------------------------------------

    /// Turns the policy's placements into groups, launches the new ones, measures them,
    /// and applies the state transitions (run, preempt, retry, fail).
    async fn dispatch(&mut self) -> anyhow::Result<()> {
        if self.cfg.executor == Executor::Model {
            self.dispatch_modelled();
            return Ok(());
        }
        let alive = self.alive_nodes();
        let planned = self.planned_groups(&alive);
        let to_launch: Vec<RunningGroup> = planned
            .iter()
            .filter(|g| !self.running.contains(g))
            .cloned()
            .collect();
        let outcomes = self.launch_all(&to_launch).await?;
        let mut failed_members: HashSet<JobIdx> = HashSet::new();
        self.startup_now.clear();
        let mut lost_with_worker = false;
        for (group, outcome) in to_launch.iter().zip(outcomes) {
            match outcome {
                LaunchOutcome::Measured(sample) => self.sample_measured(group, sample),
                LaunchOutcome::TrainerFailed(why) => {
                    failed_members.extend(&group.members);
                    self.trainer_failed(group, &why);
                }
                LaunchOutcome::Lost(why) => {
                    tracing::warn!(members = ?self.ids(&group.members), "launch lost: {why}");
                    failed_members.extend(&group.members);
                    self.launch_lost(group, &why);
                }
                LaunchOutcome::WorkerLost(why) => {
                    tracing::warn!(jobs = ?self.ids(&group.members), "launch lost with its worker, re-queued (not an attempt): {why}");
                    failed_members.extend(&group.members);
                    lost_with_worker = true;
                    for &m in &group.members {
                        self.extra[m].error = why.clone();
                    }
                }
            }
        }
        self.lost_streak = if lost_with_worker {
            self.lost_streak + 1
        } else {
            0
        };
        self.running = planned
            .into_iter()
            .filter(|g| g.members.iter().all(|m| !failed_members.contains(m)))
            .collect();
        Ok(())
    }

    /// A sample's speed becomes its group's, and its startup the restart overhead charged
    /// to its members (virtual seconds = real ÷ `--time_scale`).
    fn sample_measured(&mut self, group: &RunningGroup, sample: Sample) {
        let scale = self.time_scale;
        self.measured
            .insert(group.members.clone(), sample.iter_s / scale);
        self.usage.insert(group.members.clone(), sample.usage);
        self.startup_now
            .insert(group.members.clone(), sample.startup_s / scale);
        for &m in &group.members {
            self.extra[m].attempts = 0;
            let seen = self
                .startup_seen
                .entry(self.jobs[m].spec.model_name.clone())
                .or_insert(0.0);
            *seen = seen.max(sample.startup_s);
        }
    }

    /// A launch whose sample timed out on live workers is not the trainer's fault, so the
    /// job stays runnable without a back-off; but it counts as an attempt, so a job that can
    /// never finish its sample ends up failed instead of relaunched forever. (A launch lost
    /// with its worker is no attempt at all: see [`LaunchOutcome::WorkerLost`].)
    fn launch_lost(&mut self, group: &RunningGroup, why: &str) {
        for &m in &group.members {
            let extra = &mut self.extra[m];
            extra.attempts += 1;
            extra.error = why.to_string();
            if extra.attempts >= self.cfg.max_attempts {
                extra.failed = true;
                let id = self.jobs[m].spec.job_id;
                tracing::error!(job = id, attempts = extra.attempts, "job FAILED: {why}");
                eprintln!("job {id} failed after {} attempts: {why}", extra.attempts);
                self.finish_without_record(m);
            }
        }
    }

    /// Real seconds a round's samples may take: `--sample_timeout` plus the slowest launch's
    /// expected startup and the samples (the longest, or their sum over
    /// `--concurrent_samples`). The expected startup of a model is the largest measured
    /// so far, else its restart overhead in the reference's table (a GPU model can take more
    /// than 30 s to build and restore); the sample is `--fast_forwarding` iterations at twice
    /// the members' solo times back to back.
    fn sample_timeout_for(&self, pending: &BTreeMap<u64, PendingLaunch>) -> Duration {
        let expected = |launch: &PendingLaunch| {
            let jobs = launch.members.iter().map(|&m| &self.jobs[m]);
            let startup = jobs
                .clone()
                .map(|j| match self.startup_seen.get(&j.spec.model_name) {
                    Some(&s) => s,
                    None => models::restart_overhead(j.num_gpu(), &j.spec.model_name),
                })
                .fold(0.0, f64::max);
            let period: f64 = jobs.map(|j| j.iteration_time).sum();
            let sample = 2.0 * self.cfg.fast_forwarding as f64 * period * self.time_scale;
            (startup, sample)
        };
        let expected: Vec<(f64, f64)> = pending.values().map(expected).collect();
        let startup = expected.iter().map(|e| e.0).fold(0.0, f64::max);
        let samples = match self.cfg.concurrent_samples {
            0 => expected.iter().map(|e| e.1).fold(0.0, f64::max),
            n => expected.iter().map(|e| e.1).sum::<f64>() / n as f64,
        };
        self.cfg.sample_timeout + Duration::from_secs_f64((startup + samples).min(86_400.0))
    }

    /// The model executor: every planned group runs at the policy's modelled speed, with no
    /// trainer and no launch cost. Placements without GPU ids (Tiresias places by count only)
    /// run too, as in the simulator.
    fn dispatch_modelled(&mut self) {
        let alive = self.alive_nodes();
        let groups: Vec<RunningGroup> = self
            .placed_groups(&alive)
            .into_iter()
            .map(|(members, gpus)| RunningGroup {
                members,
                gpus: gpus.unwrap_or_default(),
            })
            .collect();
        self.launches += groups.iter().filter(|g| !self.running.contains(g)).count();
        for g in &groups {
            for &m in &g.members {
                self.extra[m].attempts = 0;
            }
        }
        self.running = groups;
    }

    fn ids(&self, members: &[JobIdx]) -> Vec<u64> {
        members.iter().map(|&m| self.jobs[m].spec.job_id).collect()
    }

    /// Groups as the policy placed them (each placed job plus its group members, once),
    /// with GPU ids assigned per node in placement order; a group whose placement names a
    /// node without a worker is dropped.
    fn planned_groups(&self, alive: &[u32]) -> Vec<RunningGroup> {
        self.placed_groups(alive)
            .into_iter()
            .filter_map(|(members, gpus)| {
                if gpus.is_none() {
                    tracing::warn!(
                        jobs = ?self.ids(&members),
                        "placement on a node without a worker"
                    );
                }
                Some(RunningGroup {
                    members,
                    gpus: gpus?,
                })
            })
            .collect()
    }

    /// Each placed job with its group members (sorted, once), and the GPU ids of its
    /// placement per node (`None` when a node of it has no worker, or too few GPUs are
    /// free). A group the policy left where it runs keeps its GPUs; a placement without
    /// nodes (Tiresias places by GPU count only) gets free GPUs of live workers.
    fn placed_groups(&self, alive: &[u32]) -> Vec<PlacedGroup> {
        let mut seen: HashSet<JobIdx> = HashSet::new();
        let workers = self
            .shared
            .workers
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default();
        let mut placed: Vec<(Vec<JobIdx>, &Placement)> = Vec::new();
        for &j in &self.runnable {
            let Some(placement) = &self.jobs[j].placement else {
                continue;
            };
            if seen.contains(&j) {
                continue;
            }
            let mut members: Vec<JobIdx> = std::iter::once(j)
                .chain(self.jobs[j].group.iter().copied())
                .collect();
            members.sort_unstable();
            members.dedup();
            seen.extend(&members);
            placed.push((members, placement));
        }
        let labels = self.node_labels(alive, &workers, &placed);
        let mut gpus = GpuAssigner::new(&labels, &workers);
        let mut out: Vec<Option<gpu_assign::NodeGpus>> = placed
            .iter()
            .map(|(members, placement)| {
                let running = self.running.iter().find(|g| g.members == *members)?;
                gpus.keep(placement, &running.gpus)
            })
            .collect();
        for (slot, (_, placement)) in out.iter_mut().zip(&placed) {
            if slot.is_none() && !placement.shares.is_empty() {
                *slot = gpus.place(placement);
            }
        }
        for (slot, (members, placement)) in out.iter_mut().zip(&placed) {
            if slot.is_none() && placement.shares.is_empty() {
                *slot = gpus.place_anywhere(self.jobs[members[0]].num_gpu());
            }
        }
        placed
            .into_iter()
            .zip(out)
            .map(|((members, _), gpus)| (members, gpus))
            .collect()
    }

    /// The live worker each of the policy's nodes stands for this round: running groups
    /// keep their workers where the policy's placement allows it (see [`node_labels`]).
    fn node_labels(
        &self,
        alive: &[u32],
        workers: &BTreeMap<u32, WorkerEntry>,
        placed: &[(Vec<JobIdx>, &Placement)],
    ) -> Vec<u32> {
        let mut claims: Vec<node_labels::Claim> = placed
            .iter()
            .filter_map(|(members, placement)| {
                let running = self.running.iter().find(|g| g.members == *members)?;
                let wanted = gpu_assign::policy_node_counts(placement);
                let running = running
                    .gpus
                    .iter()
                    .map(|(n, ids)| (*n, ids.len() as u32))
                    .collect();
                Some(node_labels::Claim { wanted, running })
            })
            .collect();
        claims.sort_by_key(|c| std::cmp::Reverse(c.running.iter().map(|r| r.1).sum::<u32>()));
        let spec = &self.cfg.spec;
        let whole = alive.len() == spec.num_nodes() as usize && spec.num_switch > 1;
        let per_switch = spec.num_node_p_switch.max(1) as usize;
        let gpus_of = |k: usize| workers.get(&alive[k]).map(|w| w.gpus.len());
        let interchangeable = |i: usize, k: usize| {
            (!whole || i / per_switch == k / per_switch) && gpus_of(i) == gpus_of(k)
        };
        node_labels::node_labels(alive, interchangeable, &claims)
    }

    /// Sends every group's Execute to every node of its placement, collects the samples,
    /// and writes one launches.csv row per launch.
    async fn launch_all(&mut self, groups: &[RunningGroup]) -> anyhow::Result<Vec<LaunchOutcome>> {
        let mut pending: BTreeMap<u64, PendingLaunch> = BTreeMap::new();
        let mut outcomes: BTreeMap<u64, LaunchOutcome> = BTreeMap::new();
        let mut ids = Vec::with_capacity(groups.len());
        let mut calls = JoinSet::new();
        let launched_at = (self.now, self.started.elapsed().as_secs_f64());
        for group in groups {
            let id = self.next_group_id;
            self.next_group_id += 1;
            self.launches += 1;
            ids.push(id);
            let nodes: Vec<u32> = group.gpus.iter().map(|(n, _)| *n).collect();
            let handles: Option<Vec<_>> = nodes.iter().map(|&n| self.worker_handle(n)).collect();
            let Some(handles) = handles else {
                outcomes.insert(id, LaunchOutcome::WorkerLost("a worker is gone".into()));
                continue;
            };
            self.journal_launch(id, group, launched_at)?;
            let req = self.execute_request(id, group);
            pending.insert(
                id,
                PendingLaunch {
                    members: group.members.clone(),
                    nodes: nodes.clone(),
                    epochs: handles.iter().map(|(_, e)| *e).collect(),
                    missing_since: BTreeMap::new(),
                    awaiting: BTreeSet::new(),
                    failure: None,
                    report: None,
                    ready: None,
                    sample_started: None,
                    reported_at: None,
                },
            );
            for (node, (mut client, _)) in nodes.into_iter().zip(handles) {
                let req = req.clone();
                let deadline = self.rpc_deadline();
                calls.spawn(async move {
                    let reply = tokio::time::timeout(deadline, client.execute(req)).await;
                    (id, node, reply.map_err(|_| deadline))
                });
            }
        }
        // Every Execute is under way at once; each has the heartbeat timeout as deadline,
        // so a stopped worker holds this up no longer than it takes to be declared lost.
        while let Some(joined) = calls.join_next().await {
            let Ok((id, node, result)) = joined else {
                continue;
            };
            let Some(launch) = pending.get_mut(&id) else {
                continue;
            };
            match result {
                Ok(Ok(reply)) if reply.get_ref().local_processes > 0 => {
                    launch.awaiting.insert(node);
                }
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    let why = format!("node {node}: Execute refused: {}", status.message());
                    launch
                        .failure
                        .get_or_insert(if worker_unreachable(status.code()) {
                            LaunchOutcome::WorkerLost(why)
                        } else {
                            LaunchOutcome::TrainerFailed(why)
                        });
                }
                Err(deadline) => {
                    launch
                        .failure
                        .get_or_insert(LaunchOutcome::WorkerLost(format!(
                            "node {node}: Execute got no answer within {deadline:.1?}"
                        )));
                }
            }
        }
        let mut resolved = BTreeMap::new();
        self.await_samples(&mut pending, &mut outcomes, &mut resolved)
            .await;
        let outcomes: Vec<LaunchOutcome> = ids
            .iter()
            .map(|id| {
                outcomes
                    .remove(id)
                    .unwrap_or(LaunchOutcome::Lost("no outcome".into()))
            })
            .collect();
        let rows: Vec<LaunchRow> = ids
            .iter()
            .zip(groups)
            .zip(&outcomes)
            .map(|((&id, group), outcome)| {
                self.launch_row(id, group, outcome, resolved.get(&id), launched_at)
            })
            .collect();
        self.journal_launch_rows(&rows)?;
        if let Err(e) = self.append_launch_rows(&rows) {
            tracing::error!("launches.csv: {e:#}");
        }
        Ok(outcomes)
    }

    fn launch_row(
        &self,
        launch_id: u64,
        group: &RunningGroup,
        outcome: &LaunchOutcome,
        launch: Option<&PendingLaunch>,
        (virtual_time, wall_time): (f64, f64),
    ) -> LaunchRow {
        let status = match outcome {
            LaunchOutcome::Measured(_) => "ok".to_string(),
            LaunchOutcome::TrainerFailed(why) => format!("failed: {why}"),
            LaunchOutcome::Lost(why) | LaunchOutcome::WorkerLost(why) => format!("lost: {why}"),
        };
        LaunchRow {
            launch_id,
            virtual_time,
            wall_time,
            job_ids: self.ids(&group.members),
            nodes: group.gpus.iter().map(|(n, _)| *n).collect(),
            hosts: group
                .gpus
                .iter()
                .map(|(n, _)| self.worker_ip(*n).unwrap_or_else(|| "?".into()))
                .collect(),
            ranks: group.gpus.iter().map(|(_, g)| g.len()).collect(),
            status,
            startup_s: launch.and_then(|l| l.report).map(|r| r.startup_s),
            iteration_s: launch.and_then(PendingLaunch::iteration_s),
            sample_window: launch.and_then(|l| match (l.sample_started, l.reported_at) {
                (Some(from), Some(to)) => Some((
                    from.duration_since(self.started).as_secs_f64(),
                    to.duration_since(self.started).as_secs_f64(),
                )),
                _ => None,
            }),
        }
    }

    /// Appends rows to `<log_path>/launches.csv`, which the run's first call creates.
    fn append_launch_rows(&mut self, rows: &[LaunchRow]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.cfg.log_path.join("launches.csv");
        if self.launch_log.is_none() {
            std::fs::create_dir_all(&self.cfg.log_path)
                .with_context(|| format!("creating {}", self.cfg.log_path.display()))?;
            let header = LaunchRow::HEADER.trim_end();
            self.launch_log = Some(AppendCsv::create(&path, header)?);
        }
        let lines: Vec<String> = rows.iter().map(LaunchRow::to_csv).collect();
        if let Some(log) = &mut self.launch_log {
            log.append(&lines)?;
        }
        Ok(())
    }

    fn worker_client(&self, node: u32) -> Option<muri_runtime::client::WorkerClient> {
        self.worker_handle(node).map(|(c, _)| c)
    }

    /// A registered worker's client and registration epoch.
    fn worker_handle(&self, node: u32) -> Option<(muri_runtime::client::WorkerClient, u64)> {
        self.shared
            .workers
            .lock()
            .ok()?
            .get(&node)
            .map(|w| (w.client.clone(), w.epoch))
    }

    /// How long any RPC to a worker may take: the heartbeat timeout, after which a silent
    /// worker is declared lost anyway.
    pub(super) fn rpc_deadline(&self) -> Duration {
        self.cfg.heartbeat_timeout.max(Duration::from_millis(100))
    }

    /// The IP a worker registered with (its advertised address, the MPI host name).
    fn worker_ip(&self, node: u32) -> Option<String> {
        let workers = self.shared.workers.lock().ok()?;
        let addr: SocketAddr = workers.get(&node)?.addr.parse().ok()?;
        Some(addr.ip().to_string())
    }

    fn execute_request(&self, group_id: u64, group: &RunningGroup) -> pb::ExecuteRequest {
        let order = slot_order(&self.jobs, &group.members);
        let stretch = emulation_stretch(&self.jobs, &order);
        let jobs = order
            .iter()
            .enumerate()
            .map(|(slot, &m)| {
                let job = &self.jobs[m];
                pb::JobSlot {
                    slot: slot as u32,
                    job_id: job.spec.job_id,
                    model: job.spec.model_name.clone(),
                    batch_size: job.spec.batch_size,
                    iterations: match self.cfg.fast_forwarding {
                        0 => self.remaining_iterations(m),
                        sample => sample,
                    },
                    stage_ms: emulated_stage_ms(job, order.len(), stretch),
                    checkpoint_path: self
                        .cfg
                        .checkpoint_dir
                        .as_ref()
                        .map(|d| {
                            d.join(format!("job-{}.ckpt", job.spec.job_id))
                                .display()
                                .to_string()
                        })
                        .unwrap_or_default(),
                    attempt: self.extra[m].attempts,
                }
            })
            .collect();
        let hosts = group
            .gpus
            .iter()
            .map(|(node, ids)| pb::HostShare {
                node_id: *node,
                addr: self.worker_ip(*node).unwrap_or_default(),
                gpu_ids: ids.clone(),
            })
            .collect();
        let log_file = self
            .cfg
            .log_path
            .join("trainer-logs")
            .join(format!("launch-{group_id}.log"));
        pb::ExecuteRequest {
            group_id,
            jobs,
            gpu_ids: group.gpus[0].1.clone(),
            num_gpu: self.jobs[group.members[0]].num_gpu(),
            scheduler_addr: self.scheduler_addr(),
            time_scale: self.time_scale,
            hosts,
            log_file: std::path::absolute(&log_file)
                .unwrap_or(log_file)
                .display()
                .to_string(),
        }
    }

    /// Where trainers report: the advertised IP (checked at start-up: never 0.0.0.0) and
    /// the port bound.
    fn scheduler_addr(&self) -> String {
        let ip = self.cfg.advertise.unwrap_or(self.cfg.listen.ip());
        SocketAddr::new(ip, self.cfg.listen.port()).to_string()
    }

    /// Collects Done and ReportIterTime for the launched groups until all are resolved,
    /// one of their workers dies, or the sample timeout passes. A launch resolved before all
    /// its processes exited (a failed rank, a lost node, the timeout) is killed on every
    /// node it still has, so none of its ranks keeps running.
    async fn await_samples(
        &mut self,
        pending: &mut BTreeMap<u64, PendingLaunch>,
        outcomes: &mut BTreeMap<u64, LaunchOutcome>,
        resolved: &mut BTreeMap<u64, PendingLaunch>,
    ) {
        let timeout = self.sample_timeout_for(pending);
        let since = Instant::now();
        let deadline = since + timeout;
        loop {
            self.reconcile(pending, since);
            let registered = self.epochs_now();
            for (id, launch) in resolve(pending, outcomes, &registered) {
                if !launch.awaiting.is_empty() {
                    self.kill_launch(&launch.nodes, id).await;
                }
                resolved.insert(id, launch);
            }
            let wait_for_all = since.elapsed() < self.cfg.sample_timeout / 2;
            start_samples(pending, self.cfg.concurrent_samples, wait_for_all);
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() {
                break;
            }
            match tokio::time::timeout(left.min(Duration::from_millis(100)), self.events.recv())
                .await
            {
                Ok(Some(event)) => record_event(pending, event),
                Ok(None) => break,
                Err(_) => {}
            }
            self.reap_dead_workers(Some(pending));
        }
        for (id, launch) in std::mem::take(pending) {
            self.kill_launch(&launch.nodes, id).await;
            outcomes.insert(
                id,
                LaunchOutcome::Lost(format!("sample did not finish within {timeout:.1?}")),
            );
            resolved.insert(id, launch);
        }
    }

    /// Kills a launch on every one of its nodes that is still registered, concurrently,
    /// each within the RPC deadline (a stopped worker's part is killed by reconciliation
    /// once it heartbeats again).
    async fn kill_launch(&self, nodes: &[u32], group_id: u64) {
        let mut kills = JoinSet::new();
        for &node in nodes {
            if let Some(client) = self.worker_client(node) {
                kills.spawn(kill_group(client, node, group_id, self.rpc_deadline()));
            }
        }
        while kills.join_next().await.is_some() {}
    }

    /// The registration epoch of every registered worker, now.
    fn epochs_now(&self) -> BTreeMap<u32, u64> {
        self.shared
            .workers
            .lock()
            .map(|w| w.iter().map(|(&n, e)| (n, e.epoch)).collect())
            .unwrap_or_default()
    }

    fn trainer_failed(&mut self, group: &RunningGroup, why: &str) {
        for &m in &group.members {
            let extra = &mut self.extra[m];
            extra.attempts += 1;
            extra.error = why.to_string();
            let id = self.jobs[m].spec.job_id;
            if extra.attempts >= self.cfg.max_attempts {
                extra.failed = true;
                tracing::error!(
                    job = id,
                    attempts = extra.attempts,
                    "job FAILED after repeated trainer failures: {why}"
                );
                eprintln!("job {id} failed after {} attempts: {why}", extra.attempts);
                self.finish_without_record(m);
            } else {
                let backoff = self.cfg.retry_backoff * 2f64.powi(extra.attempts as i32 - 1);
                tracing::warn!(
                    job = id,
                    attempt = extra.attempts,
                    backoff,
                    "trainer failed, retrying: {why}"
                );
                self.runnable.retain(|&r| r != m);
                self.jobs[m].placement = None;
                self.held.push((m, self.now + backoff));
            }
        }
    }

    /// The round's transitions for what was actually dispatched: a job outside every
    /// running group (its launch failed, or no worker holds its GPUs) does not run whatever
    /// the policy planned, and a held job that ran is preempted. Measured speeds then replace
    /// the model's.
    fn apply_transitions(&mut self) {
        let in_group: HashSet<JobIdx> = self
            .running
            .iter()
            .flat_map(|g| g.members.iter().copied())
            .collect();
        let mut was_running = Vec::new();
        for &j in &self.runnable {
            let job = &mut self.jobs[j];
            if !in_group.contains(&j) {
                job.placement = None;
            }
            if job.is_running() {
                was_running.push(j);
            }
        }
        let mut preempted = Vec::new();
        for &(j, _) in &self.held {
            let job = &mut self.jobs[j];
            if job.status == Status::Running {
                job.status = Status::Pending;
                job.preempt += 1;
                preempted.push(job.spec.job_id);
            }
        }
        let now = self.now;
        let alive = self.alive_nodes();
        self.round_state().transitions(now, Some(&alive));
        if self.cfg.executor == Executor::Trainers {
            self.charge_measured();
        }
        preempted.extend(
            was_running
                .into_iter()
                .filter(|&j| !self.jobs[j].is_running())
                .map(|j| self.jobs[j].spec.job_id),
        );
        if !preempted.is_empty() {
            tracing::info!(now, jobs = ?preempted, "preempted");
        }
    }

    /// Measured speeds replace the model's, and measured startups the restart table: a group
    /// launched this round is charged its startup, a kept group nothing (nothing restarted).
    /// The sampled iterations count as progress at the measured speed from the end of the
    /// startup on, so the virtual clock is charged for them once, in the next credit.
    fn charge_measured(&mut self) {
        for g in &self.running {
            let speed = self.measured.get(&g.members).copied();
            let startup = self.startup_now.get(&g.members).copied().unwrap_or(0.0);
            for &m in &g.members {
                let job = &mut self.jobs[m];
                if let Some(t) = speed {
                    job.iteration_time_cur = t;
                }
                job.overhead = startup;
            }
        }
    }

    /// The next virtual instant something happens: a predicted end, an arrival, a retry,
    /// or the interval tick (only while jobs are runnable).
    fn next_round_time(&self) -> Option<f64> {
        let event = self.queue.next_time(self.policy.as_ref());
        let retries = self.held.iter().map(|&(_, t)| t);
        let tick = (self.cfg.executor == Executor::Trainers
            && !self.runnable.is_empty()
            && self.shared.worker_count() > 0)
            .then_some(self.now + self.cfg.schedule_interval);
        event
            .into_iter()
            .chain(retries)
            .chain(tick)
            .reduce(f64::min)
    }

    // ---- outputs -----------------------------------------------------------------------

    fn log_cluster(&mut self) {
        let (now, total) = (self.now, self.cfg.spec.num_gpus());
        let row = self.round_state().cluster_row(now, total);
        let running: Vec<&[JobIdx]> = self.running.iter().map(|g| &g.members[..]).collect();
        self.usage
            .retain(|members, _| running.contains(&&members[..]));
        let measures = measure::round_measures(
            &self.jobs,
            &self.runnable,
            &running,
            &self.usage,
            &self.cfg.spec,
        );
        self.cluster_lines
            .push(measure::cluster_csv_line(&row, &measures));
    }

    fn write_logs(&mut self) -> anyhow::Result<()> {
        let dir = &self.cfg.log_path;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(csv) = &mut self.job_csv {
            let new = self.records.get(csv.rows()..).unwrap_or_default();
            csv.append(&new.iter().map(output::job_csv_line).collect::<Vec<_>>())?;
        }
        if let Some(csv) = &mut self.cluster_csv {
            let new = self.cluster_lines.get(csv.rows()..).unwrap_or_default();
            csv.append(new)?;
        }
        if let (Some(path), Some(log)) = (&self.cfg.decisions, &self.decisions) {
            if log.len() != self.decisions_written || self.rounds == 1 {
                log.write(path)?;
                self.decisions_written = log.len();
            }
        }
        self.write_failed_csv()
    }

    /// Jobs that never completed (failed or cancelled), so none is silently lost.
    fn write_failed_csv(&self) -> anyhow::Result<()> {
        let path = self.cfg.log_path.join("failed.csv");
        let mut text = String::from("job_id,state,attempts,error\n");
        for (job, extra) in self.jobs.iter().zip(&self.extra) {
            if extra.failed || extra.cancelled {
                let state = if extra.failed { "failed" } else { "cancelled" };
                let error = extra.error.replace([',', '\n'], " ");
                text.push_str(&format!(
                    "{},{state},{},{error}\n",
                    job.spec.job_id, extra.attempts
                ));
            }
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn publish_status(&self) {
        let running_on: HashMap<JobIdx, &RunningGroup> = self
            .running
            .iter()
            .flat_map(|g| g.members.iter().map(move |&m| (m, g)))
            .collect();
        let jobs = self
            .jobs
            .iter()
            .zip(&self.extra)
            .filter(|(j, _)| j.spec.submit_time <= self.now || j.status != Status::Pending)
            .map(|(job, extra)| self.job_state(job, extra, running_on.get(&job.idx).copied()))
            .collect();
        if let Ok(mut s) = self.shared.status.lock() {
            *s = pb::StatusReply {
                now: self.now,
                jobs,
                workers: 0,
            };
        }
    }

    fn job_state(&self, job: &Job, extra: &JobExtra, group: Option<&RunningGroup>) -> pb::JobState {
        let state = match (job.status, extra.failed, extra.cancelled) {
            (_, true, _) => "failed",
            (_, _, true) => "cancelled",
            (Status::Done, _, _) => "done",
            (Status::Running, _, _) => "running",
            (Status::Pending, _, _) => "pending",
        };
        let total = job.spec.iterations.max(1) as f64;
        let progress = if job.status == Status::Done && !extra.failed && !extra.cancelled {
            1.0
        } else {
            (1.0 - job.remaining_iteration / total).clamp(0.0, 1.0)
        };
        let placement = group
            .map(|g| {
                g.gpus
                    .iter()
                    .map(|(n, ids)| {
                        format!(
                            "node{n}:{}",
                            ids.iter().map(u32::to_string).collect::<Vec<_>>().join("+")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        pb::JobState {
            job_id: job.spec.job_id,
            model: job.spec.model_name.clone(),
            num_gpu: job.num_gpu(),
            state: state.into(),
            progress,
            group: job
                .group
                .iter()
                .map(|&m| self.jobs[m].spec.job_id)
                .collect(),
            placement,
            jct_s: job.end_time.unwrap_or(self.now) - job.spec.submit_time,
            attempts: extra.attempts,
            error: extra.error.clone(),
        }
    }

    /// Tells every worker to kill what it runs and exit, concurrently, each within the RPC
    /// deadline.
    async fn shutdown_workers(&self) {
        let clients: Vec<_> = match self.shared.workers.lock() {
            Ok(w) => w.values().map(|e| e.client.clone()).collect(),
            Err(_) => return,
        };
        let deadline = self.rpc_deadline();
        let mut exits = JoinSet::new();
        for mut c in clients {
            exits.spawn(async move {
                let exit = c.exit(pb::ExitRequest { kill_running: true });
                let _ = tokio::time::timeout(deadline, exit).await;
            });
        }
        while exits.join_next().await.is_some() {}
    }
}

/// Stage times the trainer emulates, so that the emulated group runs at the speed the
/// simulator's model predicts for it. A solo job's stages are rescaled to sum to its solo
/// iteration time (the reference's ×1.015 included): in a real solo run the stages overlap
/// (vgg19's sum to 1.8× its iteration time), and the model charges a solo job its iteration
/// time, not the sum. A group member's stages are multiplied by `stretch` (see
/// [`emulation_stretch`]).
fn emulated_stage_ms(job: &Job, group_size: usize, stretch: f64) -> Vec<f64> {
    let stages = job.spec.resource_time_ms;
    let sum: f64 = stages.iter().sum();
    if group_size > 1 || sum <= 0.0 {
        return stages.iter().map(|ms| ms * stretch).collect();
    }
    let k = job.iteration_time * 1000.0 / sum;
    stages.iter().map(|ms| ms * k).collect()
}

/// How much a group's emulated stages are stretched: the policy's predicted group iteration
/// time (set by this round's schedule, the reference's measured interference slowdown
/// included) ÷ the raw pipeline period of the slot order the trainer runs. Without it the
/// emulated group would run at the raw period, faster than the simulator charges it. 1 for a
/// solo job, or when either period is not a positive number.
fn emulation_stretch(jobs: &[Job], order: &[JobIdx]) -> f64 {
    if order.len() < 2 {
        return 1.0;
    }
    let profiles: Vec<StageProfile> = order.iter().map(|&m| jobs[m].stage_profile()).collect();
    let raw = InterleaveModel::default().period_in_order(&profiles);
    let predicted = jobs[order[0]].iteration_time_cur;
    let stretch = predicted / raw;
    if stretch.is_finite() && stretch > 0.0 {
        stretch
    } else {
        1.0
    }
}

fn profile_key(job: &Job) -> ([u64; 3], u64) {
    (
        job.stage_times.map(f64::to_bits),
        job.iteration_time.to_bits(),
    )
}

/// The members in pipeline-slot order: the permutation with the shortest modelled period.
fn slot_order(jobs: &[Job], members: &[JobIdx]) -> Vec<JobIdx> {
    if members.len() < 2 {
        return members.to_vec();
    }
    let model = InterleaveModel::default();
    let mut best = (f64::INFINITY, members.to_vec());
    for order in permutations(members) {
        let profiles: Vec<StageProfile> = order.iter().map(|&m| jobs[m].stage_profile()).collect();
        let t = model.period_in_order(&profiles);
        if t < best.0 {
            best = (t, order);
        }
    }
    best.1
}

fn permutations(items: &[JobIdx]) -> Vec<Vec<JobIdx>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

fn record_event(pending: &mut BTreeMap<u64, PendingLaunch>, event: Event) {
    match event {
        Event::Done(d) => {
            let Some(p) = pending.get_mut(&d.group_id) else {
                return;
            };
            p.awaiting.remove(&d.node_id);
            if d.exit_code != 0 || d.signal != 0 {
                p.failure
                    .get_or_insert(LaunchOutcome::TrainerFailed(format!(
                        "node {}: exit code {}, signal {}{}{}",
                        d.node_id,
                        d.exit_code,
                        d.signal,
                        if d.error.is_empty() { "" } else { ": " },
                        d.error
                    )));
            }
        }
        // A member that finished early (real-time mode): the launch's own report follows.
        Event::Report(r) if r.partial => {}
        // Progress polls are the real-time mode's: a sample's report is all it needs.
        Event::Trainer(_) => {}
        Event::SampleReady { group_id, go } => match pending.get_mut(&group_id) {
            // Let go while its trainer was between two calls.
            Some(p) if p.sample_started.is_some() => {
                let _ = go.send(());
            }
            Some(p) => p.ready = Some(go),
            // A launch resolved already, or a stale one: nothing to wait for.
            None => {
                let _ = go.send(());
            }
        },
        Event::Report(r) => {
            if let Some(p) = pending.get_mut(&r.group_id) {
                p.reported_at = Some(Instant::now());
                let startup_s = Some(r.startup_s).filter(|s| s.is_finite() && *s >= 0.0);
                p.report = r
                    .phase_iter_s
                    .first()
                    .copied()
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(|iter_s| Sample {
                        iter_s,
                        startup_s: startup_s.unwrap_or(0.0),
                        usage: GroupUsage::from_report(
                            r.job_ids.len(),
                            iter_s,
                            &r.stage_s,
                            r.usage.as_ref(),
                        ),
                    });
            }
        }
    }
}

/// Lets the round's samples start once every launch still pending has started up (or, with
/// `wait_for_all` false, those that have), at most `at_once` at a time (0: all together),
/// in launch order.
///
/// On a real cluster each launch has its nodes to itself; on a small machine standing in for
/// one, the launches of a round share its cores, and a sample that runs while other launches
/// start their ranks or run their own samples measures them, not its own speed, and the more
/// launches a round has, the slower its samples come out. A launch resolved early (failed, lost) leaves `pending`
/// and holds nothing up; a sample's report frees its place. A launch that never starts up
/// (a hung trainer) holds the others for half of `--sample_timeout`.
fn start_samples(pending: &mut BTreeMap<u64, PendingLaunch>, at_once: usize, wait_for_all: bool) {
    if wait_for_all && !pending.values().all(PendingLaunch::started_up) {
        return;
    }
    let running = pending
        .values()
        .filter(|p| p.sample_started.is_some() && p.report.is_none())
        .count();
    let free = match at_once {
        0 => usize::MAX,
        n => n.saturating_sub(running),
    };
    for p in pending
        .values_mut()
        .filter(|p| p.ready.is_some() && p.sample_started.is_none())
        .take(free)
    {
        if let Some(go) = p.ready.take() {
            let _ = go.send(());
        }
        p.sample_started = Some(Instant::now());
    }
}

async fn kill_group(
    mut client: muri_runtime::client::WorkerClient,
    node: u32,
    group_id: u64,
    deadline: Duration,
) {
    match tokio::time::timeout(deadline, client.kill(pb::KillRequest { group_id })).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(node, group_id, "Kill failed: {}", e.message()),
        Err(_) => tracing::warn!(node, group_id, "Kill got no answer within {deadline:.1?}"),
    }
}

/// RPC errors that say the worker is not there (down, stopped, cut off), as opposed to a
/// refusal of the request itself.
fn worker_unreachable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unavailable | DeadlineExceeded | Cancelled | Unknown)
}

/// Moves launches whose fate is known from `pending` to `outcomes`; returns them.
fn resolve(
    pending: &mut BTreeMap<u64, PendingLaunch>,
    outcomes: &mut BTreeMap<u64, LaunchOutcome>,
    registered: &BTreeMap<u32, u64>,
) -> Vec<(u64, PendingLaunch)> {
    let ids: Vec<u64> = pending.keys().copied().collect();
    let mut out = Vec::new();
    for id in ids {
        let Some(p) = pending.get_mut(&id) else {
            continue;
        };
        let lost_node = p
            .nodes
            .iter()
            .zip(&p.epochs)
            .find(|(n, e)| registered.get(n) != Some(e));
        let outcome = match (lost_node, p.failure.take(), p.awaiting.is_empty()) {
            (Some((n, _)), _, _) => Some(LaunchOutcome::WorkerLost(format!(
                "worker {n} died, stopped or was replaced"
            ))),
            (None, Some(failure), _) => Some(failure),
            (None, None, true) => Some(match p.report {
                Some(sample) => LaunchOutcome::Measured(sample),
                None => LaunchOutcome::TrainerFailed(
                    "exited 0 without reporting iteration times".into(),
                ),
            }),
            (None, None, false) => None,
        };
        if let Some(o) = outcome {
            tracing::debug!(group = id, members = ?p.members, ?o, "launch resolved");
            outcomes.insert(id, o);
            if let Some(launch) = pending.remove(&id) {
                out.push((id, launch));
            }
        }
    }
    out
}

/// Parses the scheduler's `--listen` value.
pub fn parse_listen(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.parse()
        .or_else(|_| bail!("--listen `{addr}`: expected IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(nodes: &[(u32, u64)], awaiting: &[u32]) -> PendingLaunch {
        PendingLaunch {
            members: vec![0],
            nodes: nodes.iter().map(|&(n, _)| n).collect(),
            epochs: nodes.iter().map(|&(_, e)| e).collect(),
            missing_since: BTreeMap::new(),
            awaiting: awaiting.iter().copied().collect(),
            failure: None,
            report: None,
            ready: None,
            sample_started: None,
            reported_at: None,
        }
    }

    /// Rank 0 of launch `group_id` says StartSample; returns what its reply waits on.
    fn sample_ready(
        pending: &mut BTreeMap<u64, PendingLaunch>,
        group_id: u64,
        at_once: usize,
    ) -> oneshot::Receiver<()> {
        let (go, held) = oneshot::channel();
        record_event(pending, Event::SampleReady { group_id, go });
        start_samples(pending, at_once, true);
        held
    }

    fn held(rx: &mut oneshot::Receiver<()>) -> bool {
        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    fn two_launches() -> BTreeMap<u64, PendingLaunch> {
        BTreeMap::from([(1, launch(&[(0, 10)], &[0])), (2, launch(&[(1, 11)], &[1]))])
    }

    #[test]
    fn samples_start_together_once_every_launch_of_the_round_has_started_up() {
        let mut pending = two_launches();
        let mut first = sample_ready(&mut pending, 1, 0);
        assert!(held(&mut first), "launch 2 is still starting up");
        let mut second = sample_ready(&mut pending, 2, 0);
        assert_eq!(first.try_recv(), Ok(()));
        assert_eq!(second.try_recv(), Ok(()));
        // A launch the round no longer waits for (resolved, or stale) goes at once.
        assert_eq!(sample_ready(&mut pending, 9, 0).try_recv(), Ok(()));
    }

    #[test]
    fn one_sample_at_a_time_the_next_when_the_last_has_reported() {
        let mut pending = two_launches();
        let mut first = sample_ready(&mut pending, 1, 1);
        let mut second = sample_ready(&mut pending, 2, 1);
        assert_eq!(first.try_recv(), Ok(()));
        assert!(held(&mut second), "launch 1's sample is running");
        record_event(
            &mut pending,
            Event::Report(pb::ReportIterTimeRequest {
                group_id: 1,
                phase_iter_s: vec![0.01],
                ..Default::default()
            }),
        );
        start_samples(&mut pending, 1, true);
        assert_eq!(second.try_recv(), Ok(()));
        // Asking again after being let go (a call timed out in between): go at once.
        assert_eq!(sample_ready(&mut pending, 2, 1).try_recv(), Ok(()));
    }

    #[test]
    fn a_launch_resolved_or_never_started_up_does_not_hold_the_others_for_ever() {
        let mut pending = two_launches();
        let mut first = sample_ready(&mut pending, 1, 0);
        assert!(held(&mut first));
        // Past the hold: the launches that started up go without launch 2.
        start_samples(&mut pending, 0, false);
        assert_eq!(first.try_recv(), Ok(()));

        let mut pending = two_launches();
        let mut first = sample_ready(&mut pending, 1, 0);
        // Launch 2's worker is gone: resolved as lost, out of `pending`.
        resolve(
            &mut pending,
            &mut BTreeMap::new(),
            &BTreeMap::from([(0, 10)]),
        );
        assert!(!pending.contains_key(&2));
        start_samples(&mut pending, 0, true);
        assert_eq!(first.try_recv(), Ok(()));
    }

    fn outcome_of(nodes: &[(u32, u64)], registered: &[(u32, u64)]) -> Option<LaunchOutcome> {
        let mut pending = BTreeMap::from([(7, launch(nodes, &[0]))]);
        let mut outcomes = BTreeMap::new();
        let registered: BTreeMap<u32, u64> = registered.iter().copied().collect();
        resolve(&mut pending, &mut outcomes, &registered);
        outcomes.remove(&7)
    }

    #[test]
    fn a_launch_is_lost_with_a_worker_that_is_gone_or_registered_again() {
        // Both workers as at launch: still waiting for node 0's Done.
        assert!(outcome_of(&[(0, 10), (1, 11)], &[(0, 10), (1, 11)]).is_none());
        // Node 1 reaped, or registered again (a new epoch: its old registration is fenced).
        for registered in [vec![(0, 10)], vec![(0, 10), (1, 12)]] {
            match outcome_of(&[(0, 10), (1, 11)], &registered) {
                Some(LaunchOutcome::WorkerLost(why)) => assert!(why.contains("worker 1"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_spawn_failure_reported_through_done_is_the_trainers_failure() {
        let mut pending = BTreeMap::from([(7, launch(&[(0, 10)], &[0]))]);
        record_event(
            &mut pending,
            Event::Done(pb::DoneRequest {
                node_id: 0,
                group_id: 7,
                exit_code: 127,
                error: "spawning muri-trainer: No such file or directory".into(),
                ..Default::default()
            }),
        );
        let mut outcomes = BTreeMap::new();
        resolve(&mut pending, &mut outcomes, &BTreeMap::from([(0, 10)]));
        match outcomes.remove(&7) {
            Some(LaunchOutcome::TrainerFailed(why)) => {
                assert!(
                    why.contains("exit code 127") && why.contains("spawning"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreachable_workers_are_told_apart_from_refusals() {
        assert!(worker_unreachable(tonic::Code::Unavailable));
        assert!(worker_unreachable(tonic::Code::DeadlineExceeded));
        assert!(!worker_unreachable(tonic::Code::InvalidArgument));
        assert!(!worker_unreachable(tonic::Code::FailedPrecondition));
    }
}
