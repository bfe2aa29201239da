//! The testbed's subcommands (`muri scheduler`, `worker`, `submit`, `status`, `cancel`):
//! clap types and the glue from flags to `muri::testbed`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use muri::cluster::ClusterSpec;
use muri::policy::PolicyOptions;
use muri::report::ReportFormat;
use muri::testbed::{self, certs, control, scheduler, worker};
use muri::trace::Trace;
use muri_runtime::auth::Token;
use muri_runtime::tls::{Tls, TlsFiles};

#[derive(Args)]
pub struct SchedulerArgs {
    /// Cluster spec CSV; each node is one `muri worker`.
    #[arg(long = "cluster_spec", alias = "cluster-spec", value_name = "CSV")]
    cluster_spec: PathBuf,
    /// Trace to replay (times in ms). Without it the scheduler only takes `muri submit` jobs.
    #[arg(long = "trace_file", alias = "trace-file", value_name = "CSV")]
    trace_file: Option<PathBuf>,
    /// Policy (see `muri policies`).
    #[arg(long, default_value = "multi-resource-blossom-same-gpu")]
    schedule: String,
    /// Where job.csv, cluster.csv and failed.csv go.
    #[arg(
        long = "log_path",
        alias = "log-path",
        default_value = "results/testbed"
    )]
    log_path: PathBuf,
    /// Virtual seconds between rounds when nothing arrives or finishes.
    #[arg(
        long = "schedule_interval",
        alias = "schedule-interval",
        default_value_t = 360.0
    )]
    schedule_interval: f64,
    /// Iterations each launch runs to measure its group's speed (fast-forward sample).
    #[arg(
        long = "fast_forwarding",
        alias = "fast-forwarding",
        default_value_t = 20
    )]
    fast_forwarding: u64,
    /// Fast-forward samples that may run at once (0: all of a round's). Every round's
    /// samples start after all its launches have started up; on a cluster they run side by
    /// side on their own nodes, but where one machine stands in for the cluster (run.sh
    /// sets 1) samples running side by side slow each other down and mismeasure.
    #[arg(
        long = "concurrent_samples",
        alias = "concurrent-samples",
        default_value_t = 0
    )]
    concurrent_samples: usize,
    /// Emulated stage time = profiled time × this; wall seconds per virtual second in
    /// real time. Default: 1 when the workers run real models (`muri worker --workload
    /// real`), 0.05 when they emulate. Workers running different workloads are refused.
    #[arg(long = "time_scale", alias = "time-scale")]
    time_scale: Option<f64>,
    /// Address to serve workers, trainers and `muri submit/status/cancel` on. Port 0 picks a
    /// free port; the address bound is printed as `scheduler listening on IP:PORT`.
    #[arg(long, default_value = muri_runtime::DEFAULT_SCHEDULER_ADDR)]
    listen: String,
    /// IP trainers report to (default: the --listen IP; required when that is 0.0.0.0).
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
    /// Workers to wait for (default: every node of the cluster spec).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    auth: DaemonAuthArgs,
    /// Milliseconds between heartbeats the scheduler asks of its workers.
    #[arg(long = "heartbeat_ms", alias = "heartbeat-ms", default_value_t = 300)]
    heartbeat_ms: u64,
    /// A worker silent this long is removed and its groups re-queued.
    #[arg(
        long = "heartbeat_timeout_ms",
        alias = "heartbeat-timeout-ms",
        default_value_t = 1500
    )]
    heartbeat_timeout_ms: u64,
    /// Real seconds a round's samples may take before they are killed.
    #[arg(
        long = "sample_timeout",
        alias = "sample-timeout",
        default_value_t = 30.0
    )]
    sample_timeout: f64,
    /// Trainer failures before a job is marked failed.
    #[arg(long = "max_attempts", alias = "max-attempts", default_value_t = 3)]
    max_attempts: u32,
    /// Virtual seconds before the first retry of a failed trainer (doubles each time).
    #[arg(
        long = "retry_backoff",
        alias = "retry-backoff",
        default_value_t = 60.0
    )]
    retry_backoff: f64,
    /// Keep running for `muri submit` after the trace finished.
    #[arg(long = "keep_alive", alias = "keep-alive")]
    keep_alive: bool,
    /// Checkpoint directory handed to the trainers.
    #[arg(long = "checkpoint_dir", alias = "checkpoint-dir")]
    checkpoint_dir: Option<PathBuf>,
    /// Most jobs interleaved in one group (1 to 4).
    #[arg(long = "packing_num", alias = "packing-num", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=4))]
    packing_num: u8,
    /// What completes a launch: `trainers` (the workers run a sample and its measured speed
    /// counts) or `model` (the simulator's progress model: no trainer, no launch cost, rounds
    /// only at the simulator's events; the decision log then equals `muri simulate`'s).
    #[arg(long, default_value = "trainers", value_parser = ["trainers", "model"])]
    executor: String,
    /// Write the decision log (one line per job start, stop, regroup and finish) here.
    /// Compare logs with `muri diff`.
    #[arg(long, value_name = "CSV")]
    decisions: Option<PathBuf>,
    /// Journal the scheduler's state here (fsync'd, checksummed). A scheduler restarted on a
    /// directory holding a run resumes it: finished jobs stay finished, the logs are
    /// appended to, the virtual clock goes on. Refused if the trace, cluster or policy differ.
    #[arg(long = "state_dir", alias = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Scheduler address.
    #[arg(long, default_value = muri_runtime::DEFAULT_SCHEDULER_ADDR)]
    scheduler: String,
    /// This node's index in the cluster spec.
    #[arg(long = "node-id", alias = "node_id")]
    node_id: u32,
    /// GPU ids this worker owns (`0,1,2,3`) or a count (`4`).
    #[arg(long, default_value = "4")]
    gpus: String,
    /// CPU cores this worker offers.
    #[arg(long, default_value_t = 32)]
    cpus: u32,
    /// Address of this worker's service (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// IP this node is reached at: the scheduler, the other nodes' MPI daemons and the
    /// trainers' peers use it (default: the --listen IP; required when that is 0.0.0.0).
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
    #[command(flatten)]
    auth: DaemonAuthArgs,
    /// Seconds a scheduler may keep refusing this worker's registration (wrong token, …)
    /// before the worker gives up; refusals are retried with exponential back-off.
    #[arg(
        long = "register_timeout",
        alias = "register-timeout",
        default_value_t = 60.0
    )]
    register_timeout: f64,
    /// The trainer executable (default: muri-trainer next to muri).
    #[arg(long)]
    trainer: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long = "kill_grace", alias = "kill-grace", default_value_t = 2.0)]
    kill_grace: f64,
    /// Checkpoint directory handed to the trainers.
    #[arg(long = "checkpoint_dir", alias = "checkpoint-dir")]
    checkpoint_dir: Option<PathBuf>,
    /// What trainers run: `emulated` (each stage sleeps for its profiled time) or `real`
    /// (tch models on synthetic data; needs muri-trainer built with `--features torch`).
    /// Told to the scheduler, whose default `--time_scale` follows it (1 for real).
    #[arg(long, default_value = "emulated", value_parser = ["emulated", "real"])]
    workload: String,
    /// Data sets of real workloads (made by `muri data gen`; missing ones are generated).
    #[arg(long = "data_dir", alias = "data-dir", default_value = "data")]
    data_dir: PathBuf,
    /// libtorch threads per trainer rank (real workloads).
    #[arg(long = "torch_threads", alias = "torch-threads", default_value_t = 1)]
    torch_threads: u32,
    /// Trainers check after every step that all ranks of a job hold identical parameters
    /// (one extra all-reduce per step; rank 0 prints `check-sync: N parameter checks
    /// passed` to its launch log). For tests of jobs whose ranks span hosts.
    #[arg(long = "check_sync", alias = "check-sync")]
    check_sync: bool,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// Scheduler address (HOST:PORT).
    #[arg(long, default_value = muri_runtime::DEFAULT_SCHEDULER_ADDR)]
    scheduler: String,
    /// Model of the job (see `muri trace gen --models`).
    #[arg(long)]
    model: String,
    /// GPUs the job needs.
    #[arg(long)]
    gpus: u32,
    /// Iterations the job runs.
    #[arg(long)]
    iterations: u64,
    #[command(flatten)]
    auth: ClientAuthArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Scheduler address (HOST:PORT).
    #[arg(long, default_value = muri_runtime::DEFAULT_SCHEDULER_ADDR)]
    scheduler: String,
    #[command(flatten)]
    auth: ClientAuthArgs,
    /// How the jobs are printed: a table, CSV or JSON.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

