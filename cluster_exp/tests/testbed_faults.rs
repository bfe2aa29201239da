//! Worker faults on the testbed with real processes on loopback: a worker stopped
//! (SIGSTOP) for three heartbeat timeouts and resumed, and a second registration for a
//! live node (fencing). Nothing is mocked: a real scheduler, real worker daemons, real
//! trainers, and the runtime's gRPC client where the test plays an impostor worker.
//!
//! Needs the `muri-trainer` executable next to `muri` (`cargo build --release -p
//! muri-workloads`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use muri::output::read_job_csv;
use muri_runtime::auth::Token;
use muri_runtime::tls::Tls;
use muri_runtime::{client, pb};

mod testbed_support;
use testbed_support::{processes_with_token, Proc};

const MURI: &str = env!("CARGO_BIN_EXE_muri");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on a child this test owns; no memory is touched.
    let rc = unsafe { libc::kill(p.0.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", p.0.id());
}

/// 14 jobs of 1 to 4 GPUs (each fits one 4-GPU node, so one live worker can run them all).
fn make_trace(dir: &Path) -> PathBuf {
    let path = dir.join("trace.csv");
    let out = Command::new(MURI)
        .args(["trace", "gen", "--jobs", "14", "--interarrival", "300"])
        .args(["--median-hours", "1", "--duration-sigma", "1.0"])
        .args(["--gpu-mix", "1:0.5,2:0.25,4:0.25", "--seed", "11", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

struct Scheduler {
    port: u16,
    log: PathBuf,
    proc: Proc,
    stderr: Option<JoinHandle<String>>,
}

/// Starts `muri scheduler` on port 0 (2 nodes × 4 GPUs, heartbeats every 200 ms, lost
/// after [`HEARTBEAT_TIMEOUT`]) and reads the port from its stderr, which is collected.
fn start_scheduler(dir: &Path, trace: &Path, token: &str, extra: &[&str]) -> Scheduler {
    let log = dir.join("out");
    let mut child = Command::new(MURI)
        .args(["scheduler", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .args([
            "--schedule",
            "multi-resource-blossom-same-gpu",
            "--log_path",
        ])
        .arg(&log)
        .args(["--listen", "127.0.0.1:0", "--schedule_interval", "3600"])
        .args(["--heartbeat_ms", "200", "--heartbeat_timeout_ms"])
        .arg(HEARTBEAT_TIMEOUT.as_millis().to_string())
        .args([
            "--time_scale",
            "0.05",
            "--fast_forwarding",
            "10",
            "--trace_file",
        ])
        .arg(trace)
        .args(extra)
        .env("MURI_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("scheduler listening on ") {
                let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let proc = Proc(child);
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .flatten()
        .expect("the scheduler reports its port");
    Scheduler {
        port,
        log,
        proc,
        stderr: Some(reader),
    }
}

impl Scheduler {
    /// Waits for a successful exit; returns the scheduler's stderr.
    fn wait_done(&mut self, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                let err = self.stderr.take().unwrap().join().unwrap();
                assert!(status.success(), "scheduler failed: {err}");
                return err;
            }
            assert!(
                started.elapsed() < limit,
                "scheduler did not finish within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_worker(port: u16, node: u32, token: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(MURI);
    cmd.args(["worker", "--scheduler", &format!("127.0.0.1:{port}")])
        .args([
            "--node-id",
            &node.to_string(),
            "--gpus",
            "4",
            "--kill_grace",
            "0.5",
        ])
        .args(extra)
        .env("MURI_TOKEN", token)
        .stdout(Stdio::null());
    cmd
}

/// The seconds of the scheduler's `longest round: X s wall` line.
fn longest_round(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("longest round: "))
        .unwrap_or_else(|| panic!("no round time logged:\n{stderr}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_worker_stopped_for_three_heartbeat_timeouts_loses_nothing_and_blocks_no_round() {
    let trainer = Path::new(MURI).with_file_name("muri-trainer");
    assert!(trainer.exists(), "{} is missing", trainer.display());
    let token = "faults-sigstop";
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path());
    // One attempt only: a pause counted as the trainer's failure would mark jobs FAILED.
    let mut sched = start_scheduler(dir.path(), &trace, token, &["--max_attempts", "1"]);
    let _w0 = Proc(
        start_worker(sched.port, 0, token, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let w1 = Proc(
        start_worker(sched.port, 1, token, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    signal(&w1, libc::SIGSTOP);
    std::thread::sleep(HEARTBEAT_TIMEOUT * 3);
    signal(&w1, libc::SIGCONT);
    let err = sched.wait_done(Duration::from_secs(120));
    assert!(
        err.contains("worker 1 lost"),
        "the pause is detected: {err}"
    );
    assert!(!err.contains("preempted jobs []"), "{err}");
    assert!(err.contains("14 jobs completed, 0 failed"), "{err}");
    let rows = read_job_csv(&sched.log.join("job.csv")).unwrap();
    let mut ids: Vec<u64> = rows.iter().map(|r| r.job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((rows.len(), ids.len()), (14, 14), "one row per job");
    // A round is dispatch plus the samples (a few hundred ms of emulated iterations and
    // process start-up); the stopped worker may add at most the heartbeat timeout to it
    // (the old 10 s Execute timeout shows up as a round of more than 10 s).
    let longest = longest_round(&err);
    for line in err
        .lines()
        .filter(|l| l.contains("lost") || l.contains("longest"))
    {
        eprintln!("scheduler: {line}");
    }
    let allowance = 2.0;
    assert!(
        longest < HEARTBEAT_TIMEOUT.as_secs_f64() + allowance,
        "longest round {longest:.3} s ≥ heartbeat timeout + {allowance} s:\n{err}"
    );
    drop(w1);
    drop(_w0);
    let started = Instant::now();
    while !processes_with_token(token).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "processes left running: {:#?}",
            processes_with_token(token)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_registration_for_a_live_node_is_refused_and_a_silent_one_is_fenced() {
    let token = "faults-fence";
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path());
    let sched = start_scheduler(dir.path(), &trace, token, &[]);
    let _w1 = Proc(
        start_worker(sched.port, 1, token, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut w0 = Proc(
        start_worker(sched.port, 0, token, &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{}", sched.port);
    let mut c = client::scheduler(&addr, &Token::new(token), &Tls::plaintext())
        .await
        .unwrap();
    let impostor = |port: u16| pb::RegisterWorkerRequest {
        node_id: 0,
        addr: format!("127.0.0.9:{port}"),
        gpu_ids: vec![0, 1, 2, 3],
        cpus: 4,
        ..Default::default()
    };
    // Wait for the real worker 0 to hold node 0.
    let started = Instant::now();
    let refusal = loop {
        match c.register_worker(impostor(1)).await {
            Err(s) => break s,
            Ok(_) => {
                // The impostor got the node before the worker: let it lapse and retry.
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "worker 0 never registered"
                );
                tokio::time::sleep(HEARTBEAT_TIMEOUT * 2).await;
            }
        }
    };
    assert_eq!(refusal.code(), tonic::Code::AlreadyExists, "{refusal:?}");
    assert!(
        refusal
            .message()
            .contains("node 0 is registered by a live worker"),
        "{refusal:?}"
    );

    // A second daemon for node 0 is refused, backs off and gives up within its timeout.
    let began = Instant::now();
    let mut second = start_worker(
        sched.port,
        0,
        token,
        &["--register_timeout", "3", "--listen", "127.0.0.3:0"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("giving up") && err.contains("AlreadyExists"),
        "{err}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );

    // Worker 0 dies: once it has missed its heartbeats a new registration takes the node,
    // and a heartbeat carrying an older epoch is fenced.
    w0.0.kill().unwrap();
    w0.0.wait().unwrap();
    tokio::time::sleep(HEARTBEAT_TIMEOUT + Duration::from_millis(500)).await;
    let reply = c.register_worker(impostor(2)).await.unwrap().into_inner();
    assert!(reply.epoch > 0, "{reply:?}");
    let stale = c
        .heartbeat(pb::HeartbeatRequest {
            node_id: 0,
            running_groups: vec![],
            epoch: reply.epoch - 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stale.fenced && !stale.known, "{stale:?}");
    // Reconciliation: the new registration claims to run launch 77, which the scheduler
    // never started; a later heartbeat reply tells it to kill that launch.
    let started = Instant::now();
    let killed = loop {
        let current = c
            .heartbeat(pb::HeartbeatRequest {
                node_id: 0,
                running_groups: vec![77],
                epoch: reply.epoch,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(current.known && !current.fenced, "{current:?}");
        if !current.kill_groups.is_empty() || started.elapsed() > Duration::from_secs(5) {
            break current.kill_groups;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(killed, [77], "the stray launch is killed");
    let done = c
        .done(pb::DoneRequest {
            node_id: 0,
            group_id: 5,
            epoch: reply.epoch - 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(done.code(), tonic::Code::FailedPrecondition, "{done:?}");
    drop(sched);
}
