//! `muri-trainer`: one rank of a dispatched group. Hosts all of the group's jobs and runs
//! them through the 4-stage rotation; rank 0 registers with the scheduler, serves
//! `QueryStats`, and reports the measured iteration and stage times at the end.
//!
//! Launched by `muri worker`, either by `mpirun -n G` (feature `mpi`: a real all-reduce per
//! job) or once per rank with `--rank R --world G` (no communication between ranks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::{client, pb};
use muri_workloads::emulated::EmulatedJob;
use muri_workloads::rotation::{self, Measurement, SlotJob};
use muri_workloads::stage::{Collective, JobWorkload};

/// Exit code used when a fault was injected through `MURI_FAIL_JOBS`.
const INJECTED_FAILURE_EXIT: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "muri-trainer",
    about = "One rank of a muri job group (emulated stages)"
)]
struct Args {
    /// Group id assigned by the scheduler (unique per launch).
    #[arg(long = "group-id")]
    group_id: u64,
    /// A job of the group: SLOT:JOB_ID:MODEL:ITERATIONS:DATA_MS:COMPUTE_MS:NET_MS:ATTEMPT.
    #[arg(long = "job", required = true)]
    jobs: Vec<String>,
    /// Scheduler address rank 0 reports to; without it the trainer only prints its numbers.
    #[arg(long)]
    scheduler: Option<String>,
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
}

/// One parsed `--job`.
#[derive(Debug, Clone)]
struct JobArg {
    slot: usize,
    job_id: u64,
    model: String,
    iterations: u64,
    stage_ms: [f64; 3],
    attempt: u32,
}

fn parse_job(text: &str) -> anyhow::Result<JobArg> {
    let f: Vec<&str> = text.split(':').collect();
    if f.len() != 8 {
        bail!("--job `{text}`: expected SLOT:JOB_ID:MODEL:ITERATIONS:DATA_MS:COMPUTE_MS:NET_MS:ATTEMPT");
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
    if let Some(id) = injected_failure(&jobs) {
        eprintln!("muri-trainer: injected failure for job {id} (MURI_FAIL_JOBS)");
        return Ok(ExitCode::from(INJECTED_FAILURE_EXIT));
    }
    let token = Token::load(args.token_file.as_deref())?;
    let finished = Arc::new(AtomicU64::new(0));
    let reporter = if comm.rank() == 0 {
        Reporter::start(&args, &jobs, &token, finished.clone(), process_start)?
    } else {
        None
    };
    let slot_jobs = build_workloads(&args, &jobs)?;
    let startup_s = process_start.elapsed().as_secs_f64();
    let measured = rotation::run(&slot_jobs, comm.as_ref(), &finished)?;
    save_checkpoints(&args, &slot_jobs)?;
    tracing::info!(
        group = args.group_id,
        rank = comm.rank(),
        ?measured,
        "sample done"
    );
    match reporter {
        Some(r) => r.report(&jobs, &measured, startup_s)?,
        None if comm.rank() == 0 => println!("{measured:?}"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn make_collective(args: &Args) -> anyhow::Result<Box<dyn Collective>> {
    #[cfg(feature = "mpi")]
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some()
    {
        let c = muri_workloads::collective::mpi_impl::MpiCollective::init(rotation::SLOTS)?;
        return Ok(Box::new(c));
    }
    #[cfg(not(feature = "mpi"))]
    if std::env::var("OMPI_COMM_WORLD_SIZE").is_ok_and(|v| v != "1") {
        bail!("started by mpirun, but this muri-trainer was built without the `mpi` feature");
    }
    anyhow::ensure!(
        args.world >= 1 && args.rank < args.world,
        "--rank must be below --world"
    );
    Ok(Box::new(muri_workloads::collective::Local {
        rank: args.rank,
        size: args.world,
    }))
}

fn checkpoint_path(args: &Args, job_id: u64) -> Option<PathBuf> {
    args.checkpoint_dir
        .as_ref()
        .map(|d| d.join(format!("job-{job_id}.ckpt")))
}

fn build_workloads(args: &Args, jobs: &[JobArg]) -> anyhow::Result<Vec<SlotJob>> {
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut w: Box<dyn JobWorkload> =
            Box::new(EmulatedJob::new(j.job_id, j.stage_ms, args.time_scale));
        if let Some(path) = checkpoint_path(args, j.job_id).filter(|p| p.exists()) {
            w.restore(&path)?;
        }
        tracing::debug!(job = j.job_id, model = %j.model, slot = j.slot, "workload ready");
        out.push(SlotJob {
            slot: j.slot,
            iterations: j.iterations,
            workload: Arc::new(Mutex::new(w)),
        });
    }
    Ok(out)
}

/// Rank 0 of each job saves its checkpoint (all ranks hold identical state).
fn save_checkpoints(args: &Args, jobs: &[SlotJob]) -> anyhow::Result<()> {
    if args.rank != 0 {
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
        finished: Arc<AtomicU64>,
        started: Instant,
    ) -> anyhow::Result<Option<Reporter>> {
        let Some(addr) = &args.scheduler else {
            return Ok(None);
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the trainer's runtime")?;
        let stats_addr = rt.block_on(serve_stats(token.clone(), finished, started))?;
        let mut client = rt.block_on(client::trainer_reports(addr, token))?;
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

    fn report(mut self, jobs: &[JobArg], m: &Measurement, startup_s: f64) -> anyhow::Result<()> {
        let req = pb::ReportIterTimeRequest {
            group_id: self.group_id,
            job_ids: jobs.iter().map(|j| j.job_id).collect(),
            phase_iter_s: m.phase_iter_s.clone(),
            stage_s: m.stage_s.to_vec(),
            iterations: m.passes,
            startup_s,
        };
        self.rt
            .block_on(self.client.report_iter_time(req))
            .context("ReportIterTime")?;
        Ok(())
    }
}

/// The `SchedulerToTrainer` service: how far this launch got.
struct Stats {
    finished: Arc<AtomicU64>,
    started: Instant,
}

#[tonic::async_trait]
impl pb::scheduler_to_trainer_server::SchedulerToTrainer for Stats {
    async fn query_stats(
        &self,
        _req: tonic::Request<pb::QueryStatsRequest>,
    ) -> Result<tonic::Response<pb::QueryStatsReply>, tonic::Status> {
        Ok(tonic::Response::new(pb::QueryStatsReply {
            finished_iterations: self.finished.load(Ordering::Relaxed),
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }))
    }
}

/// Binds 127.0.0.1:0 and serves `QueryStats` until the process exits.
async fn serve_stats(
    token: Token,
    finished: Arc<AtomicU64>,
    started: Instant,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the QueryStats port")?;
    let addr = listener.local_addr()?;
    let svc = pb::scheduler_to_trainer_server::SchedulerToTrainerServer::with_interceptor(
        Stats { finished, started },
        CheckToken(token),
    );
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