#[derive(Args)]
pub struct CancelArgs {
    /// Job id printed by `muri submit`.
    id: u64,
    /// Scheduler address (HOST:PORT).
    #[arg(long, default_value = muri_runtime::DEFAULT_SCHEDULER_ADDR)]
    scheduler: String,
    #[command(flatten)]
    auth: ClientAuthArgs,
}

/// Token and TLS flags of a daemon (scheduler, worker).
#[derive(Args)]
pub struct DaemonAuthArgs {
    /// Shared secret file (else MURI_TOKEN). A daemon without a token refuses to start
    /// unless --no_auth is given.
    #[arg(long = "token_file", alias = "token-file", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Accept calls without a token (anyone who reaches the port controls the testbed).
    #[arg(long = "no_auth", alias = "no-auth")]
    no_auth: bool,
    /// Serve plaintext on a non-loopback --listen address (otherwise TLS is required there).
    #[arg(long, aliases = ["allow-remote", "allow_remote"])]
    insecure: bool,
    /// PEM certificate this daemon serves with (its names must include the address peers
    /// dial); with --tls_key and --tls_ca every connection of the daemon uses TLS.
    #[arg(long = "tls_cert", alias = "tls-cert", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls_cert.
    #[arg(long = "tls_key", alias = "tls-key", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate that peers' certificates chain to.
    #[arg(long = "tls_ca", alias = "tls-ca", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: also require every client to present a certificate signed by --tls_ca
    /// (daemons present their --tls_cert; `muri status` etc. need --tls_client_cert).
    #[arg(long = "tls_client_auth", alias = "tls-client-auth")]
    tls_client_auth: bool,
}

