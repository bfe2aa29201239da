//! Control-plane cost on loopback (plain std::time, `harness = false`):
//! - dispatching 64 groups (Execute RPCs, issued concurrently) to 8 real worker daemons
//!   (`muri worker` processes, as deployed: their process spawns do not share this
//!   process's address space, whose page tables every fork would lock), until every
//!   Execute returned and until
//!   every group's Done came back (the "trainer" is /bin/true, so process spawn is included);
//!   every fourth group spans two workers (4 + 4 ranks: its Execute goes to both, and both
//!   send Done), as a placement over two nodes is dispatched;
//! - unary RPC latency (Heartbeat round trips).
//!
//! Run: `cargo bench -p muri --bench testbed_dispatch`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muri_runtime::auth::{CheckToken, Token};
use muri_runtime::tls::Tls;
use muri_runtime::{client, pb};
use tonic::{Request, Response, Status};

const WORKERS: u32 = 8;
const GROUPS: u64 = 64;
const PINGS: usize = 1000;

/// A worker daemon, killed when the bench ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Default)]
struct Registry {
    workers: Arc<Mutex<Vec<(u32, String)>>>,
    done: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl pb::worker_to_scheduler_server::WorkerToScheduler for Registry {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerReply>, Status> {
        let r = req.into_inner();
        self.workers.lock().unwrap().push((r.node_id, r.addr));
        Ok(Response::new(pb::RegisterWorkerReply {
            heartbeat_interval_ms: 1000,
            epoch: 1,
        }))
    }
    async fn done(&self, _req: Request<pb::DoneRequest>) -> Result<Response<pb::Ack>, Status> {
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::Ack {}))
    }
    async fn heartbeat(
        &self,
        _req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        Ok(Response::new(pb::HeartbeatReply {
            known: true,
            ..Default::default()
        }))
    }
}

/// Group `g` of a round: every fourth spans nodes `g mod 8` and the next one with 4 GPUs
/// each; the others have 1 GPU on node `g mod 8`. Returns the request and its nodes.
fn group(id: u64, g: u64) -> (pb::ExecuteRequest, Vec<u32>) {
    let node = (g % WORKERS as u64) as u32;
    if g % 4 != 3 {
        return (single_node_group(id), vec![node]);
    }
    let other = (node + 1) % WORKERS;
    let mut req = single_node_group(id);
    req.num_gpu = 8;
    req.gpu_ids = vec![0, 1, 2, 3];
    req.hosts = [node, other]
        .iter()
        .map(|&n| pb::HostShare {
            node_id: n,
            addr: "127.0.0.1".into(),
            gpu_ids: vec![0, 1, 2, 3],
        })
        .collect();
    (req, vec![node, other])
}

fn single_node_group(id: u64) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        group_id: id,
        jobs: (0..2)
            .map(|slot| pb::JobSlot {
                slot,
                job_id: id * 4 + slot as u64,
                model: "resnet18".into(),
                batch_size: 128,
                iterations: 10,
                stage_ms: vec![700.0, 60.0, 0.0],
                checkpoint_path: String::new(),
                attempt: 0,
            })
            .collect(),
        gpu_ids: vec![(id % 4) as u32],
        num_gpu: 1,
        scheduler_addr: String::new(),
        time_scale: 0.0,
        hosts: Vec::new(),
        log_file: String::new(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let token = Token::new("bench");
    let registry = Registry::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sched_addr = listener.local_addr()?.to_string();
    let svc = pb::worker_to_scheduler_server::WorkerToSchedulerServer::with_interceptor(
        registry.clone(),
        CheckToken(token.clone()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(muri_runtime::server::incoming(listener)),
    );
    let mut daemons = Vec::new();
    for node in 0..WORKERS {
        let daemon = std::process::Command::new(env!("CARGO_BIN_EXE_muri"))
            .args(["worker", "--scheduler", &sched_addr, "--node-id"])
            .arg(node.to_string())
            .args(["--gpus", "4", "--trainer", "/bin/true"])
            .env("MURI_TOKEN", "bench")
            .stderr(std::process::Stdio::null())
            .spawn()?;
        daemons.push(Killed(daemon));
    }
    while registry.workers.lock().unwrap().len() < WORKERS as usize {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // By node id: a host list names its nodes, and each must get the request.
    let mut registered = registry.workers.lock().unwrap().clone();
    registered.sort_unstable();
    let addrs: Vec<String> = registered.into_iter().map(|(_, a)| a).collect();
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(client::worker(a, &token, &Tls::plaintext()).await?);
    }
    // Warm the connections.
    let mut warm = client::scheduler(&sched_addr, &token, &Tls::plaintext()).await?;
    warm.heartbeat(pb::HeartbeatRequest {
        node_id: 0,
        running_groups: vec![],
        epoch: 0,
    })
    .await?;

    for round in 0..3 {
        registry.done.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        let mut dones = 0;
        for g in 0..GROUPS {
            let (req, nodes) = group(round * 1000 + g + 1, g);
            dones += nodes.len();
            for node in nodes {
                let mut c = clients[node as usize].clone();
                let req = req.clone();
                calls.spawn(async move { c.execute(req).await });
            }
        }
        while let Some(r) = calls.join_next().await {
            r??;
        }
        let dispatched = started.elapsed();
        while registry.done.load(Ordering::Relaxed) < dones {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let done = started.elapsed();
        println!(
            "round {round}: dispatch {GROUPS} groups ({} over two nodes) to {WORKERS} workers: {:.1} ms (all Execute returned), {:.1} ms (all Done back)",
            GROUPS / 4,
            dispatched.as_secs_f64() * 1e3,
            done.as_secs_f64() * 1e3
        );
    }
    let started = Instant::now();
    for _ in 0..PINGS {
        warm.heartbeat(pb::HeartbeatRequest {
            node_id: 0,
            running_groups: vec![],
            epoch: 0,
        })
        .await?;
    }
    println!(
        "loopback unary RPC (Heartbeat, token checked): {:.0} µs mean over {PINGS}",
        started.elapsed().as_secs_f64() * 1e6 / PINGS as f64
    );
    Ok(())
}
