//! `muri worker`: one per node. Registers with the scheduler (node id, GPU ids, CPUs),
//! launches each dispatched group as one process tree, kills on request (SIGTERM, then
//! SIGKILL after a grace period), reports Done with the exit status, and heartbeats.
//!
//! A group runs as `mpirun -n <gpus> muri-trainer …` when built with the `mpi` feature;
//! otherwise the trainer is started once per rank (`--rank r --world G`). Every launch gets
//! its own process group so a kill reaches all of its processes and nothing is orphaned.
//!
//! A launch spanning several nodes is sent to every one of them with the host list. Each
//! worker checks its own share (it refuses GPU ids it does not own). Under MPI the head
//! (the first host, rank 0) starts one `mpirun` over all hosts and the others start nothing;
//! without MPI each worker starts its own share of the ranks.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::client::{self, SchedulerClient};
use muri_runtime::pb;
use muri_runtime::tls::Tls;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// Everything `muri worker` is told.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub scheduler: String,
    pub node_id: u32,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub listen: SocketAddr,
    /// The IP the scheduler, the other nodes' MPI daemons and the trainers' peers reach this
    /// node at; `None` = the listen IP (which then must not be unspecified).
    pub advertise: Option<IpAddr>,
    pub token: Token,
    /// Served to the scheduler and used to dial it.
    pub tls: Tls,
    /// How long a scheduler may keep refusing the registration before the worker gives up.
    pub register_timeout: Duration,
    /// The `muri-trainer` executable.
    pub trainer: PathBuf,
    /// Launch groups with `mpirun` (feature `mpi`).
    pub use_mpi: bool,
    pub kill_grace: Duration,
    /// Directory for trainer checkpoints (passed to every launch).
    pub checkpoint_dir: Option<PathBuf>,
    /// Extra `muri-trainer` flags for every launch (`--workload real --data-dir …`).
    pub trainer_flags: Vec<String>,
    /// What the trainers run (told to the scheduler at registration).
    pub workload: super::Workload,
}

/// A running launch: the process-group ids of its process trees (empty until they are
/// spawned, which happens after Execute has been answered).
struct Task {
    pgids: Vec<i32>,
    killed: bool,
    exited: Arc<Notify>,
}

struct WorkerState {
    cfg: WorkerConfig,
    /// The advertised IP (see [`super::advertised_ip`]).
    ip: IpAddr,
    /// Open MPI's launch agent for loopback hosts, written at start-up (MPI builds only).
    agent: Option<LaunchAgent>,
    tasks: Mutex<HashMap<u64, Task>>,
    scheduler: tokio::sync::Mutex<Option<SchedulerClient>>,
    /// The current registration's epoch (0 before the first), carried in Heartbeat and Done.
    epoch: AtomicU64,
    /// Launches spawning at once: a few, so that the process spawns of a large dispatch
    /// queue up instead of taking every CPU from the threads answering the RPCs.
    spawning: tokio::sync::Semaphore,
    /// The threads that fork trainers (see [`SpawnThreads`]).
    spawn_threads: SpawnThreads,
    /// When the last Execute arrived: spawns wait for a round's burst to end (see
    /// [`wait_for_dispatch_burst`]).
    last_execute: Mutex<Instant>,
    shutdown: Notify,
}

/// A job for a [`SpawnThreads`] thread.
type SpawnJob = Box<dyn FnOnce() + Send>;

/// Threads that fork the trainers and live as long as the worker. `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked a child exits, not its process: a trainer forked on tokio's
/// blocking pool, whose idle threads exit after 10 s, would be SIGKILLed with its thread in
/// the middle of a long launch.
struct SpawnThreads(std::sync::mpsc::Sender<SpawnJob>);

impl SpawnThreads {
    /// Starts `threads` threads in the current tokio runtime's context (a
    /// `tokio::process::Command` registers its child with the runtime).
    fn start(threads: usize) -> SpawnThreads {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        let rx = Arc::new(Mutex::new(rx));
        let runtime = tokio::runtime::Handle::current();
        for i in 0..threads {
            let (rx, runtime) = (rx.clone(), runtime.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("muri-spawn-{i}"))
                .spawn(move || {
                    let _context = runtime.enter();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("starting a spawn thread: {e}");
            }
        }
        SpawnThreads(tx)
    }

    /// Runs `f` on a spawn thread and returns its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow::anyhow!("the spawn threads are gone"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("a spawn thread died while spawning"))
    }
}

#[derive(Clone)]
struct WorkerService {
    state: Arc<WorkerState>,
}

/// The loopback launch agent as an executable file in the temp directory. Its name holds a
/// hash of its text, so workers on one machine share it and a changed agent gets a new
/// file; it is written under a temporary name and renamed, so no worker sees it half-written.
struct LaunchAgent(PathBuf);

impl LaunchAgent {
    fn write() -> anyhow::Result<LaunchAgent> {
        use std::hash::{Hash, Hasher};
        use std::os::unix::fs::PermissionsExt;
        let text = muri_workloads::launch::LOOPBACK_AGENT;
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hash);
        let dir = std::env::temp_dir();
        let path = dir.join(format!("muri-loopback-agent-{:016x}.sh", hash.finish()));
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(LaunchAgent(path));
        }
        let tmp = dir.join(format!("muri-loopback-agent.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing the launch agent {}", path.display()))?;
        Ok(LaunchAgent(path))
    }
}

