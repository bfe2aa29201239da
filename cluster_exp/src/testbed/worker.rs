//! `muri worker`: one per node. Registers with the scheduler (node id, GPU ids, CPUs),
//! launches each dispatched group as one process tree, kills on request (SIGTERM, then
//! SIGKILL after a grace period), reports Done with the exit status, and heartbeats.
//!
//! A group runs as `mpirun -n <gpus> muri-trainer …` when built with the `mpi` feature;
//! otherwise the trainer is started once per rank (`--rank r --world G`). Every launch gets
//! its own process group so a kill reaches all of its processes and nothing is orphaned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::client::{self, SchedulerClient};
use muri_runtime::pb;
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
    pub token: Token,
    /// The `muri-trainer` executable.
    pub trainer: PathBuf,
    /// Launch groups with `mpirun` (feature `mpi`).
    pub use_mpi: bool,
    pub kill_grace: Duration,
    /// Directory for trainer checkpoints (passed to every launch).
    pub checkpoint_dir: Option<PathBuf>,
    /// Extra `muri-trainer` flags for every launch (`--workload real --data-dir …`).
    pub trainer_flags: Vec<String>,
}

/// A running launch: the process-group ids of its process trees.
struct Task {
    pgids: Vec<i32>,
    killed: bool,
    exited: Arc<Notify>,
}

struct WorkerState {
    cfg: WorkerConfig,
    tasks: Mutex<HashMap<u64, Task>>,
    scheduler: tokio::sync::Mutex<Option<SchedulerClient>>,
    shutdown: Notify,
}

#[derive(Clone)]
struct WorkerService {
    state: Arc<WorkerState>,
}

/// Runs the worker until the scheduler sends Exit (or the process is killed).
pub async fn run_worker(cfg: WorkerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!cfg.gpus.is_empty(), "--gpus must list at least one GPU id");
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the worker to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(WorkerState {
        cfg,
        tasks: Mutex::new(HashMap::new()),
        scheduler: tokio::sync::Mutex::new(None),
        shutdown: Notify::new(),
    });
    let svc = pb::scheduler_to_worker_server::SchedulerToWorkerServer::with_interceptor(
        WorkerService {
            state: state.clone(),
        },
        CheckToken(state.cfg.token.clone()),
    );
    let shutdown_state = state.clone();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown_state.shutdown.notified().await
            })
            .await
    });
    tracing::info!(node = state.cfg.node_id, %addr, "worker listening");
    let heartbeat = tokio::spawn(heartbeat_loop(state.clone(), addr));
    let served = server.await.context("worker server task")?;
    heartbeat.abort();
    kill_all(&state).await;
    served.context("worker server")
}

/// Registers (retrying until the scheduler answers), then heartbeats; registers again
/// whenever the scheduler says it does not know this worker.
async fn heartbeat_loop(state: Arc<WorkerState>, addr: SocketAddr) {
    let mut interval = Duration::from_millis(500);
    let mut registered = false;
    loop {
        if !registered {
            match register(&state, addr).await {
                Ok(ms) => {
                    registered = true;
                    interval = Duration::from_millis(u64::from(ms.max(50)));
                }
                Err(e) => tracing::debug!("register: {e:#}"),
            }
        } else {
            registered = heartbeat(&state).await;
        }
        tokio::time::sleep(if registered {
            interval
        } else {
            Duration::from_millis(300)
        })
        .await;
    }
}

async fn scheduler_client(state: &WorkerState) -> anyhow::Result<SchedulerClient> {
    let mut guard = state.scheduler.lock().await;
    if let Some(c) = guard.as_ref() {
        return Ok(c.clone());
    }
    let c = client::scheduler(&state.cfg.scheduler, &state.cfg.token).await?;
    *guard = Some(c.clone());
    Ok(c)
}

