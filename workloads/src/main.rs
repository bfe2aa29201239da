//! `muri-trainer`: one rank of a dispatched group. Hosts all of the group's jobs and runs
//! them through the 4-stage rotation; rank 0 registers with the scheduler, serves
//! `QueryStats`, and reports the measured iteration and stage times at the end.
//!
//! Launched by `muri worker`, either by `mpirun -n G` (feature `mpi`: a real all-reduce per
//! job; feature `nccl`: on the GPU) or once per rank with `--rank R --world G` (no
//! communication between ranks). `--workload real` (feature `torch`) trains tch models on the
//! data sets in `--data-dir`; the default emulates each stage from its profiled time.
//!
//! SIGTERM (the worker preempting the group) drains the rotation: in-flight iterations
//! finish, every job is checkpointed to `--checkpoint-dir`, and the next launch resumes there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::tls::{Tls, TlsFiles};
use muri_runtime::{client, pb};
use muri_workloads::emulated::EmulatedJob;
use muri_workloads::rotation::{self, Measurement, SlotJob};
use muri_workloads::sampler::{self, Sampler, Usage};
use muri_workloads::stage::{Collective, JobWorkload};

/// Exit code used when a fault was injected through `MURI_FAIL_JOBS`.
const INJECTED_FAILURE_EXIT: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "muri-trainer",
    about = "One rank of a muri job group: runs its jobs through the 4-stage rotation"
)]
struct Args {
    /// Group id assigned by the scheduler (unique per launch).
    #[arg(long = "group-id")]
    group_id: u64,
    /// A job of the group: SLOT:JOB_ID:MODEL:ITERATIONS:DATA_MS:COMPUTE_MS:NET_MS:ATTEMPT, optionally followed by :BATCH.
    #[arg(long = "job", required = true)]
    jobs: Vec<String>,
    /// `emulated`: stages sleep for their profiled times; `real`: tch models train on the
    /// data in `--data-dir` (needs the `torch` feature).
    #[arg(long, value_enum, default_value_t = Workload::Emulated)]
    workload: Workload,
    /// Synthetic data sets for real workloads (`muri data gen`; missing ones are generated).
    #[arg(long = "data-dir", default_value = "data")]
    data_dir: PathBuf,
    /// libtorch threads for the compute stage; 1 leaves the other core to the data stage.
    #[arg(long = "torch-threads", default_value_t = 1)]
    torch_threads: i32,
    /// Real model size: a width/sequence multiplier for the small test-size models (1 = as
    /// they are), or `paper` for the paper's models (VGG16/19, ResNet-18, ShuffleNet v2,
    /// BERT-base, GPT-2 small).
    #[arg(long = "model-scale", default_value = "1")]
    model_scale: String,
    /// Where real models train: `auto` = this rank's GPU (`cuda:<local rank>` among the
    /// `CUDA_VISIBLE_DEVICES` the worker set) when libtorch sees one, else the CPU; `cuda`
    /// fails without a GPU. Emulated workloads ignore it.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Gradient collective: `auto` = NCCL when built with it and a GPU is usable, else MPI
    /// under mpirun, else none.
    #[arg(long, value_enum, default_value_t = CollectiveKind::Auto)]
    collective: CollectiveKind,
    /// After every all-reduce and step, check that all ranks hold identical parameters
    /// (one extra all-reduce of the parameters; for tests).
    #[arg(long = "check-sync")]
    check_sync: bool,
    /// Run this many unmeasured iterations of every job first (thread pools, allocator and
    /// page cache warm up), as `muri profile` does.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Scheduler address rank 0 reports to; without it the trainer only prints its numbers.
    #[arg(long)]
    scheduler: Option<String>,
    /// Address rank 0 serves `QueryStats` on (port chosen by the OS): the address its
    /// worker advertises, so the scheduler can reach it from another machine.
    #[arg(long = "stats-ip", default_value = "127.0.0.1")]
    stats_ip: std::net::IpAddr,
    /// Emulated stage time = profiled time × this.
    #[arg(long = "time-scale", default_value_t = 1.0)]
    time_scale: f64,
    /// Rank and world size for direct launch (ignored under MPI).
    #[arg(long, default_value_t = 0)]
    rank: usize,
    #[arg(long, default_value_t = 1)]
    world: usize,
    /// Directory for per-job checkpoints (`<dir>/job-<id>.ckpt`).
    #[arg(long = "checkpoint-dir")]
    checkpoint_dir: Option<PathBuf>,
    /// Shared secret file (else MURI_TOKEN).
    #[arg(long = "token-file")]
    token_file: Option<PathBuf>,
    /// PEM CA the scheduler's certificate chains to: reports then go over TLS (the worker
    /// passes its own --tls_ca).
    #[arg(long = "tls-ca")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate for a scheduler that requires one (mutual TLS).
    #[arg(long = "tls-client-cert")]
    tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long = "tls-client-key")]
    tls_client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Emulated,
    Real,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CollectiveKind {
    Auto,
    Local,
    Mpi,
    Nccl,
}