/// Runs the worker until the scheduler sends Exit (or the process is killed).
pub async fn run_worker(cfg: WorkerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!cfg.gpus.is_empty(), "--gpus must list at least one GPU id");
    let ip = super::advertised_ip(cfg.listen, cfg.advertise)?;
    let agent = if cfg.use_mpi {
        Some(LaunchAgent::write()?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the worker to {}", cfg.listen))?;
    let addr = SocketAddr::new(ip, listener.local_addr()?.port());
    let state = Arc::new(WorkerState {
        cfg,
        ip,
        agent,
        tasks: Mutex::new(HashMap::new()),
        scheduler: tokio::sync::Mutex::new(None),
        epoch: AtomicU64::new(0),
        spawning: tokio::sync::Semaphore::new(CONCURRENT_SPAWNS),
        spawn_threads: SpawnThreads::start(CONCURRENT_SPAWNS),
        last_execute: Mutex::new(Instant::now()),
        shutdown: Notify::new(),
    });
    let svc = pb::scheduler_to_worker_server::SchedulerToWorkerServer::with_interceptor(
        WorkerService {
            state: state.clone(),
        },
        CheckToken(state.cfg.token.clone()),
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = state.cfg.tls.server_config() {
        builder = builder
            .tls_config(tls)
            .context("setting up the worker's TLS")?;
    }
    let shutdown_state = state.clone();
    let mut server = tokio::spawn(async move {
        let incoming = muri_runtime::server::incoming(listener);
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown_state.shutdown.notified().await
            })
            .await
    });
    tracing::info!(node = state.cfg.node_id, %addr, "worker listening");
    let mut heartbeat = tokio::spawn(heartbeat_loop(state.clone(), addr));
    let outcome = tokio::select! {
        served = &mut server => match served {
            Ok(r) => r.context("worker server"),
            Err(e) => Err(anyhow::Error::from(e).context("worker server task")),
        },
        gave_up = &mut heartbeat => Err(match gave_up {
            Ok(reason) => reason,
            Err(e) => anyhow::Error::from(e).context("worker heartbeat task"),
        }),
    };
    heartbeat.abort();
    server.abort();
    kill_all(&state).await;
    outcome
}

/// Launches a worker spawns at once (see `WorkerState::spawning`).
const CONCURRENT_SPAWNS: usize = 2;

/// Wait after the first refused registration; it doubles per refusal up to
/// [`REFUSED_MAX_WAIT`], so a misconfigured worker does not hammer the scheduler.
const REFUSED_FIRST_WAIT: Duration = Duration::from_millis(250);
const REFUSED_MAX_WAIT: Duration = Duration::from_secs(8);
/// Poll period while the scheduler is not reachable yet (it may simply start later).
const UNREACHABLE_WAIT: Duration = Duration::from_millis(300);

/// Refusals since the last successful registration.
struct Refusals {
    since: Instant,
    count: u32,
}

impl Refusals {
    fn new() -> Refusals {
        Refusals {
            since: Instant::now(),
            count: 0,
        }
    }

    /// Counts one more refusal; the wait before the next try (doubling), or `None` once
    /// refusals have lasted `limit`.
    fn next_wait(&mut self, limit: Duration) -> Option<Duration> {
        self.count += 1;
        if self.since.elapsed() >= limit {
            return None;
        }
        let doublings = (self.count - 1).min(16);
        Some(
            REFUSED_FIRST_WAIT
                .saturating_mul(1 << doublings)
                .min(REFUSED_MAX_WAIT),
        )
    }

    /// The error the worker exits with.
    fn give_up(&self, node: u32, why: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "worker {node}: the scheduler refused the registration {} times in {:.1} s, giving up: {why} \
             (check --token_file / MURI_TOKEN, --node-id and --gpus)",
            self.count,
            self.since.elapsed().as_secs_f64()
        )
    }
}

/// Why a registration did not succeed.
enum RegisterError {
    /// The scheduler answered and said no (wrong token, node outside the cluster spec, …).
    Refused(String),
    /// No answer: not listening yet, or the connection failed.
    Unreachable(anyhow::Error),
}