impl DaemonAuthArgs {
    /// The token (required unless --no_auth) and the TLS setup (all three files or none).
    fn load(&self) -> anyhow::Result<(Token, Tls)> {
        let token = Token::load(self.token_file.as_deref())?.for_daemon(self.no_auth)?;
        let tls = Tls::load(TlsFiles {
            ca: absolute(&self.tls_ca)?,
            cert: absolute(&self.tls_cert)?,
            key: absolute(&self.tls_key)?,
            client_cert: None,
            client_key: None,
            client_auth: self.tls_client_auth,
        })?;
        tls.check_daemon()?;
        Ok((token, tls))
    }
}

/// Token and TLS flags of `muri submit/status/cancel`.
#[derive(Args)]
pub struct ClientAuthArgs {
    /// Shared secret file (else MURI_TOKEN).
    #[arg(long = "token_file", alias = "token-file", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificate the scheduler's certificate chains to; given, the connection uses
    /// TLS (a bare host:port becomes https://). An https:// address needs it.
    #[arg(long = "tls_ca", alias = "tls-ca", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a scheduler started with --tls_client_auth.
    #[arg(
        long = "tls_client_cert",
        alias = "tls-client-cert",
        value_name = "PEM"
    )]
    tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls_client_cert.
    #[arg(long = "tls_client_key", alias = "tls-client-key", value_name = "PEM")]
    tls_client_key: Option<PathBuf>,
}

impl ClientAuthArgs {
    fn load(&self) -> anyhow::Result<(Token, Tls)> {
        let token = Token::load(self.token_file.as_deref())?;
        let tls = Tls::load(TlsFiles {
            ca: self.tls_ca.clone(),
            client_cert: self.tls_client_cert.clone(),
            client_key: self.tls_client_key.clone(),
            ..TlsFiles::default()
        })?;
        Ok((token, tls))
    }
}

/// A daemon's TLS files as absolute paths, since the worker hands them on to its trainers.
fn absolute(path: &Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    path.as_deref()
        .map(|p| std::path::absolute(p).with_context(|| format!("resolving {}", p.display())))
        .transpose()
}

/// Files a daemon creates (job.csv, failed.csv, checkpoints, its trainers' files) are
/// readable by its user only: they describe the cluster's jobs.
fn private_files() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// The trainer flags that hand a worker's TLS setup on to the trainers it launches: they
/// dial the scheduler with the same CA and, under mutual TLS, the worker's certificate.
fn trainer_tls_flags(tls: &Tls) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(ca) = tls.ca_file() {
        flags.extend(["--tls-ca".to_string(), ca.display().to_string()]);
    }
    if let Some((cert, key)) = tls.client_identity_files() {
        flags.extend([
            "--tls-client-cert".to_string(),
            cert.display().to_string(),
            "--tls-client-key".to_string(),
            key.display().to_string(),
        ]);
    }
    flags
}

#[derive(clap::Subcommand)]
pub enum TlsCommand {
    /// Write a throwaway CA (ca.pem) and one certificate for every daemon (node.pem,
    /// node.key) into DIR, for `--tls_ca/--tls_cert/--tls_key`. The CA key is not kept.
    Gen {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// IP addresses and DNS names the daemons are dialed at (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = certs::DEFAULT_SANS.map(String::from))]
        san: Vec<String>,
    },
}