/// Batch size when `--job` names none (the scheduler always sends one).
const DEFAULT_BATCH: usize = 32;

/// One parsed `--job`.
#[derive(Debug, Clone)]
struct JobArg {
    slot: usize,
    job_id: u64,
    model: String,
    iterations: u64,
    stage_ms: [f64; 3],
    attempt: u32,
    batch_size: usize,
}

fn parse_job(text: &str) -> anyhow::Result<JobArg> {
    let f: Vec<&str> = text.split(':').collect();
    if f.len() != 8 && f.len() != 9 {
        bail!("--job `{text}`: expected SLOT:JOB_ID:MODEL:ITERATIONS:DATA_MS:COMPUTE_MS:NET_MS:ATTEMPT[:BATCH]");
    }
    let num = |i: usize, what: &str| -> anyhow::Result<f64> {
        let v: f64 = f[i]
            .parse()
            .with_context(|| format!("--job `{text}`: {what} `{}`", f[i]))?;
        anyhow::ensure!(
            v.is_finite() && v >= 0.0,
            "--job `{text}`: {what} must be ≥ 0"
        );
        Ok(v)
    };
    let slot = f[0]
        .parse()
        .with_context(|| format!("--job `{text}`: slot"))?;
    anyhow::ensure!(slot < rotation::SLOTS, "--job `{text}`: slot must be 0..3");
    Ok(JobArg {
        slot,
        job_id: f[1]
            .parse()
            .with_context(|| format!("--job `{text}`: job id"))?,
        model: f[2].to_string(),
        iterations: f[3]
            .parse()
            .with_context(|| format!("--job `{text}`: iterations"))?,
        stage_ms: [num(4, "data ms")?, num(5, "compute ms")?, num(6, "net ms")?],
        attempt: f[7]
            .parse()
            .with_context(|| format!("--job `{text}`: attempt"))?,
        batch_size: match f.get(8) {
            Some(b) => b.parse().ok().filter(|&b: &usize| b > 0).with_context(|| {
                format!("--job `{text}`: batch size must be a positive integer")
            })?,
            None => DEFAULT_BATCH,
        },
    })
}