/// Registers (polling until the scheduler answers), then heartbeats; registers again
/// whenever the scheduler says it does not know this worker. Refusals are retried with
/// exponential back-off; after `register_timeout` of refusals without a success this
/// returns the reason, and the worker exits with it.
async fn heartbeat_loop(state: Arc<WorkerState>, addr: SocketAddr) -> anyhow::Error {
    let mut interval = Duration::from_millis(500);
    let mut registered = false;
    let mut refused: Option<Refusals> = None;
    let mut warned_unreachable = false;
    loop {
        let wait = if registered {
            registered = heartbeat(&state).await;
            interval
        } else {
            match register(&state, addr).await {
                Ok(ms) => {
                    registered = true;
                    refused = None;
                    interval = Duration::from_millis(u64::from(ms.max(50)));
                    interval
                }
                Err(RegisterError::Unreachable(e)) => {
                    if !warned_unreachable {
                        tracing::warn!("scheduler not reachable yet (retrying): {e:#}");
                        warned_unreachable = true;
                    }
                    UNREACHABLE_WAIT
                }
                Err(RegisterError::Refused(why)) => {
                    let refusals = refused.get_or_insert_with(Refusals::new);
                    match refusals.next_wait(state.cfg.register_timeout) {
                        Some(wait) => {
                            eprintln!(
                                "worker {}: registration refused: {why}; retrying in {:.2} s",
                                state.cfg.node_id,
                                wait.as_secs_f64()
                            );
                            wait
                        }
                        None => return refusals.give_up(state.cfg.node_id, &why),
                    }
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn scheduler_client(state: &WorkerState) -> anyhow::Result<SchedulerClient> {
    let mut guard = state.scheduler.lock().await;
    if let Some(c) = guard.as_ref() {
        return Ok(c.clone());
    }
    let c = client::scheduler(&state.cfg.scheduler, &state.cfg.token, &state.cfg.tls).await?;
    *guard = Some(c.clone());
    Ok(c)
}

async fn register(state: &WorkerState, addr: SocketAddr) -> Result<u32, RegisterError> {
    let mut c = scheduler_client(state)
        .await
        .map_err(RegisterError::Unreachable)?;
    let reply = c
        .register_worker(pb::RegisterWorkerRequest {
            node_id: state.cfg.node_id,
            addr: addr.to_string(),
            gpu_ids: state.cfg.gpus.clone(),
            cpus: state.cfg.cpus,
            workload: state.cfg.workload.as_str().into(),
        })
        .await;
    match reply {
        Ok(r) => {
            let r = r.into_inner();
            state.epoch.store(r.epoch, Ordering::Relaxed);
            tracing::info!(
                node = state.cfg.node_id,
                epoch = r.epoch,
                "registered with the scheduler"
            );
            Ok(r.heartbeat_interval_ms)
        }
        Err(s) if is_refusal(s.code()) => {
            tracing::error!("the scheduler refused this worker: {}", s.message());
            Err(RegisterError::Refused(format!(
                "{} ({:?})",
                s.message(),
                s.code()
            )))
        }
        Err(s) => Err(RegisterError::Unreachable(anyhow::anyhow!(
            "RegisterWorker with {}: {} ({:?})",
            client::transport_hint(&state.cfg.scheduler, &state.cfg.tls),
            s.message(),
            s.code()
        ))),
    }
}

/// Answers that retrying the same registration cannot change by itself.
fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unauthenticated
            | PermissionDenied
            | InvalidArgument
            | OutOfRange
            | AlreadyExists
            | FailedPrecondition
    )
}

/// Returns whether the scheduler still knows this worker. Kills the launches the scheduler
/// says it does not know; a fenced worker (its node registered again by another) kills
/// every launch and registers again, which is refused while the newer one is live.
async fn heartbeat(state: &Arc<WorkerState>) -> bool {
    let Ok(mut c) = scheduler_client(state).await else {
        return true;
    };
    let running = state
        .tasks
        .lock()
        .map(|t| t.keys().copied().collect())
        .unwrap_or_default();
    match c
        .heartbeat(pb::HeartbeatRequest {
            node_id: state.cfg.node_id,
            running_groups: running,
            epoch: state.epoch.load(Ordering::Relaxed),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            for group in r.kill_groups {
                let state = state.clone();
                tokio::spawn(async move {
                    if kill_group(&state, group).await {
                        tracing::warn!(group, "killed a launch the scheduler does not know");
                    }
                });
            }
            if r.fenced {
                eprintln!(
                    "worker {}: fenced: node {} was registered again by another worker; killing every launch",
                    state.cfg.node_id, state.cfg.node_id
                );
                kill_all(state).await;
            }
            r.known
        }
        Err(e) => {
            tracing::debug!("heartbeat: {}", e.message());
            true
        }
    }
}

/// Checks a request and returns this node's part of it.
fn validate_execute(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> Result<LocalPart, Status> {
    if req.jobs.is_empty() || req.jobs.len() > 4 {
        return Err(Status::invalid_argument("a group has 1 to 4 jobs"));
    }
    let mut slots: Vec<u32> = req.jobs.iter().map(|j| j.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    if slots.len() != req.jobs.len() || slots.iter().any(|&s| s > 3) {
        return Err(Status::invalid_argument(
            "slots must be distinct and in 0..=3",
        ));
    }
    for j in &req.jobs {
        if j.stage_ms.len() != 3 || !j.stage_ms.iter().all(|v| v.is_finite() && *v >= 0.0) {
            return Err(Status::invalid_argument(format!(
                "job {}: stage_ms needs 3 finite values ≥ 0",
                j.job_id
            )));
        }
        if j.iterations == 0 || j.iterations > 10_000_000 {
            return Err(Status::out_of_range(format!(
                "job {}: iterations out of range",
                j.job_id
            )));
        }
        if j.model.contains(':') || j.model.is_empty() {
            return Err(Status::invalid_argument(
                "model name must be non-empty and without ':'",
            ));
        }
    }
    if req.num_gpu == 0 || req.num_gpu > 1024 {
        return Err(Status::out_of_range("num_gpu out of range"));
    }
    if !(req.time_scale.is_finite() && req.time_scale >= 0.0) {
        return Err(Status::invalid_argument(
            "time_scale must be finite and ≥ 0",
        ));
    }
    let part = local_part(cfg, req)?;
    let mut ids = part.gpu_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || ids.len() != part.gpu_ids.len() {
        return Err(Status::invalid_argument(format!(
            "node {}: its share needs distinct GPU ids",
            cfg.node_id
        )));
    }
    if let Some(g) = part.gpu_ids.iter().find(|g| !cfg.gpus.contains(g)) {
        return Err(Status::out_of_range(format!(
            "GPU {g} is not on this worker (node {} owns {:?})",
            cfg.node_id, cfg.gpus
        )));
    }
    Ok(part)
}

/// This node's part of a launch.
#[derive(Debug, Clone, PartialEq)]
struct LocalPart {
    /// This node's GPUs, one rank each.
    gpu_ids: Vec<u32>,
    /// Global rank of this node's first rank.
    first_rank: u32,
    /// The first host: it runs rank 0 (and, under MPI, the launch's `mpirun`).
    head: bool,
}

/// Finds this node in the host list (a request without one is a single-node launch here).
fn local_part(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> Result<LocalPart, Status> {
    if req.hosts.is_empty() {
        return Ok(LocalPart {
            gpu_ids: req.gpu_ids.clone(),
            first_rank: 0,
            head: true,
        });
    }
    let mut rank = 0u32;
    let mut mine = None;
    for (i, host) in req.hosts.iter().enumerate() {
        if host.node_id == cfg.node_id {
            if mine.is_some() {
                return Err(Status::invalid_argument(format!(
                    "node {} is listed twice in the host list",
                    cfg.node_id
                )));
            }
            mine = Some(LocalPart {
                gpu_ids: host.gpu_ids.clone(),
                first_rank: rank,
                head: i == 0,
            });
        }
        if host.addr.parse::<IpAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "host {} of node {}: not an IP address",
                host.addr, host.node_id
            )));
        }
        rank += host.gpu_ids.len() as u32;
    }
    if rank != req.num_gpu {
        return Err(Status::invalid_argument(format!(
            "the host list has {rank} GPUs, the group {}",
            req.num_gpu
        )));
    }
    mine.ok_or_else(|| {
        Status::invalid_argument(format!(
            "node {} is not a host of group {}",
            cfg.node_id, req.group_id
        ))
    })
}

/// The trainer's arguments for one rank (or for all ranks under mpirun). Rank 0 runs on
/// the head, this worker or the one that launches: it serves QueryStats on `ip`.
fn trainer_args(cfg: &WorkerConfig, ip: IpAddr, req: &pb::ExecuteRequest) -> Vec<String> {
    let mut args = vec![
        "--group-id".to_string(),
        req.group_id.to_string(),
        "--scheduler".into(),
        req.scheduler_addr.clone(),
        "--time-scale".into(),
        req.time_scale.to_string(),
        "--stats-ip".into(),
        ip.to_string(),
    ];
    for j in &req.jobs {
        let ms = &j.stage_ms;
        args.push("--job".into());
        args.push(format!(
            "{}:{}:{}:{}:{}:{}:{}:{}:{}",
            j.slot,
            j.job_id,
            j.model,
            j.iterations,
            ms[0],
            ms[1],
            ms[2],
            j.attempt,
            j.batch_size.max(1)
        ));
    }
    args.extend(cfg.trainer_flags.iter().cloned());
    if let Some(dir) = &cfg.checkpoint_dir {
        args.push("--checkpoint-dir".into());
        args.push(dir.display().to_string());
    }
    args
}

/// The loopback `mpirun` flags (shared with `muri profile` and the trainer's tests).
pub use muri_workloads::launch::mpirun_local_args;
use muri_workloads::launch::{mpirun_multi_host_args, HostRanks};

/// Environment variables every rank gets from `mpirun`.
const RANK_ENV: [&str; 3] = ["MURI_TOKEN", "MURI_FAIL_JOBS", "RUST_LOG"];

fn mpirun_command(state: &WorkerState, req: &pb::ExecuteRequest) -> Command {
    let cfg = &state.cfg;
    let args = trainer_args(cfg, state.ip, req);
    let mut cmd = Command::new("mpirun");
    if req.hosts.len() > 1 {
        let hosts: Vec<HostRanks<'_>> = req
            .hosts
            .iter()
            .map(|h| HostRanks {
                addr: &h.addr,
                gpu_ids: &h.gpu_ids,
            })
            .collect();
        let agent = state.agent.as_ref().map_or(Path::new("ssh"), |a| &a.0);
        cmd.args(mpirun_multi_host_args(
            &hosts,
            agent,
            &cfg.trainer,
            &args,
            &RANK_ENV,
        ));
    } else {
        cmd.args(mpirun_local_args(req.num_gpu));
        for name in RANK_ENV {
            cmd.args(["-x", name]);
        }
        cmd.arg(&cfg.trainer).args(args);
    }
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("MURI_TOKEN", token_env(cfg))
        .env(
            "MURI_FAIL_JOBS",
            std::env::var("MURI_FAIL_JOBS").unwrap_or_default(),
        )
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    cmd
}

fn token_env(cfg: &WorkerConfig) -> String {
    cfg.token.secret().unwrap_or_default().to_string()
}

fn rank_command(state: &WorkerState, req: &pb::ExecuteRequest, rank: u32) -> Command {
    let cfg = &state.cfg;
    let mut cmd = Command::new(&cfg.trainer);
    cmd.args(trainer_args(cfg, state.ip, req))
        .args([
            "--rank",
            &rank.to_string(),
            "--world",
            &req.num_gpu.to_string(),
        ])
        .env("MURI_TOKEN", token_env(cfg));
    cmd
}

/// Where a launch's stdout and stderr go: its log file, else nowhere / the worker's stderr.
fn output_streams(log: Option<&File>) -> std::io::Result<(Stdio, Stdio)> {
    Ok(match log {
        Some(f) => (Stdio::from(f.try_clone()?), Stdio::from(f.try_clone()?)),
        None => (Stdio::null(), Stdio::inherit()),
    })
}

/// Heads a launch's log with the command it runs (program and arguments only: the token
/// travels in the environment and stays out of the log).
fn log_command(mut log: &File, cmd: &Command, gpu_ids: &[u32]) -> std::io::Result<()> {
    use std::io::Write;
    let std_cmd = cmd.as_std();
    let mut line = format!(
        "# CUDA_VISIBLE_DEVICES={gpu_ids:?} {}",
        std_cmd.get_program().to_string_lossy()
    );
    for arg in std_cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line.push('\n');
    log.write_all(line.as_bytes())
}

fn spawn_tree(mut cmd: Command, gpu_ids: &[u32], log: Option<&File>) -> std::io::Result<Child> {
    let visible: Vec<String> = gpu_ids.iter().map(u32::to_string).collect();
    if let Some(log) = log {
        log_command(log, &cmd, gpu_ids)?;
    }
    let (stdout, stderr) = output_streams(log)?;
    cmd.env("CUDA_VISIBLE_DEVICES", visible.join(","))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: prctl is async-signal-safe; the closure runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A worker that dies (even by SIGKILL) takes its trainer trees with it instead of
            // leaving them running on GPUs the scheduler has already given to others.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Opens (appending) the trainer log the scheduler asked for, creating its directory.
fn open_log(path: &str) -> anyhow::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let path = Path::new(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the trainer log {}", path.display()))?;
    Ok(Some(file))
}

/// Starts this node's part of a launch; an empty list when the head's `mpirun` runs it.
fn launch(
    state: &WorkerState,
    req: &pb::ExecuteRequest,
    part: &LocalPart,
) -> anyhow::Result<Vec<Child>> {
    let cfg = &state.cfg;
    if cfg.use_mpi && req.hosts.len() > 1 && !part.head {
        return Ok(Vec::new());
    }
    let log = open_log(&req.log_file)?;
    if cfg.use_mpi && req.num_gpu > 1 {
        let child = spawn_tree(mpirun_command(state, req), &part.gpu_ids, log.as_ref())
            .context("spawning mpirun")?;
        return Ok(vec![child]);
    }
    let ranks = part.first_rank..part.first_rank + part.gpu_ids.len() as u32;
    ranks
        .map(|rank| {
            spawn_tree(rank_command(state, req, rank), &part.gpu_ids, log.as_ref())
                .with_context(|| format!("spawning {}", cfg.trainer.display()))
        })
        .collect()
}

/// Processes this node starts for a launch: none when the head's `mpirun` runs its ranks,
/// one `mpirun` for a multi-GPU launch under MPI, else one trainer per local rank.
fn local_process_count(cfg: &WorkerConfig, req: &pb::ExecuteRequest, part: &LocalPart) -> u32 {
    if cfg.use_mpi && req.hosts.len() > 1 && !part.head {
        0
    } else if cfg.use_mpi && req.num_gpu > 1 {
        1
    } else {
        part.gpu_ids.len() as u32
    }
}

/// How long no Execute must have arrived before a launch's processes are spawned.
const DISPATCH_QUIET: Duration = Duration::from_millis(2);
/// The longest a spawn waits for the burst to end (a stream of Executes can't starve it).
const DISPATCH_QUIET_MAX_WAIT: Duration = Duration::from_millis(25);

/// Waits until no Execute has arrived for [`DISPATCH_QUIET`] (at most
/// [`DISPATCH_QUIET_MAX_WAIT`]). A round's Executes reach a worker as a burst within a
/// millisecond or two, and the scheduler's round waits for all their replies. Forking a
/// trainer stalls the worker's RPC threads (the fork holds the address space; the child's
/// exec takes a CPU), so spawning each launch as its Execute is answered delays the replies
/// still to come: 64 groups on 8 workers took 40–60 ms to be answered with spawns
/// interleaved, 4 ms with the spawns after the burst (BENCHMARKS.md). A launch starts at
/// most a few milliseconds later, against a process start of hundreds.
async fn wait_for_dispatch_burst(state: &WorkerState) {
    let began = Instant::now();
    loop {
        let quiet = match state.last_execute.lock() {
            Ok(last) => last.elapsed(),
            Err(_) => return,
        };
        let waited = began.elapsed();
        if quiet >= DISPATCH_QUIET || waited >= DISPATCH_QUIET_MAX_WAIT {
            return;
        }
        let left = (DISPATCH_QUIET - quiet).min(DISPATCH_QUIET_MAX_WAIT - waited);
        tokio::time::sleep(left).await;
    }
}

/// Spawns a recorded launch's process trees (blocking fork/exec, on a spawn thread) and
/// watches them. A launch killed while it was being spawned is killed as soon as its trees
/// exist; a spawn that fails is reported as Done with exit code 127 and the error, which
/// the scheduler counts as the trainer's failure.
async fn start_launch(state: Arc<WorkerState>, req: pb::ExecuteRequest, part: LocalPart) {
    let started = Instant::now();
    let group_id = req.group_id;
    let spawner = state.clone();
    wait_for_dispatch_burst(&state).await;
    let spawned = match state.spawning.acquire().await {
        Ok(_permit) => state
            .spawn_threads
            .run(move || launch(&spawner, &req, &part))
            .await
            .and_then(|r| r),
        Err(e) => Err(anyhow::Error::from(e)),
    };
    let children = match spawned {
        Ok(children) => children,
        Err(e) => {
            tracing::error!(group_id, "launch failed: {e:#}");
            let task = state
                .tasks
                .lock()
                .ok()
                .and_then(|mut t| t.remove(&group_id));
            if let Some(t) = &task {
                t.exited.notify_waiters();
            }
            if task.is_some_and(|t| !t.killed) {
                let done = pb::DoneRequest {
                    node_id: state.cfg.node_id,
                    group_id,
                    exit_code: 127,
                    signal: 0,
                    error: format!("{e:#}"),
                    wall_s: started.elapsed().as_secs_f64(),
                    epoch: state.epoch.load(Ordering::Relaxed),
                };
                send_done(&state, done).await;
            }
            return;
        }
    };
    let pgids: Vec<i32> = children
        .iter()
        .filter_map(|c| c.id())
        .map(|p| p as i32)
        .collect();
    let killed = match state.tasks.lock() {
        Ok(mut tasks) => match tasks.get_mut(&group_id) {
            Some(task) => {
                task.pgids = pgids.clone();
                task.killed
            }
            None => true,
        },
        Err(_) => true,
    };
    if killed {
        tracing::info!(group_id, "killed while it was being launched");
        signal_groups(&pgids, libc::SIGKILL);
    } else {
        tracing::info!(group_id, processes = pgids.len(), "launched");
    }
    watch_launch(state, group_id, children, started).await;
}

/// Waits for every process of a launch, then reports Done unless it was killed.
async fn watch_launch(
    state: Arc<WorkerState>,
    group_id: u64,
    children: Vec<Child>,
    started: Instant,
) {
    let mut exit_code = 0;
    let mut signal = 0;
    let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
    for mut child in children {
        match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = status.signal() {
                    signal = signal.max(sig);
                    exit_code = -1;
                } else if exit_code == 0 {
                    exit_code = status.code().unwrap_or(-1);
                }
            }
            Err(e) => {
                tracing::error!(group_id, "waiting for the trainer: {e}");
                exit_code = -1;
            }
        }
    }
    for pid in pids {
        remove_loopback_session_dirs(pid);
    }
    let task = state
        .tasks
        .lock()
        .ok()
        .and_then(|mut t| t.remove(&group_id));
    let killed = task.as_ref().is_some_and(|t| t.killed);
    if let Some(t) = &task {
        t.exited.notify_waiters();
    }
    if killed {
        tracing::info!(group_id, "killed group exited");
        return;
    }
    let done = pb::DoneRequest {
        node_id: state.cfg.node_id,
        group_id,
        exit_code,
        signal,
        error: String::new(),
        wall_s: started.elapsed().as_secs_f64(),
        epoch: state.epoch.load(Ordering::Relaxed),
    };
    send_done(&state, done).await;
}

/// Removes the session directories the loopback launch agent made for the daemons of an
/// `mpirun` that has exited (`$TMPDIR/muri-loopback-hosts/<host>-<mpirun pid>`).
fn remove_loopback_session_dirs(mpirun_pid: u32) {
    let dir = std::env::temp_dir().join("muri-loopback-hosts");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let suffix = format!("-{mpirun_pid}");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::debug!("removing {}: {e}", entry.path().display());
            }
        }
    }
}