pub fn run_tls(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Gen { dir, san } => {
            let out = certs::generate(&dir, &san)?;
            eprintln!(
                "wrote {}, {} and {} (names: {})",
                out.ca.display(),
                out.cert.display(),
                out.key.display(),
                san.join(", ")
            );
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(v.is_finite() && v >= 0.0, "{flag} must be ≥ 0");
    Ok(Duration::from_secs_f64(v))
}

pub fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let listen = scheduler::parse_listen(&args.listen)?;
    let (token, tls) = args.auth.load()?;
    testbed::check_bind(listen, tls.is_server_tls(), args.auth.insecure)?;
    private_files();
    let spec = ClusterSpec::from_path(&args.cluster_spec)?;
    let trace = args
        .trace_file
        .as_deref()
        .map(Trace::from_path)
        .transpose()?;
    let cfg = scheduler::SchedulerConfig {
        listen,
        advertise: args.advertise,
        spec,
        keep_alive: args.keep_alive || trace.is_none(),
        trace,
        policy: args.schedule,
        opts: PolicyOptions {
            packing_num: args.packing_num as usize,
            ..PolicyOptions::default()
        },
        log_path: args.log_path.clone(),
        schedule_interval: args.schedule_interval,
        fast_forwarding: args.fast_forwarding,
        concurrent_samples: args.concurrent_samples,
        time_scale: args.time_scale,
        workers: args.workers.unwrap_or(spec.num_nodes() as usize),
        token,
        tls,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(10)),
        heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms.max(50)),
        sample_timeout: seconds(args.sample_timeout, "--sample_timeout")?,
        max_attempts: args.max_attempts,
        retry_backoff: args.retry_backoff,
        checkpoint_dir: args.checkpoint_dir,
        executor: scheduler::Executor::parse(&args.executor)?,
        decisions: args.decisions,
        state_dir: args.state_dir,
    };
    let summary = runtime()?.block_on(scheduler::run_scheduler(cfg))?;
    eprintln!(
        "done: {} jobs completed, {} failed, {} rounds, {} launches, {:.1} s wall, {:.0} s virtual; logs in {}",
        summary.completed,
        summary.failed,
        summary.rounds,
        summary.launches,
        summary.wall_seconds,
        summary.virtual_seconds,
        args.log_path.display()
    );
    if summary.failed > 0 {
        anyhow::bail!(
            "{} job{} failed (see {})",
            summary.failed,
            if summary.failed == 1 { "" } else { "s" },
            args.log_path.join("failed.csv").display()
        );
    }
    Ok(())
}

pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let listen = scheduler::parse_listen(&args.listen)?;
    let (token, tls) = args.auth.load()?;
    testbed::check_bind(listen, tls.is_server_tls(), args.auth.insecure)?;
    private_files();
    let trainer = args.trainer.unwrap_or_else(worker::default_trainer);
    worker::check_trainer(&trainer)?;
    let workload = testbed::Workload::parse(&args.workload)?;
    let mut trainer_flags = trainer_tls_flags(&tls);
    trainer_flags.extend([
        "--workload".into(),
        args.workload,
        "--data-dir".into(),
        args.data_dir.display().to_string(),
        "--torch-threads".into(),
        args.torch_threads.to_string(),
    ]);
    if args.check_sync {
        trainer_flags.push("--check-sync".into());
    }
    let cfg = worker::WorkerConfig {
        scheduler: args.scheduler,
        node_id: args.node_id,
        gpus: worker::parse_gpus(&args.gpus)?,
        cpus: args.cpus,
        listen,
        advertise: args.advertise,
        token,
        tls,
        register_timeout: seconds(args.register_timeout, "--register_timeout")?,
        trainer,
        use_mpi: cfg!(feature = "mpi"),
        kill_grace: seconds(args.kill_grace, "--kill_grace")?,
        checkpoint_dir: args.checkpoint_dir,
        trainer_flags,
        workload,
    };
    runtime()?.block_on(worker::run_worker(cfg))
}

pub fn run_submit(args: SubmitArgs) -> anyhow::Result<()> {
    let (t, tls) = args.auth.load()?;
    let id = runtime()?.block_on(control::submit(
        &args.scheduler,
        &t,
        &tls,
        &args.model,
        args.gpus,
        args.iterations,
    ))?;
    outln!("{id}")?;
    Ok(())
}

pub fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let (t, tls) = args.auth.load()?;
    let s = runtime()?.block_on(control::status(&args.scheduler, &t, &tls))?;
    let text = match args.format {
        ReportFormat::Table => control::format_status(&s),
        ReportFormat::Csv => control::status_csv(&s),
        ReportFormat::Json => control::status_json(&s),
    };
    // A closed pipe (`muri status | head -1`) ends quietly in `main`.
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(())
}

pub fn run_cancel(args: CancelArgs) -> anyhow::Result<()> {
    let (t, tls) = args.auth.load()?;
    let found = runtime()?.block_on(control::cancel(&args.scheduler, &t, &tls, args.id))?;
    anyhow::ensure!(found, "no job {} on the scheduler", args.id);
    outln!("cancelled {}", args.id)?;
    Ok(())
}
