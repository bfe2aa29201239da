//! One scheduler round at scale (plain std::time, `harness = false`): the real scheduler
//! (`run_scheduler`, in-process) with 64 registered worker daemons of 8 GPUs each (real
//! gRPC servers, in-process, heartbeating), and 512 jobs of 1 to 8 GPUs arriving at once.
//!
//! - `model` executor: every round is the policy, the bookkeeping and the worker table of
//!   64 nodes, without launches (the scheduler's own cost per round);
//! - `trainers` executor (when `muri-trainer` is built next to the bench's target dir):
//!   the first round also dispatches every placed group to its workers and waits for the
//!   samples (2 iterations at time scale 0.001: process start-up dominates).
//!
//! Run: `cargo build --release -p muri-workloads && cargo bench -p muri --bench testbed_round`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use muri::cluster::ClusterSpec;
use muri::models;
use muri::policy::PolicyOptions;
use muri::testbed::scheduler::{run_scheduler, Executor, RunSummary, SchedulerConfig};
use muri::testbed::worker::{run_worker, WorkerConfig};
use muri::trace::{JobSpec, Trace};
use muri_runtime::auth::Token;
use muri_runtime::tls::Tls;

const WORKERS: u32 = 64;
const GPUS: u32 = 8;
const JOBS: u64 = 512;

fn trace(jobs: u64) -> Trace {
    let models = ["resnet18", "vgg16", "gpt2", "bert"];
    let jobs = (0..jobs)
        .filter_map(|i| {
            let model = models[i as usize % models.len()];
            let gpus = [1, 2, 4, 8][(i / 4) as usize % 4];
            let p = models::profile(model, gpus)?;
            Some(JobSpec {
                job_id: i,
                num_gpu: gpus,
                submit_time: 0.0,
                iterations: 1000 + 10 * i,
                model_name: model.into(),
                batch_size: p.batch_size,
                duration: ((1000 + 10 * i) as f64 * p.iteration_time_ms / 1000.0).floor(),
                iteration_time_ms: p.iteration_time_ms,
                resource_time_ms: p.resource_time_ms,
                priority: 0,
            })
        })
        .collect();
    Trace {
        name: "bench".into(),
        source: "generated".into(),
        jobs,
        lines: Vec::new(),
    }
}

fn trainer() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("muri-trainer");
    path.exists().then_some(path)
}

async fn run(executor: Executor, jobs: u64, trainer: PathBuf) -> anyhow::Result<RunSummary> {
    let token = Token::new("bench-round");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let spec = ClusterSpec {
        num_switch: 1,
        num_node_p_switch: WORKERS,
        num_gpu_p_node: GPUS,
        num_cpu_p_node: 64,
        mem_p_node: 512,
    };
    let log = tempfile::tempdir()?;
    let scheduler = SchedulerConfig {
        listen: addr,
        advertise: None,
        spec,
        trace: Some(trace(jobs)),
        policy: "multi-resource-blossom-same-gpu".into(),
        opts: PolicyOptions::default(),
        log_path: log.path().to_path_buf(),
        schedule_interval: 3600.0,
        fast_forwarding: 2,
        concurrent_samples: 0,
        time_scale: Some(0.001),
        workers: WORKERS as usize,
        token: token.clone(),
        tls: Tls::plaintext(),
        heartbeat_interval: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_secs(5),
        sample_timeout: Duration::from_secs(120),
        max_attempts: 3,
        retry_backoff: 60.0,
        keep_alive: false,
        checkpoint_dir: None,
        executor,
        decisions: None,
        state_dir: None,
    };
    // The workers poll until the scheduler listens; the scheduler's future is not `Send`
    // (the policy), so it runs on this task.
    for node in 0..WORKERS {
        let cfg = WorkerConfig {
            scheduler: addr.to_string(),
            node_id: node,
            gpus: (0..GPUS).collect(),
            cpus: 64,
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
            token: token.clone(),
            tls: Tls::plaintext(),
            register_timeout: Duration::from_secs(60),
            trainer: trainer.clone(),
            use_mpi: false,
            kill_grace: Duration::from_secs(1),
            checkpoint_dir: None,
            trainer_flags: Vec::new(),
            workload: muri::testbed::Workload::Emulated,
        };
        tokio::spawn(run_worker(cfg));
    }
    run_scheduler(scheduler).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let s = run(Executor::Model, JOBS, PathBuf::from("/bin/true")).await?;
    println!(
        "{WORKERS} workers × {GPUS} GPUs, {JOBS} jobs, executor model: {} completed, {} rounds, mean round {:.2} ms, longest {:.1} ms ({:.1} s wall in all)",
        s.completed,
        s.rounds,
        s.wall_seconds * 1e3 / s.rounds.max(1) as f64,
        s.longest_round_s * 1e3,
        started.elapsed().as_secs_f64()
    );
    match trainer() {
        Some(trainer) => {
            let started = Instant::now();
            let s = run(Executor::Trainers, 64, trainer).await?;
            println!(
                "{WORKERS} workers × {GPUS} GPUs, 64 jobs, executor trainers: {} completed, {} failed, {} rounds, {} launches, mean round {:.1} ms, longest {:.1} ms ({:.1} s wall in all)",
                s.completed,
                s.failed,
                s.rounds,
                s.launches,
                s.wall_seconds * 1e3 / s.rounds.max(1) as f64,
                s.longest_round_s * 1e3,
                started.elapsed().as_secs_f64()
            );
        }
        None => println!("muri-trainer not built: skipping the trainers executor"),
    }
    Ok(())
}