/// `MURI_FAIL_JOBS=ID:N,...`: the trainer hosting job ID exits with code 3 while the job's
/// attempt number is below N (fault injection for the retry tests; a real process exit).
fn injected_failure(jobs: &[JobArg]) -> Option<u64> {
    let spec = std::env::var("MURI_FAIL_JOBS").ok()?;
    for item in spec.split(',') {
        let (id, n) = item.split_once(':')?;
        let (id, n): (u64, u32) = (id.trim().parse().ok()?, n.trim().parse().ok()?);
        if jobs.iter().any(|j| j.job_id == id && j.attempt < n) {
            return Some(id);
        }
    }
    None
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("muri-trainer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let process_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing the SIGTERM handler")?;
    let jobs: Vec<JobArg> = args
        .jobs
        .iter()
        .map(|j| parse_job(j))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale >= 0.0,
        "--time-scale must be ≥ 0"
    );
    let comm = make_collective(&args)?;
    tracing::debug!(device = ?args.device, scale = %args.model_scale, "real-model settings");
    if let Some(id) = injected_failure(&jobs) {
        eprintln!("muri-trainer: injected failure for job {id} (MURI_FAIL_JOBS)");
        return Ok(ExitCode::from(INJECTED_FAILURE_EXIT));
    }
    let token = Token::load(args.token_file.as_deref())?;
    let progress = Arc::new(Progress::new(&jobs, process_start));
    let reporter = if comm.rank() == 0 {
        Reporter::start(&args, &jobs, &token, progress.clone())?
    } else {
        None
    };
    let early_finish = reporter.as_ref().map(Reporter::early_finish_sender);
    let slot_jobs = build_workloads(&args, &jobs, &progress, early_finish.as_ref())?;
    if args.warmup > 0 {
        let warm: Vec<SlotJob> = slot_jobs
            .iter()
            .map(|j| SlotJob {
                slot: j.slot,
                iterations: args.warmup,
                workload: j.workload.clone(),
            })
            .collect();
        rotation::run(&warm, comm.as_ref(), &AtomicU64::new(0), &stop)?;
        progress.reset();
    }
    let startup_s = process_start.elapsed().as_secs_f64();
    if let Some(r) = &reporter {
        r.await_sample_start();
    }
    // Every rank waits for rank 0 (held by StartSample), so the sample's first iteration
    // starts on all ranks together.
    comm.wait_for_all_ranks()?;
    tracing::info!(group = args.group_id, startup_s, "training started");
    let usage_sampler = Sampler::start(sampler::gpu_index_from_env());
    let _ = progress.training_started.set(Instant::now());
    let measured = rotation::run(&slot_jobs, comm.as_ref(), &progress.passes, &stop)?;
    let usage = usage_sampler.finish();
    save_checkpoints(&args, comm.rank(), &slot_jobs)?;
    tracing::info!(
        group = args.group_id,
        rank = comm.rank(),
        ?measured,
        "sample done"
    );
    if comm.rank() == 0 {
        print_losses(&slot_jobs);
        if args.check_sync {
            println!(
                "check-sync: {} parameter checks passed",
                SYNC_CHECKS.load(Ordering::Relaxed)
            );
        }
    }
    if measured.stopped {
        eprintln!(
            "muri-trainer: stopped by SIGTERM after {:?} iterations; checkpoints saved",
            measured.iterations_run
        );
        // The scheduler carries these counts into the next launch; it may be gone already
        // (shutting down), which is no failure of this launch.
        if let Some(r) = reporter {
            if let Err(e) = r.report(&jobs, &measured, startup_s, &usage) {
                tracing::warn!("final report after SIGTERM: {e:#}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match reporter {
        Some(r) => r.report(&jobs, &measured, startup_s, &usage)?,
        None if comm.rank() == 0 => println!("{}", measurement_line(&measured)),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// One machine-readable line (what `muri profile` parses):
/// `measurement phase_iter_s=A,B stage_s=D,C,S passes=N wall_s=W iterations=I,J`.
fn measurement_line(m: &Measurement) -> String {
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.6}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let runs: Vec<String> = m.iterations_run.iter().map(u64::to_string).collect();
    format!(
        "measurement phase_iter_s={} stage_s={} passes={} wall_s={:.6} iterations={}",
        list(&m.phase_iter_s),
        list(&m.stage_s),
        m.passes,
        m.wall_s,
        runs.join(",")
    )
}

/// `job <id>: iterations <n>, loss <x>, params <hash>` for real workloads: what users and
/// tests look at to see that training progresses and that a resumed job holds the state
/// its checkpoint saved.
fn print_losses(jobs: &[SlotJob]) {
    for j in jobs {
        let Ok(w) = j.workload.lock() else { continue };
        let Some(loss) = w.last_loss() else { continue };
        let hash = w.param_checksum().map(|p| params_hash(&p)).unwrap_or(0);
        println!(
            "job {}: iterations {}, loss {loss:.6}, params {hash:016x}",
            w.job_id(),
            w.iterations_done()
        );
    }
}

/// FNV-1a over the parameters' bit patterns: equal hashes mean bit-identical weights.
fn params_hash(params: &[f32]) -> u64 {
    params.iter().fold(0xcbf2_9ce4_8422_2325, |h, p| {
        p.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// Parameter checks `--check-sync` passed (printed at the end, so tests see they ran).
static SYNC_CHECKS: AtomicU64 = AtomicU64::new(0);

fn make_collective(args: &Args) -> anyhow::Result<Box<dyn Collective>> {
    let under_mpirun = std::env::var("OMPI_COMM_WORLD_SIZE").is_ok_and(|v| v != "1")
        || std::env::var_os("PMI_SIZE").is_some();
    let kind = match args.collective {
        CollectiveKind::Auto if under_mpirun && nccl_usable() => CollectiveKind::Nccl,
        CollectiveKind::Auto if under_mpirun => CollectiveKind::Mpi,
        CollectiveKind::Auto => CollectiveKind::Local,
        k => k,
    };
    match kind {
        CollectiveKind::Mpi => mpi_collective(args.workload),
        CollectiveKind::Nccl => nccl_collective(),
        _ => {
            anyhow::ensure!(
                !under_mpirun,
                "started by mpirun: use --collective mpi or nccl (a build with the `mpi` feature)"
            );
            anyhow::ensure!(
                args.world >= 1 && args.rank < args.world,
                "--rank must be below --world"
            );
            Ok(Box::new(muri_workloads::collective::Local {
                rank: args.rank,
                size: args.world,
            }))
        }
    }
}

/// Emulated ranks wait for each other's all-reduces sleeping, not spinning (see
/// `MpiCollective::patient`).
#[cfg(feature = "mpi")]
fn mpi_collective(workload: Workload) -> anyhow::Result<Box<dyn Collective>> {
    let c = muri_workloads::collective::mpi_impl::MpiCollective::init(rotation::SLOTS)?;
    Ok(match workload {
        Workload::Emulated => Box::new(c.patient(std::time::Duration::from_micros(100))),
        Workload::Real => Box::new(c),
    })
}

#[cfg(not(feature = "mpi"))]
fn mpi_collective(_: Workload) -> anyhow::Result<Box<dyn Collective>> {
    bail!("this muri-trainer was built without the `mpi` feature")
}

#[cfg(feature = "nccl")]
fn nccl_usable() -> bool {
    let (cuda, nccl) = muri_workloads::collective::nccl_impl::libraries_present();
    cuda && nccl
}

#[cfg(not(feature = "nccl"))]
fn nccl_usable() -> bool {
    false
}

#[cfg(feature = "nccl")]
fn nccl_collective() -> anyhow::Result<Box<dyn Collective>> {
    use muri_workloads::collective::{mpi_impl::MpiCollective, nccl_impl::NcclCollective};
    let mpi = MpiCollective::init(rotation::SLOTS)?;
    Ok(Box::new(NcclCollective::init(mpi, rotation::SLOTS)?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_collective() -> anyhow::Result<Box<dyn Collective>> {
    bail!("this muri-trainer was built without the `nccl` feature")
}

fn checkpoint_path(args: &Args, job_id: u64) -> Option<PathBuf> {
    args.checkpoint_dir
        .as_ref()
        .map(|d| d.join(format!("job-{job_id}.ckpt")))
}

/// Every job's workload, resumed from its checkpoint, counting its iterations in
/// `progress`; jobs shorter than the group's longest announce their last iteration on
/// `early_finish`.
fn build_workloads(
    args: &Args,
    jobs: &[JobArg],
    progress: &Arc<Progress>,
    early_finish: Option<&EarlyFinish>,
) -> anyhow::Result<Vec<SlotJob>> {
    let longest = jobs.iter().map(|j| j.iterations).max().unwrap_or(0);
    #[cfg(feature = "torch")]
    if args.workload == Workload::Real {
        muri_workloads::torch::configure_threads(args.torch_threads);
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (index, j) in jobs.iter().enumerate() {
        let mut w = build_workload(args, j)?;
        if let Some(path) = checkpoint_path(args, j.job_id).filter(|p| p.exists()) {
            w.restore(&path)
                .with_context(|| format!("job {}: resuming from {}", j.job_id, path.display()))?;
            tracing::info!(job = j.job_id, from = %path.display(), iterations = w.iterations_done(), "resumed");
        }
        if args.check_sync {
            w = Box::new(SyncChecked { inner: w });
        }
        let notify = early_finish.filter(|_| j.iterations > 0 && j.iterations < longest);
        w = Box::new(Counted {
            inner: w,
            progress: progress.clone(),
            index,
            target: j.iterations,
            notify: notify.cloned(),
        });
        tracing::debug!(job = j.job_id, model = %j.model, batch = j.batch_size, slot = j.slot, "workload ready");
        out.push(SlotJob {
            slot: j.slot,
            iterations: j.iterations,
            workload: Arc::new(Mutex::new(w)),
        });
    }
    Ok(out)
}

fn build_workload(args: &Args, j: &JobArg) -> anyhow::Result<Box<dyn JobWorkload>> {
    match args.workload {
        Workload::Emulated => Ok(Box::new(EmulatedJob::new(
            j.job_id,
            j.stage_ms,
            args.time_scale,
        ))),
        Workload::Real => real_workload(args, j),
    }
}

#[cfg(feature = "torch")]
/// This rank's index among the ranks on its node: Open MPI's local rank under mpirun, else
/// `--rank` (direct launch starts all of a group's ranks on one worker).
fn local_rank(args: &Args) -> usize {
    std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(args.rank)
}

#[cfg(feature = "torch")]
fn real_workload(args: &Args, j: &JobArg) -> anyhow::Result<Box<dyn JobWorkload>> {
    use muri_workloads::torch::{self, device::DeviceChoice};
    let choice = match args.device {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Cuda => DeviceChoice::Cuda,
    };
    let spec = torch::RealJobSpec {
        job_id: j.job_id,
        model: j.model.clone(),
        batch_size: j.batch_size,
        data_dir: args.data_dir.clone(),
        seed: j.job_id,
        scale: args.model_scale.parse().context("--model-scale")?,
        device: torch::device::resolve(choice, local_rank(args))?,
    };
    tracing::info!(job = j.job_id, device = %torch::device::name(spec.device), scale = %spec.scale, "building the model");
    torch::build_job(&spec).with_context(|| format!("job {}", j.job_id))
}

#[cfg(not(feature = "torch"))]
fn real_workload(_args: &Args, _j: &JobArg) -> anyhow::Result<Box<dyn JobWorkload>> {
    bail!("--workload real needs a muri-trainer built with the `torch` feature")
}

/// Wraps a workload and, after each all-reduce + step, all-reduces its parameters once more:
/// the sum over ranks equals `size × own` on every rank exactly when all replicas agree.
struct SyncChecked {
    inner: Box<dyn JobWorkload>,
}

impl JobWorkload for SyncChecked {
    fn job_id(&self) -> u64 {
        self.inner.job_id()
    }
    fn load_data(&mut self) -> anyhow::Result<()> {
        self.inner.load_data()
    }
    fn compute(&mut self) -> anyhow::Result<()> {
        self.inner.compute()
    }
    fn allreduce_and_step(&mut self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        self.inner.allreduce_and_step(comm, slot)?;
        let Some(own) = self.inner.param_checksum() else {
            return Ok(());
        };
        let mut sum = own.clone();
        comm.allreduce_sum(slot, &mut sum)?;
        let n = comm.size() as f32;
        let worst = own
            .iter()
            .zip(&sum)
            .map(|(&p, &s)| (s - n * p).abs() / (n * p.abs()).max(1e-30))
            .fold(0.0f32, f32::max);
        anyhow::ensure!(
            worst <= 1e-6,
            "job {}: parameters differ across ranks after iteration {} (relative gap {worst:e})",
            self.job_id(),
            self.iterations_done()
        );
        SYNC_CHECKS.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            job = self.job_id(),
            params = own.len(),
            "replicas identical"
        );
        Ok(())
    }
    fn checkpoint(&self, path: &std::path::Path) -> anyhow::Result<()> {
        self.inner.checkpoint(path)
    }
    fn restore(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        self.inner.restore(path)
    }
    fn last_loss(&self) -> Option<f64> {
        self.inner.last_loss()
    }
    fn iterations_done(&self) -> u64 {
        self.inner.iterations_done()
    }
    fn param_checksum(&self) -> Option<Vec<f32>> {
        self.inner.param_checksum()
    }
    fn absorb_delay(&mut self, late: Duration) {
        self.inner.absorb_delay(late)
    }
}

/// Rank 0 of each job saves its checkpoint (all ranks hold identical state).
fn save_checkpoints(args: &Args, rank: usize, jobs: &[SlotJob]) -> anyhow::Result<()> {
    if rank != 0 {
        return Ok(());
    }
    for j in jobs {
        let w = j
            .workload
            .lock()
            .map_err(|_| anyhow::anyhow!("workload lock poisoned"))?;
        if let Some(path) = checkpoint_path(args, w.job_id()) {
            w.checkpoint(&path)?;
        }
    }
    Ok(())
}

/// Rank 0's link to the scheduler: a small tokio runtime on its own threads, so the main
/// thread stays free for the rotation (and MPI).
struct Reporter {
    rt: tokio::runtime::Runtime,
    client: client::TrainerReportClient,
    group_id: u64,
}

impl Reporter {
    fn start(
        args: &Args,
        jobs: &[JobArg],
        token: &Token,
        progress: Arc<Progress>,
    ) -> anyhow::Result<Option<Reporter>> {
        let Some(addr) = &args.scheduler else {
            return Ok(None);
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the trainer's runtime")?;
        let stats_addr = rt.block_on(serve_stats(
            SocketAddr::new(args.stats_ip, 0),
            token.clone(),
            progress,
        ))?;
        let tls = Tls::load(TlsFiles {
            ca: args.tls_ca.clone(),
            client_cert: args.tls_client_cert.clone(),
            client_key: args.tls_client_key.clone(),
            ..TlsFiles::default()
        })?;
        let mut client = rt.block_on(client::trainer_reports(addr, token, &tls))?;
        let req = pb::RegisterTrainerRequest {
            group_id: args.group_id,
            job_ids: jobs.iter().map(|j| j.job_id).collect(),
            addr: stats_addr.to_string(),
        };
        rt.block_on(client.register_trainer(req))
            .context("RegisterTrainer")?;
        Ok(Some(Reporter {
            rt,
            client,
            group_id: args.group_id,
        }))
    }

    /// Tells the scheduler this launch has started up and waits for its go (see the
    /// `StartSample` RPC), asking again while it is held. A failed call holds nothing up:
    /// the sample starts anyway.
    fn await_sample_start(&self) {
        let mut client = self.client.clone();
        let req = pb::StartSampleRequest {
            group_id: self.group_id,
        };
        loop {
            match self.rt.block_on(client.start_sample(req)) {
                Ok(reply) if !reply.get_ref().start => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(group = self.group_id, "StartSample: {}", e.message());
                    return;
                }
            }
        }
    }

    /// The launch's final report: measured times, what rank 0's process used and, per job,
    /// the iterations it ran (so a stopped launch's jobs resume where they stopped) and
    /// whether it ran them all.
    fn report(
        mut self,
        jobs: &[JobArg],
        m: &Measurement,
        startup_s: f64,
        usage: &Usage,
    ) -> anyhow::Result<()> {
        let finished_job_ids = jobs
            .iter()
            .zip(&m.iterations_run)
            .filter(|(j, &ran)| j.iterations > 0 && ran >= j.iterations)
            .map(|(j, _)| j.job_id)
            .collect();
        let req = pb::ReportIterTimeRequest {
            group_id: self.group_id,
            job_ids: jobs.iter().map(|j| j.job_id).collect(),
            phase_iter_s: m.phase_iter_s.clone(),
            stage_s: m.stage_s.to_vec(),
            iterations: m.passes,
            startup_s,
            usage: Some(pb::ResourceUsage {
                cpu_cores: usage.cpu_cores,
                rss_bytes: usage.rss_bytes,
                read_bps: usage.read_bps,
                write_bps: usage.write_bps,
                gpu_util: usage.gpu_util,
            }),
            job_iterations: m.iterations_run.clone(),
            finished_job_ids,
            partial: false,
        };
        self.rt
            .block_on(self.client.report_iter_time(req))
            .context("ReportIterTime")?;
        Ok(())
    }
}

impl Reporter {
    /// Where a job that finishes before the group's longest announces its job id: each is
    /// sent to the scheduler (a partial report) the moment its last iteration ends, so that
    /// in real-time mode it completes then, not when the whole launch exits.
    fn early_finish_sender(&self) -> EarlyFinish {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (mut client, group_id) = (self.client.clone(), self.group_id);
        self.rt.spawn(async move {
            while let Some(job_id) = rx.recv().await {
                let req = pb::ReportIterTimeRequest {
                    group_id,
                    job_ids: vec![job_id],
                    finished_job_ids: vec![job_id],
                    partial: true,
                    ..Default::default()
                };
                if let Err(e) = client.report_iter_time(req).await {
                    tracing::warn!(job = job_id, "early-finish report: {}", e.message());
                }
            }
        });
        tx
    }
}

type EarlyFinish = tokio::sync::mpsc::UnboundedSender<u64>;

/// How far this launch got: what `QueryStats` answers (rank 0).
struct Progress {
    /// Group iterations: passes of the rotation.
    passes: AtomicU64,
    /// Per job (in `--job` order): its id and the iterations it ran in this launch.
    jobs: Vec<(u64, AtomicU64)>,
    process_start: Instant,
    /// When the measured iterations began (after start-up and warm-up).
    training_started: OnceLock<Instant>,
}

impl Progress {
    fn new(jobs: &[JobArg], process_start: Instant) -> Progress {
        Progress {
            passes: AtomicU64::new(0),
            jobs: jobs.iter().map(|j| (j.job_id, AtomicU64::new(0))).collect(),
            process_start,
            training_started: OnceLock::new(),
        }
    }

    /// Forgets the warm-up's iterations: only the launch's own count.
    fn reset(&self) {
        self.passes.store(0, Ordering::Relaxed);
        for (_, n) in &self.jobs {
            n.store(0, Ordering::Relaxed);
        }
    }

    fn reply(&self) -> pb::QueryStatsReply {
        let passes = self.passes.load(Ordering::Relaxed);
        let iteration_s = match self.training_started.get() {
            Some(t) if passes > 0 => t.elapsed().as_secs_f64() / passes as f64,
            _ => 0.0,
        };
        pb::QueryStatsReply {
            finished_iterations: passes,
            elapsed_s: self.process_start.elapsed().as_secs_f64(),
            job_ids: self.jobs.iter().map(|(id, _)| *id).collect(),
            job_iterations: self
                .jobs
                .iter()
                .map(|(_, n)| n.load(Ordering::Relaxed))
                .collect(),
            iteration_s,
        }
    }
}

/// Counts a job's iterations in this launch (for `QueryStats`) and, given a `notify`,
/// announces its last one.
struct Counted {
    inner: Box<dyn JobWorkload>,
    progress: Arc<Progress>,
    /// The job's index in `progress.jobs`.
    index: usize,
    /// Iterations it runs in this launch.
    target: u64,
    notify: Option<EarlyFinish>,
}

impl JobWorkload for Counted {
    fn job_id(&self) -> u64 {
        self.inner.job_id()
    }
    fn load_data(&mut self) -> anyhow::Result<()> {
        self.inner.load_data()
    }
    fn compute(&mut self) -> anyhow::Result<()> {
        self.inner.compute()
    }
    fn allreduce_and_step(&mut self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        self.inner.allreduce_and_step(comm, slot)?;
        let Some((_, count)) = self.progress.jobs.get(self.index) else {
            return Ok(());
        };
        let ran = count.fetch_add(1, Ordering::Relaxed) + 1;
        if ran == self.target {
            if let Some(notify) = &self.notify {
                // The receiver lives as long as the reporter's runtime: a closed channel
                // only means the process is exiting.
                let _ = notify.send(self.inner.job_id());
            }
        }
        Ok(())
    }
    fn checkpoint(&self, path: &std::path::Path) -> anyhow::Result<()> {
        self.inner.checkpoint(path)
    }
    fn restore(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        self.inner.restore(path)
    }
    fn last_loss(&self) -> Option<f64> {
        self.inner.last_loss()
    }
    fn iterations_done(&self) -> u64 {
        self.inner.iterations_done()
    }
    fn param_checksum(&self) -> Option<Vec<f32>> {
        self.inner.param_checksum()
    }
    fn absorb_delay(&mut self, late: Duration) {
        self.inner.absorb_delay(late)
    }
}

/// The `SchedulerToTrainer` service: how far this launch got.
struct Stats {
    progress: Arc<Progress>,
}

#[tonic::async_trait]
impl pb::scheduler_to_trainer_server::SchedulerToTrainer for Stats {
    async fn query_stats(
        &self,
        _req: tonic::Request<pb::QueryStatsRequest>,
    ) -> Result<tonic::Response<pb::QueryStatsReply>, tonic::Status> {
        Ok(tonic::Response::new(self.progress.reply()))
    }
}

/// Binds `bind` and serves `QueryStats` until the process exits.
async fn serve_stats(
    bind: SocketAddr,
    token: Token,
    progress: Arc<Progress>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the QueryStats port on {bind}"))?;
    let addr = listener.local_addr()?;
    let svc = pb::scheduler_to_trainer_server::SchedulerToTrainerServer::with_interceptor(
        Stats { progress },
        CheckToken(token),
    );
    tokio::spawn(async move {
        let incoming = muri_runtime::server::incoming(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::warn!("QueryStats server stopped: {e}");
        }
    });
    tokio::time::sleep(Duration::from_millis(0)).await;
    Ok(addr)
}
