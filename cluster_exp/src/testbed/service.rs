//! The scheduler's gRPC services and the state they share with the round loop.
//!
//! Handlers validate and enqueue; they never touch the job table, so a malformed request
//! gets a gRPC error and can never corrupt (or crash) the loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use muri_runtime::auth::Token;
use muri_runtime::client::{self, WorkerClient};
use muri_runtime::pb;
use muri_runtime::tls::Tls;
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::{Request, Response, Status};

use super::Workload;
use crate::cluster::ClusterSpec;
use crate::models;

/// Longest job an online submission may ask for.
const MAX_ITERATIONS: u64 = 1_000_000_000;

/// A registered worker daemon.
#[derive(Clone)]
pub struct WorkerEntry {
    pub addr: String,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub last_seen: Instant,
    pub client: WorkerClient,
    /// This registration's generation: Heartbeat and Done from an older one are refused.
    pub epoch: u64,
    /// Launch ids the worker said it runs in its last heartbeat, and when (`None`: no
    /// heartbeat since it registered).
    pub reported: Vec<u64>,
    pub reported_at: Option<Instant>,
    /// Launches the loop found running there without its knowledge: the next heartbeat
    /// reply tells the worker to kill them.
    pub strays: Vec<u64>,
}

/// A job submitted with `muri submit`, waiting for the loop to pick it up.
#[derive(Debug, Clone)]
pub struct Submission {
    pub job_id: u64,
    pub model: String,
    pub num_gpu: u32,
    pub iterations: u64,
}

/// What the RPC handlers tell the loop.
#[derive(Debug)]
pub enum Event {
    Done(pb::DoneRequest),
    Report(pb::ReportIterTimeRequest),
    /// A launch's rank 0 started: where it serves `QueryStats`.
    Trainer(pb::RegisterTrainerRequest),
    /// A launch's rank 0 is ready to start its measured iterations; it starts when `go` is
    /// sent or dropped, and asks again after [`SAMPLE_START_HOLD`].
    SampleReady {
        group_id: u64,
        go: oneshot::Sender<()>,
    },
}

/// The longest one `StartSample` call is held before the trainer is told to ask again:
/// well inside the trainers' 10 s request timeout.
pub const SAMPLE_START_HOLD: Duration = Duration::from_secs(5);

/// State shared by the handlers and the loop.
pub struct Shared {
    pub spec: ClusterSpec,
    pub token: Token,
    /// How the loop dials the workers (their registered address, TLS when configured).
    pub tls: Tls,
    pub heartbeat_interval: Duration,
    /// A worker silent this long may be replaced by a new registration for its node.
    pub heartbeat_timeout: Duration,
    pub workers: Mutex<BTreeMap<u32, WorkerEntry>>,
    /// What the workers' trainers run, fixed by the first registration: a worker running
    /// anything else is refused (the run's clock, `--time_scale`, is chosen for one).
    pub workload: Mutex<Option<Workload>>,
    /// The next registration epoch (see [`first_epoch`]).
    pub next_epoch: AtomicU64,
    pub events: mpsc::UnboundedSender<Event>,
    pub submissions: Mutex<Vec<Submission>>,
    pub cancels: Mutex<Vec<u64>>,
    pub next_job_id: AtomicU64,
    pub status: Mutex<pb::StatusReply>,
    /// Woken on registrations, submissions and cancels (the loop may be idle).
    pub wake: Notify,
}