async fn send_done(state: &WorkerState, done: pb::DoneRequest) {
    for attempt in 0..5 {
        match scheduler_client(state).await {
            Ok(mut c) => match c.done(done.clone()).await {
                Ok(_) => return,
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    tracing::warn!(group = done.group_id, "Done refused: {}", e.message());
                    return;
                }
                Err(e) => tracing::warn!(attempt, "Done: {}", e.message()),
            },
            Err(e) => tracing::warn!(attempt, "Done: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    tracing::error!(
        group = done.group_id,
        "could not report Done; the scheduler will time the group out"
    );
}

fn signal_groups(pgids: &[i32], sig: i32) {
    for &pgid in pgids {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// SIGTERM, then SIGKILL if the group is still there after the grace period.
async fn kill_group(state: &WorkerState, group_id: u64) -> bool {
    let Some((pgids, exited)) = state.tasks.lock().ok().and_then(|mut t| {
        t.get_mut(&group_id).map(|task| {
            task.killed = true;
            (task.pgids.clone(), task.exited.clone())
        })
    }) else {
        return false;
    };
    let notified = exited.notified();
    signal_groups(&pgids, libc::SIGTERM);
    if tokio::time::timeout(state.cfg.kill_grace, notified)
        .await
        .is_err()
    {
        tracing::warn!(group_id, "still alive after SIGTERM: SIGKILL");
        signal_groups(&pgids, libc::SIGKILL);
    }
    true
}

async fn kill_all(state: &WorkerState) {
    let ids: Vec<u64> = state
        .tasks
        .lock()
        .map(|t| t.keys().copied().collect())
        .unwrap_or_default();
    for id in ids {
        kill_group(state, id).await;
    }
}

#[tonic::async_trait]
impl pb::scheduler_to_worker_server::SchedulerToWorker for WorkerService {
    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteReply>, Status> {
        if let Ok(mut last) = self.state.last_execute.lock() {
            *last = Instant::now();
        }
        let req = req.into_inner();
        let cfg = &self.state.cfg;
        let part = validate_execute(cfg, &req)?;
        let mut tasks = self
            .state
            .tasks
            .lock()
            .map_err(|_| Status::internal("worker state poisoned"))?;
        if tasks.contains_key(&req.group_id) {
            return Err(Status::already_exists(format!(
                "group {} is already running",
                req.group_id
            )));
        }
        let local_processes = local_process_count(cfg, &req, &part);
        if local_processes == 0 {
            tracing::info!(group = req.group_id, head = req.hosts[0].node_id, gpus = ?part.gpu_ids, "share run by the head's mpirun");
            return Ok(Response::new(pb::ExecuteReply { local_processes: 0 }));
        }
        tasks.insert(
            req.group_id,
            Task {
                pgids: Vec::new(),
                killed: false,
                exited: Arc::new(Notify::new()),
            },
        );
        drop(tasks);
        // The launch is recorded (heartbeats list it, Kill finds it): answer now and start
        // the process trees off the RPC path, so a round's dispatch does not wait for
        // process spawns. A failed spawn is reported through Done.
        tokio::spawn(start_launch(self.state.clone(), req, part));
        Ok(Response::new(pb::ExecuteReply { local_processes }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<pb::KillReply>, Status> {
        let found = kill_group(&self.state, req.into_inner().group_id).await;
        Ok(Response::new(pb::KillReply { found }))
    }

    async fn exit(&self, req: Request<pb::ExitRequest>) -> Result<Response<pb::Ack>, Status> {
        if req.into_inner().kill_running {
            kill_all(&self.state).await;
        }
        tracing::info!("exit requested by the scheduler");
        self.state.shutdown.notify_one();
        Ok(Response::new(pb::Ack {}))
    }
}

/// Parses `0,1,2,3` (or a count `4`, meaning 0..4).
pub fn parse_gpus(text: &str) -> anyhow::Result<Vec<u32>> {
    if !text.contains(',') {
        if let Ok(n) = text.trim().parse::<u32>() {
            anyhow::ensure!(n > 0 && n <= 1024, "--gpus {n}: expected 1..=1024");
            return Ok((0..n).collect());
        }
    }
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .with_context(|| format!("--gpus: `{s}` is not a GPU id"))
        })
        .collect()
}

/// Fails at start, rather than at every launch, when `trainer` is not an executable file.
/// A bare name (`muri-trainer`) is looked up on `PATH`, as the launch will.
pub fn check_trainer(trainer: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let hint = "build it with `cargo build --release -p muri-workloads`, or pass --trainer PATH";
    let bare = trainer.components().count() == 1;
    let on_path = bare
        .then(|| std::env::var_os("PATH"))
        .flatten()
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(trainer))
                .find(|p| p.is_file())
        });
    let trainer = on_path.as_deref().unwrap_or(trainer);
    let meta = std::fs::metadata(trainer)
        .with_context(|| format!("trainer {} not found; {hint}", trainer.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!(
            "trainer {} is not an executable file; {hint}",
            trainer.display()
        );
    }
    Ok(())
}

/// Default trainer: `muri-trainer` next to the running executable.
pub fn default_trainer() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("muri-trainer")))
        .unwrap_or_else(|| PathBuf::from("muri-trainer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trainer forked for a launch outlives tokio's idle blocking threads (10 s): the
    /// thread that forked it, whose exit would SIGKILL it, lives as long as the worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forked_trainer_outlives_idle_threads() {
        let threads = SpawnThreads::start(1);
        let mut child = threads
            .run(|| {
                let mut sleep = Command::new("sleep");
                sleep.arg("30");
                spawn_tree(sleep, &[0], None)
            })
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died with its spawning thread"
        );
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }

    fn config(node_id: u32, gpus: Vec<u32>) -> WorkerConfig {
        WorkerConfig {
            scheduler: String::new(),
            node_id,
            gpus,
            cpus: 8,
            listen: "127.0.0.2:0".parse().unwrap(),
            advertise: None,
            token: Token::default(),
            tls: Tls::default(),
            register_timeout: Duration::from_secs(60),
            trainer: PathBuf::from("muri-trainer"),
            use_mpi: false,
            kill_grace: Duration::from_secs(1),
            checkpoint_dir: None,
            trainer_flags: Vec::new(),
            workload: crate::testbed::Workload::Emulated,
        }
    }

    /// A 6-GPU launch: node 3 holds ranks 0–3 (its GPUs 0–3), node 5 ranks 4–5 (GPUs 2, 3).
    fn two_node_request() -> pb::ExecuteRequest {
        let host = |node_id, addr: &str, gpu_ids: Vec<u32>| pb::HostShare {
            node_id,
            addr: addr.into(),
            gpu_ids,
        };
        pb::ExecuteRequest {
            group_id: 9,
            jobs: vec![pb::JobSlot {
                slot: 0,
                job_id: 1,
                model: "gpt2".into(),
                batch_size: 4,
                iterations: 10,
                stage_ms: vec![1.0, 2.0, 3.0],
                checkpoint_path: String::new(),
                attempt: 0,
            }],
            gpu_ids: vec![0, 1, 2, 3],
            num_gpu: 6,
            scheduler_addr: "127.0.0.1:1".into(),
            time_scale: 1.0,
            hosts: vec![
                host(3, "127.0.0.2", vec![0, 1, 2, 3]),
                host(5, "127.0.0.3", vec![2, 3]),
            ],
            log_file: String::new(),
        }
    }

    #[test]
    fn each_node_finds_its_own_share_and_first_rank() {
        let req = two_node_request();
        let head = validate_execute(&config(3, vec![0, 1, 2, 3]), &req).unwrap();
        assert_eq!(
            head,
            LocalPart {
                gpu_ids: vec![0, 1, 2, 3],
                first_rank: 0,
                head: true
            }
        );
        let other = validate_execute(&config(5, vec![0, 1, 2, 3]), &req).unwrap();
        assert_eq!(
            other,
            LocalPart {
                gpu_ids: vec![2, 3],
                first_rank: 4,
                head: false
            }
        );
    }

    #[test]
    fn a_worker_refuses_gpu_ids_it_does_not_own() {
        let req = two_node_request();
        let err = validate_execute(&config(5, vec![0, 1]), &req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(
            err.message().contains("GPU 2 is not on this worker"),
            "{err}"
        );
        let mut single = req.clone();
        single.hosts.clear();
        single.gpu_ids = vec![0, 7];
        let err = validate_execute(&config(3, vec![0, 1, 2, 3]), &single).unwrap_err();
        assert!(err.message().contains("GPU 7"), "{err}");
    }

    #[test]
    fn a_host_list_must_name_this_node_and_add_up() {
        let req = two_node_request();
        let err = validate_execute(&config(4, vec![0, 1, 2, 3]), &req).unwrap_err();
        assert!(err.message().contains("node 4 is not a host"), "{err}");
        let mut short = req.clone();
        short.num_gpu = 8;
        let err = validate_execute(&config(3, vec![0, 1, 2, 3]), &short).unwrap_err();
        assert!(err.message().contains("6 GPUs"), "{err}");
        let mut bad_addr = req;
        bad_addr.hosts[1].addr = "node-b".into();
        let err = validate_execute(&config(3, vec![0, 1, 2, 3]), &bad_addr).unwrap_err();
        assert!(err.message().contains("not an IP address"), "{err}");
    }

    #[test]
    fn execute_announces_the_processes_it_will_start() {
        let req = two_node_request();
        let head = config(3, vec![0, 1, 2, 3]);
        let other = config(5, vec![0, 1, 2, 3]);
        let part = |cfg: &WorkerConfig| validate_execute(cfg, &req).unwrap();
        // Without MPI every node starts one trainer per local rank.
        assert_eq!(local_process_count(&head, &req, &part(&head)), 4);
        assert_eq!(local_process_count(&other, &req, &part(&other)), 2);
        // Under MPI the head's mpirun runs every rank; the other node starts nothing.
        let mpi = |mut cfg: WorkerConfig| {
            cfg.use_mpi = true;
            cfg
        };
        let (head, other) = (mpi(head), mpi(other));
        assert_eq!(local_process_count(&head, &req, &part(&head)), 1);
        assert_eq!(local_process_count(&other, &req, &part(&other)), 0);
    }

    #[test]
    fn refusals_back_off_exponentially_then_give_up() {
        let mut r = Refusals::new();
        let waits: Vec<u64> = (0..7)
            .map(|_| r.next_wait(Duration::from_secs(3600)).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(r.next_wait(Duration::ZERO), None);
        let why = r.give_up(3, "missing or wrong x-muri-token").to_string();
        assert!(why.contains("worker 3") && why.contains("8 times"), "{why}");
    }
}