async fn register(state: &WorkerState, addr: SocketAddr) -> anyhow::Result<u32> {
    let mut c = scheduler_client(state).await?;
    let reply = c
        .register_worker(pb::RegisterWorkerRequest {
            node_id: state.cfg.node_id,
            addr: addr.to_string(),
            gpu_ids: state.cfg.gpus.clone(),
            cpus: state.cfg.cpus,
        })
        .await;
    match reply {
        Ok(r) => {
            tracing::info!(node = state.cfg.node_id, "registered with the scheduler");
            Ok(r.into_inner().heartbeat_interval_ms)
        }
        Err(s)
            if s.code() == tonic::Code::Unauthenticated
                || s.code() == tonic::Code::InvalidArgument
                || s.code() == tonic::Code::OutOfRange =>
        {
            tracing::error!("the scheduler refused this worker: {}", s.message());
            eprintln!(
                "worker {}: registration refused: {}",
                state.cfg.node_id,
                s.message()
            );
            anyhow::bail!("refused: {}", s.message())
        }
        Err(s) => anyhow::bail!("RegisterWorker: {}", s.message()),
    }
}

/// Returns whether the scheduler still knows this worker.
async fn heartbeat(state: &WorkerState) -> bool {
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
        })
        .await
    {
        Ok(r) => r.into_inner().known,
        Err(e) => {
            tracing::debug!("heartbeat: {}", e.message());
            true
        }
    }
}

fn validate_execute(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> Result<(), Status> {
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
    if let Some(g) = req.gpu_ids.iter().find(|g| !cfg.gpus.contains(g)) {
        // Multi-node groups list other nodes' GPUs too; only a local id outside ours is wrong
        // when the group fits on this node.
        if req.num_gpu as usize <= cfg.gpus.len() {
            return Err(Status::out_of_range(format!(
                "GPU {g} is not on this worker"
            )));
        }
    }
    Ok(())
}

/// The trainer's arguments for one rank (or for all ranks under mpirun).
fn trainer_args(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> Vec<String> {
    let mut args = vec![
        "--group-id".to_string(),
        req.group_id.to_string(),
        "--scheduler".into(),
        req.scheduler_addr.clone(),
        "--time-scale".into(),
        req.time_scale.to_string(),
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

fn mpirun_command(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(mpirun_local_args(req.num_gpu))
        .args(["-x", "MURI_TOKEN", "-x", "MURI_FAIL_JOBS", "-x", "RUST_LOG"])
        .arg(&cfg.trainer)
        .args(trainer_args(cfg, req))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
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

fn rank_command(cfg: &WorkerConfig, req: &pb::ExecuteRequest, rank: u32) -> Command {
    let mut cmd = Command::new(&cfg.trainer);
    cmd.args(trainer_args(cfg, req))
        .args([
            "--rank",
            &rank.to_string(),
            "--world",
            &req.num_gpu.to_string(),
        ])
        .env("MURI_TOKEN", token_env(cfg));
    cmd
}

fn spawn_tree(mut cmd: Command, gpu_ids: &[u32]) -> std::io::Result<Child> {
    let visible: Vec<String> = gpu_ids.iter().map(u32::to_string).collect();
    cmd.env("CUDA_VISIBLE_DEVICES", visible.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
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

fn launch(cfg: &WorkerConfig, req: &pb::ExecuteRequest) -> anyhow::Result<Vec<Child>> {
    if cfg.use_mpi && req.num_gpu > 1 {
        let child =
            spawn_tree(mpirun_command(cfg, req), &req.gpu_ids).context("spawning mpirun")?;
        return Ok(vec![child]);
    }
    (0..req.num_gpu)
        .map(|rank| {
            spawn_tree(rank_command(cfg, req, rank), &req.gpu_ids)
                .with_context(|| format!("spawning {}", cfg.trainer.display()))
        })
        .collect()
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
    };
    send_done(&state, done).await;
}

async fn send_done(state: &WorkerState, done: pb::DoneRequest) {
    for attempt in 0..5 {
        match scheduler_client(state).await {
            Ok(mut c) => match c.done(done.clone()).await {
                Ok(_) => return,
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
        let req = req.into_inner();
        let cfg = &self.state.cfg;
        validate_execute(cfg, &req)?;
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
        let children =
            launch(cfg, &req).map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        let pgids = children
            .iter()
            .filter_map(|c| c.id())
            .map(|p| p as i32)
            .collect();
        tasks.insert(
            req.group_id,
            Task {
                pgids,
                killed: false,
                exited: Arc::new(Notify::new()),
            },
        );
        drop(tasks);
        tracing::info!(group = req.group_id, jobs = req.jobs.len(), gpus = ?req.gpu_ids, "launched");
        tokio::spawn(watch_launch(
            self.state.clone(),
            req.group_id,
            children,
            Instant::now(),
        ));
        Ok(Response::new(pb::ExecuteReply {}))
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