impl Shared {
    pub fn worker_count(&self) -> usize {
        self.workers.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// The first registration epoch of this scheduler process: microseconds since the Unix
/// epoch, so the epochs of a restarted scheduler are larger than any its predecessor gave
/// out and a worker's stale epoch can never match a new registration.
pub fn first_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// Whether a request carrying `epoch` comes from the registration `entry` (0: the sender
/// gave none, as a client outside the worker daemon may).
fn current(entry: &WorkerEntry, epoch: u64) -> bool {
    epoch == 0 || epoch == entry.epoch
}

/// One object serving the three scheduler-side services.
#[derive(Clone)]
pub struct SchedulerService {
    pub shared: std::sync::Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, Status> {
    m.lock()
        .map_err(|_| Status::internal("scheduler state poisoned"))
}

impl SchedulerService {
    /// A node id is owned by one live registration. A new one for the node is refused
    /// while the registered worker heartbeats, unless it comes from the same address (the
    /// same daemon registering again after a lost reply: nothing else can hold its port).
    /// A silent one (past the heartbeat timeout) is fenced: the loop sees the epoch change,
    /// preempts the node's groups, and the old daemon's later Heartbeat and Done are refused.
    fn fence(&self, node: u32, old: &WorkerEntry, addr: &str) -> Result<(), Status> {
        let silent = old.last_seen.elapsed();
        let timeout = self.shared.heartbeat_timeout;
        if old.addr != addr && silent <= timeout {
            tracing::warn!(node, live = %old.addr, newcomer = %addr, "second registration for a live node refused");
            return Err(Status::already_exists(format!(
                "node {node} is registered by a live worker at {} (heard from {} ms ago); a new \
                 registration for it is refused until that one misses its heartbeats for {} ms",
                old.addr,
                silent.as_millis(),
                timeout.as_millis()
            )));
        }
        tracing::warn!(node, old = %old.addr, old_epoch = old.epoch, new = %addr, silent_ms = silent.as_millis() as u64, "registration replaces the previous one, which is fenced");
        Ok(())
    }

    fn validate_worker(&self, req: &pb::RegisterWorkerRequest) -> Result<(), Status> {
        let spec = &self.shared.spec;
        if req.node_id >= spec.num_nodes() {
            return Err(Status::out_of_range(format!(
                "node_id {} is outside the cluster spec (0..{})",
                req.node_id,
                spec.num_nodes()
            )));
        }
        if req.gpu_ids.len() != spec.num_gpu_p_node as usize {
            return Err(Status::invalid_argument(format!(
                "worker offers {} GPUs, the cluster spec says {} per node",
                req.gpu_ids.len(),
                spec.num_gpu_p_node
            )));
        }
        let mut ids = req.gpu_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != req.gpu_ids.len() {
            return Err(Status::invalid_argument("duplicate GPU ids"));
        }
        req.addr
            .parse::<SocketAddr>()
            .map_err(|e| Status::invalid_argument(format!("addr `{}`: {e}", req.addr)))?;
        Ok(())
    }

    /// The first worker's workload is the run's; a worker that runs another is refused,
    /// since one time scale cannot be right for both (real models run at their own speed,
    /// emulated stages at the scaled one).
    fn check_workload(&self, node: u32, workload: Workload) -> Result<(), Status> {
        let mut run = lock(&self.shared.workload)?;
        match *run {
            None => {
                *run = Some(workload);
                Ok(())
            }
            Some(w) if w == workload => Ok(()),
            Some(w) => {
                tracing::warn!(
                    node,
                    run = w.as_str(),
                    worker = workload.as_str(),
                    "registration with another workload refused"
                );
                Err(Status::failed_precondition(format!(
                    "node {node} runs {} workloads, but this scheduler's workers run {}: every \
                     worker of a run must run the same (`muri worker --workload`)",
                    workload.as_str(),
                    w.as_str()
                )))
            }
        }
    }
}

#[tonic::async_trait]
impl pb::worker_to_scheduler_server::WorkerToScheduler for SchedulerService {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerReply>, Status> {
        let req = req.into_inner();
        self.validate_worker(&req)?;
        let workload = Workload::parse(&req.workload)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let client = client::connect_lazy(
            &req.addr,
            &self.shared.token,
            &self.shared.tls,
            Duration::from_secs(10),
        )
        .map(WorkerClient::new)
        .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let epoch = self.shared.next_epoch.fetch_add(1, Ordering::Relaxed);
        let entry = WorkerEntry {
            addr: req.addr.clone(),
            gpus: req.gpu_ids.clone(),
            cpus: req.cpus,
            last_seen: Instant::now(),
            client,
            epoch,
            reported: Vec::new(),
            reported_at: None,
            strays: Vec::new(),
        };
        let mut workers = lock(&self.shared.workers)?;
        if let Some(old) = workers.get(&req.node_id) {
            self.fence(req.node_id, old, &req.addr)?;
        }
        self.check_workload(req.node_id, workload)?;
        workers.insert(req.node_id, entry);
        drop(workers);
        tracing::info!(node = req.node_id, addr = %req.addr, gpus = ?req.gpu_ids, epoch, "worker registered");
        self.shared.wake.notify_one();
        Ok(Response::new(pb::RegisterWorkerReply {
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u32,
            epoch,
        }))
    }

    async fn done(&self, req: Request<pb::DoneRequest>) -> Result<Response<pb::Ack>, Status> {
        let req = req.into_inner();
        let registered = lock(&self.shared.workers)?
            .get(&req.node_id)
            .is_some_and(|w| current(w, req.epoch));
        if !registered {
            tracing::warn!(
                group = req.group_id,
                node = req.node_id,
                epoch = req.epoch,
                "Done from a registration that is gone or replaced: ignored"
            );
            return Err(Status::failed_precondition(format!(
                "node {} epoch {} is not registered (fenced or forgotten): its launches were \
                 already given up",
                req.node_id, req.epoch
            )));
        }
        tracing::debug!(
            group = req.group_id,
            node = req.node_id,
            rc = req.exit_code,
            "done"
        );
        self.shared
            .events
            .send(Event::Done(req))
            .map_err(|_| Status::unavailable("scheduler is shutting down"))?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let req = req.into_inner();
        let mut workers = lock(&self.shared.workers)?;
        let reply = match workers.get_mut(&req.node_id) {
            Some(w) if current(w, req.epoch) => {
                let now = Instant::now();
                w.last_seen = now;
                w.reported = req.running_groups;
                w.reported_at = Some(now);
                pb::HeartbeatReply {
                    known: true,
                    kill_groups: std::mem::take(&mut w.strays),
                    fenced: false,
                }
            }
            Some(w) => {
                tracing::warn!(
                    node = req.node_id,
                    stale = req.epoch,
                    current = w.epoch,
                    "heartbeat from a replaced registration: fenced"
                );
                pb::HeartbeatReply {
                    known: false,
                    kill_groups: Vec::new(),
                    fenced: true,
                }
            }
            None => pb::HeartbeatReply::default(),
        };
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl pb::trainer_to_scheduler_server::TrainerToScheduler for SchedulerService {
    async fn register_trainer(
        &self,
        req: Request<pb::RegisterTrainerRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let req = req.into_inner();
        if req.job_ids.is_empty() || req.job_ids.len() > 4 {
            return Err(Status::invalid_argument("a group has 1 to 4 jobs"));
        }
        req.addr
            .parse::<SocketAddr>()
            .map_err(|e| Status::invalid_argument(format!("addr `{}`: {e}", req.addr)))?;
        tracing::debug!(group = req.group_id, addr = %req.addr, "trainer registered");
        self.shared
            .events
            .send(Event::Trainer(req))
            .map_err(|_| Status::unavailable("scheduler is shutting down"))?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn start_sample(
        &self,
        req: Request<pb::StartSampleRequest>,
    ) -> Result<Response<pb::StartSampleReply>, Status> {
        let (go, released) = oneshot::channel();
        let group_id = req.into_inner().group_id;
        self.shared
            .events
            .send(Event::SampleReady { group_id, go })
            .map_err(|_| Status::unavailable("scheduler is shutting down"))?;
        // Sent, or dropped (the loop no longer waits for this launch): start. Still held
        // after SAMPLE_START_HOLD: ask again.
        let start = tokio::time::timeout(SAMPLE_START_HOLD, released)
            .await
            .is_ok();
        Ok(Response::new(pb::StartSampleReply { start }))
    }

    async fn report_iter_time(
        &self,
        req: Request<pb::ReportIterTimeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let req = req.into_inner();
        let finite = |v: &f64| v.is_finite() && *v >= 0.0;
        if !req.phase_iter_s.iter().all(finite) || !req.stage_s.iter().all(finite) {
            return Err(Status::invalid_argument(
                "iteration times must be finite and ≥ 0",
            ));
        }
        self.shared
            .events
            .send(Event::Report(req))
            .map_err(|_| Status::unavailable("scheduler is shutting down"))?;
        Ok(Response::new(pb::Ack {}))
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for SchedulerService {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let req = req.into_inner();
        if models::profile(&req.model, req.num_gpu).is_none() {
            return Err(Status::invalid_argument(format!(
                "no profile for model `{}` on {} GPUs (models: {})",
                req.model,
                req.num_gpu,
                models::MODELS.join(", ")
            )));
        }
        if !self.shared.spec.can_ever_fit(req.num_gpu) {
            return Err(Status::out_of_range(format!(
                "{} GPUs never fit this cluster",
                req.num_gpu
            )));
        }
        if req.iterations == 0 || req.iterations > MAX_ITERATIONS {
            return Err(Status::out_of_range(format!(
                "iterations must be 1..={MAX_ITERATIONS}"
            )));
        }
        let job_id = self.shared.next_job_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.submissions)?.push(Submission {
            job_id,
            model: req.model,
            num_gpu: req.num_gpu,
            iterations: req.iterations,
        });
        self.shared.wake.notify_one();
        Ok(Response::new(pb::SubmitReply { job_id }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let mut reply = lock(&self.shared.status)?.clone();
        reply.workers = self.shared.worker_count() as u32;
        Ok(Response::new(reply))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelReply>, Status> {
        let id = req.into_inner().job_id;
        let known = lock(&self.shared.status)?
            .jobs
            .iter()
            .any(|j| j.job_id == id)
            || lock(&self.shared.submissions)?
                .iter()
                .any(|s| s.job_id == id);
        if known {
            lock(&self.shared.cancels)?.push(id);
            self.shared.wake.notify_one();
        }
        Ok(Response::new(pb::CancelReply { found: known }))
    }
}
