//! The testbed with real processes on loopback: a scheduler, worker daemons and trainers
//! (launched by the workers, through `mpirun` when built with `--features mpi`). Nothing is
//! mocked; faults are real (SIGKILL of a worker, trainers exiting non-zero).
//!
//! Needs the `muri-trainer` executable next to `muri`: `cargo test` at the workspace root
//! builds it (the workloads crate has an integration test for that reason).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use muri::output::read_job_csv;

mod testbed_support;
use testbed_support::{processes_with_token, write_trace, Proc};

const MURI: &str = env!("CARGO_BIN_EXE_muri");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn trainer_present() {
    let trainer = Path::new(MURI).with_file_name("muri-trainer");
    assert!(
        trainer.exists(),
        "{} is missing: run `cargo test` from the workspace root (or `cargo build --release -p muri-workloads`)",
        trainer.display()
    );
}

fn muri(args: &[&str]) -> Output {
    Command::new(MURI).args(args).output().unwrap()
}

/// A small trace whose jobs fit one 4-GPU node (so one surviving worker can run them all).
fn make_trace(dir: &Path, jobs: usize, seed: u64) -> PathBuf {
    let path = dir.join("trace.csv");
    let out = muri(&[
        "trace",
        "gen",
        "--jobs",
        &jobs.to_string(),
        "--interarrival",
        "300",
        "--median-hours",
        "1",
        "--duration-sigma",
        "1.0",
        "--gpu-mix",
        "1:0.5,2:0.25,4:0.25",
        "--seed",
        &seed.to_string(),
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

struct Run {
    port: u16,
    log: PathBuf,
    scheduler: Proc,
    /// Collects the scheduler's stderr (see [`spawn_listening`]).
    stderr: Option<JoinHandle<String>>,
}

/// Spawns the scheduler (listening on port 0) and reads the port the OS gave it from its
/// `scheduler listening on IP:PORT` line. Picking a free port in the test and passing it
/// on would race: between the probe and the scheduler's bind, the parallel tests' own
/// connections may take that port. The rest of stderr is collected for [`wait_done`].
fn spawn_listening(mut cmd: Command) -> (Proc, u16, JoinHandle<String>) {
    let mut child = cmd.spawn().unwrap();
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
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(port)) => (Proc(child), port, reader),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the scheduler did not report its port:\n{}",
                reader.join().unwrap()
            );
        }
    }
}

fn start_scheduler(
    dir: &Path,
    trace: Option<&Path>,
    policy: &str,
    extra: &[&str],
    token: &str,
) -> Run {
    let spec = Path::new(ROOT).join("cluster_spec/n2g4.csv");
    start_scheduler_on(dir, &spec, trace, policy, extra, token)
}

fn start_scheduler_on(
    dir: &Path,
    spec: &Path,
    trace: Option<&Path>,
    policy: &str,
    extra: &[&str],
    token: &str,
) -> Run {
    let log = dir.join("out");
    let mut cmd = Command::new(MURI);
    cmd.args(["scheduler", "--cluster_spec"])
        .arg(spec)
        .args(["--schedule", policy, "--log_path"])
        .arg(&log)
        .args(["--listen", "127.0.0.1:0", "--schedule_interval", "3600"])
        .args(["--heartbeat_ms", "100", "--heartbeat_timeout_ms", "800"])
        .args(extra)
        .env("MURI_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !extra.contains(&"--time_scale") {
        cmd.args(["--time_scale", "0.01"]);
    }
    if !extra.contains(&"--fast_forwarding") {
        cmd.args(["--fast_forwarding", "10"]);
    }
    if let Some(t) = trace {
        cmd.arg("--trace_file").arg(t);
    }
    let (scheduler, port, stderr) = spawn_listening(cmd);
    Run {
        port,
        log,
        scheduler,
        stderr: Some(stderr),
    }
}

fn start_worker(port: u16, node: u32, token: &str, env: &[(&str, &str)]) -> Proc {
    start_worker_with(port, node, token, env, &[])
}

fn start_worker_with(
    port: u16,
    node: u32,
    token: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Proc {
    let mut cmd = Command::new(MURI);
    cmd.args([
        "worker",
        "--scheduler",
        &format!("127.0.0.1:{port}"),
        "--node-id",
        &node.to_string(),
    ])
    .args(["--gpus", "4", "--kill_grace", "0.5"])
    .args(extra)
    .env("MURI_TOKEN", token)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

/// Waits for the scheduler to exit successfully; returns its stderr.
fn wait_done(run: &mut Run, limit: Duration) -> String {
    let (status, err) = wait_exit(run, limit);
    assert!(status.success(), "scheduler failed: {err}");
    err
}

/// Waits for the scheduler to exit; returns its exit status and stderr.
fn wait_exit(run: &mut Run, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = run.scheduler.0.try_wait().unwrap() {
            let err = run.stderr.take().unwrap().join().unwrap();
            return (status, err);
        }
        assert!(
            started.elapsed() < limit,
            "scheduler did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One row per job, start ≥ submit, end > start, and `muri calc` reads it.
fn check_job_csv(log: &Path, expected_jobs: usize) -> Vec<muri::engine::JobRecord> {
    let rows = read_job_csv(&log.join("job.csv")).unwrap();
    assert_eq!(rows.len(), expected_jobs, "one row per job");
    let mut ids: Vec<u64> = rows.iter().map(|r| r.job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "duplicate job rows");
    for r in &rows {
        assert!(
            r.start_time >= r.submit_time - 1e-6,
            "job {}: start before submit",
            r.job_id
        );
        assert!(r.end_time > r.start_time, "job {}: end ≤ start", r.job_id);
        assert!((r.jct - (r.end_time - r.submit_time)).abs() < 1e-6);
    }
    let calc = muri(&["calc", log.to_str().unwrap()]);
    assert!(
        calc.status.success(),
        "{}",
        String::from_utf8_lossy(&calc.stderr)
    );
    assert!(String::from_utf8_lossy(&calc.stdout).contains(&format!("Total jobs: {expected_jobs}")));
    rows
}

fn end_to_end(policy: &str) {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path(), 12, 7);
    let mut run = start_scheduler(dir.path(), Some(&trace), policy, &[], "e2e-token");
    let _w0 = start_worker(run.port, 0, "e2e-token", &[]);
    let _w1 = start_worker(run.port, 1, "e2e-token", &[]);
    let err = wait_done(&mut run, Duration::from_secs(60));
    assert!(err.contains("12 jobs completed, 0 failed"), "{err}");
    let jobs = check_job_csv(&run.log, 12);
    check_measurements(&run.log, &jobs);
    check_testbed_timeline(&run.log, dir.path());
}

/// The measurement columns of the testbed's cluster.csv: the queue is every arrived,
/// unfinished job that is not running (checked against job.csv's submit and end times), and
/// every utilisation is measured and in [0, 1] (without a GPU driver the NVML column is
/// empty while jobs run).
fn check_measurements(log: &Path, jobs: &[muri::engine::JobRecord]) {
    let text = std::fs::read_to_string(log.join("cluster.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("cluster.csv has no {name}: {headers:?}"))
    };
    let utils = [
        "storage_util",
        "gpu_util",
        "network_util",
        "cpu_util",
        "mem_util",
    ];
    let (mut busy_gpu_seen, mut usage_seen) = (false, false);
    let no_gpu_driver = !Path::new("/proc/driver/nvidia").exists();
    for row in reader.records() {
        let row = row.unwrap();
        let num = |name: &str| -> f64 { row[col(name)].parse().unwrap() };
        let t = num("time");
        let unfinished = jobs
            .iter()
            .filter(|j| j.submit_time <= t + 1e-6 && j.end_time > t + 1e-6)
            .count() as f64;
        assert_eq!(
            num("queue_length") + num("running_job"),
            unfinished,
            "t = {t}: waiting + running jobs = arrived, unfinished jobs"
        );
        assert!(num("blocking_index") >= 0.0 && num("blocking_index").is_finite());
        for name in utils {
            let v = num(name);
            assert!((0.0..=1.0).contains(&v), "t = {t}: {name} = {v}");
        }
        assert!(num("read_mbps") >= 0.0 && num("write_mbps") >= 0.0);
        let nvml = &row[col("nvml_gpu_util")];
        if !nvml.is_empty() {
            assert!(
                (0.0..=1.0).contains(&num("nvml_gpu_util")),
                "t = {t}: {nvml}"
            );
        }
        if num("running_job") > 0.0 {
            if no_gpu_driver {
                // Without a GPU driver no trainer loads NVML: unknown, not 0.
                assert_eq!(nvml, "", "t = {t}: no NVML");
            }
            assert!(
                num("gpu_util") > 0.0,
                "t = {t}: jobs run, the compute stage is busy"
            );
            busy_gpu_seen = true;
        }
        // CPU time comes in 10 ms ticks, which mostly-sleeping emulated trainers may never
        // reach; their resident memory is always there.
        usage_seen |= num("mem_util") > 0.0;
    }
    assert!(
        busy_gpu_seen && usage_seen,
        "some round ran jobs whose trainers reported their usage"
    );
}

/// `muri plot --testbed` draws the run's utilisation timeline.
fn check_testbed_timeline(log: &Path, dir: &Path) {
    let out = dir.join("plots");
    let plot = muri(&[
        "plot",
        log.to_str().unwrap(),
        "--testbed",
        "--format",
        "png,svg,pdf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    let pdf = std::fs::read(out.join("testbed-timeline.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "the timeline is a PDF");
    for ext in ["png", "svg"] {
        let len = std::fs::metadata(out.join(format!("testbed-timeline.{ext}")))
            .unwrap()
            .len();
        assert!(len > 10_000, "testbed-timeline.{ext}: {len} bytes");
    }
}

/// Real tch models (feature `torch`): workers launch trainers that train a CNN, a
/// transformer LM and a DQN on synthetic data; preempted groups checkpoint and resume.
#[cfg(feature = "torch")]
#[test]
fn real_models_end_to_end_on_two_workers() {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path(), 6, 5);
    let mut run = start_scheduler(
        dir.path(),
        Some(&trace),
        "multi-resource-blossom-same-gpu",
        &["--time_scale", "1", "--fast_forwarding", "3"],
        "real",
    );
    let data = dir.path().join("data");
    let ckpt = dir.path().join("ckpt");
    let extra = [
        "--workload",
        "real",
        "--data_dir",
        data.to_str().unwrap(),
        "--checkpoint_dir",
        ckpt.to_str().unwrap(),
    ];
    let _w0 = start_worker_with(run.port, 0, "real", &[], &extra);
    let _w1 = start_worker_with(run.port, 1, "real", &[], &extra);
    let err = wait_done(&mut run, Duration::from_secs(600));
    assert!(err.contains("6 jobs completed, 0 failed"), "{err}");
    check_job_csv(&run.log, 6);
    // Every job trained for real: the trainers checkpointed each one.
    let saved = std::fs::read_dir(&ckpt).unwrap().count();
    assert_eq!(saved, 6, "one checkpoint per job");
}

#[test]
fn muri_s_end_to_end_on_two_workers() {
    end_to_end("multi-resource-blossom-same-gpu");
}

#[test]
fn srtf_end_to_end_on_two_workers() {
    end_to_end("shortest");
}

#[test]
fn sigkilled_worker_groups_are_requeued_and_every_job_finishes() {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path(), 14, 11);
    // Slower samples (time scale 0.05) so the run is still going when the worker dies.
    let mut run = start_scheduler(
        dir.path(),
        Some(&trace),
        "multi-resource-blossom-same-gpu",
        &["--time_scale", "0.05"],
        "t",
    );
    let _w0 = start_worker(run.port, 0, "t", &[]);
    let mut w1 = start_worker(run.port, 1, "t", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    w1.0.kill().unwrap(); // SIGKILL
    std::thread::sleep(Duration::from_millis(2000));
    let _w1_again = start_worker(run.port, 1, "t", &[]);
    let err = wait_done(&mut run, Duration::from_secs(90));
    assert!(err.contains("worker 1 lost"), "the loss is logged: {err}");
    assert!(err.contains("14 jobs completed, 0 failed"), "{err}");
    let rows = check_job_csv(&run.log, 14);
    assert!(
        rows.iter().map(|r| r.preempt).sum::<u32>() > 0,
        "job.csv records the preemptions"
    );
}

/// SRTF puts a newly arrived shorter job first, so it takes the policy's node 0 and the
/// running job is placed on node 1. The executor reads the policy's nodes so that the
/// running job stays on its worker: one launch for it, and the new job on the other worker.
#[test]
fn a_running_job_keeps_its_worker_when_a_shorter_one_arrives() {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(
        dir.path(),
        &[
            "0,4,0,43103,gpt2,4,20000000,0,464,0.7,416,40,0",
            "1,4,2000000,2155,gpt2,4,1000000,2000000,464,0.7,416,40,0",
        ],
    );
    let mut run = start_scheduler(dir.path(), Some(&trace), "shortest", &[], "keep");
    let _w0 = start_worker(run.port, 0, "keep", &[]);
    let _w1 = start_worker(run.port, 1, "keep", &[]);
    let err = wait_done(&mut run, Duration::from_secs(60));
    assert!(err.contains("2 jobs completed, 0 failed"), "{err}");
    let launches = read_launches(&run.log);
    let of = |job: &str| -> Vec<&[String; 5]> { launches.iter().filter(|l| l[0] == job).collect() };
    assert_eq!(of("0").len(), 1, "job 0 is never relaunched: {launches:?}");
    assert_eq!(of("0")[0][4], "ok", "{launches:?}");
    assert_eq!(of("1").len(), 1, "{launches:?}");
    assert_ne!(
        of("0")[0][1],
        of("1")[0][1],
        "the jobs run on different workers: {launches:?}"
    );
}

#[test]
fn crashing_trainers_are_retried_then_marked_failed() {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path(), 12, 7);
    let ids: Vec<u64> = muri::trace::Trace::from_path(&trace)
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.job_id)
        .collect();
    // Job A fails once and then succeeds; job B fails every time.
    let (a, b) = (ids[1], ids[2]);
    let fail = format!("{a}:1,{b}:99");
    let mut run = start_scheduler(
        dir.path(),
        Some(&trace),
        "shortest",
        &["--max_attempts", "3"],
        "t",
    );
    let _w0 = start_worker(run.port, 0, "t", &[("MURI_FAIL_JOBS", &fail)]);
    let _w1 = start_worker(run.port, 1, "t", &[("MURI_FAIL_JOBS", &fail)]);
    let (status, err) = wait_exit(&mut run, Duration::from_secs(60));
    assert!(err.contains("11 jobs completed, 1 failed"), "{err}");
    // A run with a failed job is a failed run for scripts too.
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("1 job failed"), "{err}");
    assert!(
        err.contains(&format!("job {b} failed after 3 attempts")),
        "{err}"
    );
    let rows = check_job_csv(&run.log, 11);
    assert!(
        rows.iter().any(|r| r.job_id == a),
        "the retried job finished"
    );
    let failed = std::fs::read_to_string(run.log.join("failed.csv")).unwrap();
    assert!(failed.contains(&format!("{b},failed,3,")), "{failed}");
}

#[test]
fn wrong_token_is_refused_and_online_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let run = start_scheduler(dir.path(), None, "shortest", &["--workers", "0"], "right");
    let addr = format!("127.0.0.1:{}", run.port);
    let status = |token: Option<&str>| {
        let mut cmd = Command::new(MURI);
        cmd.args(["status", "--scheduler", &addr])
            .env_remove("MURI_TOKEN");
        if let Some(t) = token {
            cmd.env("MURI_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let started = Instant::now();
    while !status(Some("right")).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "scheduler did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for token in [Some("wrong"), None] {
        let out = status(token);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
            "{out:?}"
        );
    }
    let submit = |args: &[&str]| {
        Command::new(MURI)
            .args(["submit", "--scheduler", &addr])
            .args(args)
            .env("MURI_TOKEN", "right")
            .output()
            .unwrap()
    };
    let ok = submit(&["--model", "resnet18", "--gpus", "1", "--iterations", "100"]);
    assert!(ok.status.success(), "{ok:?}");
    let id = String::from_utf8_lossy(&ok.stdout).trim().to_string();
    let bad = submit(&[
        "--model",
        "no-such-model",
        "--gpus",
        "1",
        "--iterations",
        "100",
    ]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument"),
        "{bad:?}"
    );
    let too_big = submit(&["--model", "resnet18", "--gpus", "64", "--iterations", "100"]);
    assert!(!too_big.status.success());
    std::thread::sleep(Duration::from_millis(400));
    let listed = String::from_utf8_lossy(&status(Some("right")).stdout).to_string();
    assert!(
        listed.contains("resnet18") && listed.contains("pending"),
        "{listed}"
    );
    let cancel = Command::new(MURI)
        .args(["cancel", &id, "--scheduler", &addr])
        .env("MURI_TOKEN", "right")
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    std::thread::sleep(Duration::from_millis(400));
    let listed = String::from_utf8_lossy(&status(Some("right")).stdout).to_string();
    assert!(listed.contains("cancelled"), "{listed}");
    // A worker with the wrong token cannot register.
    let mut w = Command::new(MURI)
        .args([
            "worker",
            "--scheduler",
            &addr,
            "--node-id",
            "0",
            "--gpus",
            "4",
        ])
        .env("MURI_TOKEN", "wrong")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let _ = w.kill();
    let mut err = String::new();
    w.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let _ = w.wait();
    assert!(err.contains("registration refused"), "{err}");
    drop(run);
}

// ---- jobs that span nodes: workers stand in for hosts on their own loopback addresses ----

/// A cluster spec of `nodes` nodes × 4 GPUs.
fn write_spec(dir: &Path, nodes: u32) -> PathBuf {
    let path = dir.join("spec.csv");
    std::fs::write(
        &path,
        format!("num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,{nodes},4,32,350\n"),
    )
    .unwrap();
    path
}

/// Worker `node` on its own loopback host, 127.0.0.<node + 2>.
fn start_host_worker(port: u16, node: u32, token: &str) -> Proc {
    let listen = format!("127.0.0.{}:0", node + 2);
    start_worker_with(port, node, token, &[], &["--listen", &listen])
}

/// Waits until no process of the run is left; fails listing the survivors.
fn assert_nothing_left(token: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let left = processes_with_token(token);
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "processes left running: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// launches.csv as (job ids, node ids, hosts, ranks per host, status) per row.
fn read_launches(log: &Path) -> Vec<[String; 5]> {
    let text = std::fs::read_to_string(log.join("launches.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "launch_id,virtual_time,wall_time,job_ids,node_ids,hosts,ranks_per_host,status,startup_s,iteration_s,sample_start,sample_end"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 12, "{l}");
            [f[3], f[4], f[5], f[6], f[7]].map(str::to_string)
        })
        .collect()
}

/// The sample windows of launches.csv's `ok` rows, as (wall seconds from, to), per round
/// (the rows' virtual time).
fn sample_windows(log: &Path) -> BTreeMap<String, Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(log.join("launches.csv")).unwrap();
    let mut rounds: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[7] != "ok" {
            continue;
        }
        let window = (f[10].parse().unwrap(), f[11].parse().unwrap());
        assert!(window.0 <= window.1, "{line}");
        rounds.entry(f[1].to_string()).or_default().push(window);
    }
    rounds
}

/// Jobs spanning nodes under `policy`, with `--concurrent_samples` as given: 1 (one sample
/// at a time, what run.sh sets) or 0 (all of a round's samples together).
fn multi_node_run(policy: &str, token: &str, concurrent_samples: &str) {
    trainer_present();
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 3);
    let trace = Path::new(ROOT).join("trace-data/testbed-multinode.csv");
    let jobs = muri::trace::Trace::from_path(&trace).unwrap().jobs;
    let wide: Vec<String> = jobs
        .iter()
        .filter(|j| j.num_gpu == 8)
        .map(|j| j.job_id.to_string())
        .collect();
    assert!(wide.len() >= 2, "the trace has 8-GPU jobs");
    let mut run = start_scheduler_on(
        dir.path(),
        &spec,
        Some(&trace),
        policy,
        &["--concurrent_samples", concurrent_samples],
        token,
    );
    let _workers: Vec<Proc> = (0..3)
        .map(|n| start_host_worker(run.port, n, token))
        .collect();
    let err = wait_done(&mut run, Duration::from_secs(180));
    assert!(
        err.contains(&format!("{} jobs completed, 0 failed", jobs.len())),
        "{err}"
    );
    check_job_csv(&run.log, jobs.len());
    let launches = read_launches(&run.log);
    for id in &wide {
        let rows: Vec<_> = launches
            .iter()
            .filter(|r| r[0].split('+').any(|j| j == id) && r[4] == "ok")
            .collect();
        assert!(!rows.is_empty(), "job {id} was launched");
        for r in rows {
            let hosts: Vec<&str> = r[2].split('+').collect();
            assert_eq!(hosts.len(), 2, "job {id} spans two hosts: {r:?}");
            assert_ne!(hosts[0], hosts[1], "{r:?}");
            assert!(hosts.iter().all(|h| h.starts_with("127.0.0.")), "{r:?}");
            assert_eq!(r[3], "4+4", "four ranks on each host: {r:?}");
        }
    }
    // Samples start after every launch of their round has started up: one at a time, each
    // after the last has reported, or all at once.
    let rounds = sample_windows(&run.log);
    assert!(
        rounds.values().any(|w| w.len() > 1),
        "no round of several launches"
    );
    for (round, mut windows) in rounds {
        windows.sort_by(|a, b| a.0.total_cmp(&b.0));
        if concurrent_samples == "1" {
            for pair in windows.windows(2) {
                assert!(
                    pair[1].0 >= pair[0].1,
                    "round {round}: overlapping samples {pair:?}"
                );
            }
        } else {
            let spread = windows.last().unwrap().0 - windows[0].0;
            assert!(
                spread < 0.01,
                "round {round}: samples not let go together {windows:?}"
            );
        }
    }
    // Every launch kept its trainers' output, headed by the command that started them.
    let logs: Vec<PathBuf> = std::fs::read_dir(run.log.join("trainer-logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), launches.len(), "one trainer log per launch");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.starts_with("# CUDA_VISIBLE_DEVICES=") && text.contains("--group-id"),
            "{}: {text}",
            log.display()
        );
        assert!(!text.contains(token), "the token stays out of the log");
    }
    assert_nothing_left(token, Duration::from_secs(10));
}

/// Real models (features `torch` and `mpi`) on 2 workers × 1 GPU, each its own loopback
/// host: the 2-GPU jobs of trace-data/testbed-real-multinode.csv run one rank on each host
/// (`mpirun` over the host list), and `--check_sync` has every step check that both ranks
/// hold identical parameters, which rank 0 confirms in the launch's log.
#[cfg(all(feature = "torch", feature = "mpi"))]
#[test]
fn real_models_pass_check_sync_across_two_loopback_hosts() {
    trainer_present();
    let token = "real-check-sync";
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.csv");
    std::fs::write(
        &spec,
        "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,2,1,8,350\n",
    )
    .unwrap();
    let trace = Path::new(ROOT).join("trace-data/testbed-real-multinode.csv");
    let jobs = muri::trace::Trace::from_path(&trace).unwrap().jobs;
    let wide: Vec<String> = jobs
        .iter()
        .filter(|j| j.num_gpu == 2)
        .map(|j| j.job_id.to_string())
        .collect();
    assert!(!wide.is_empty(), "the trace has 2-GPU jobs");
    let mut run = start_scheduler_on(
        dir.path(),
        &spec,
        Some(&trace),
        "multi-resource-blossom-same-gpu",
        &["--fast_forwarding", "3", "--time_scale", "1"],
        token,
    );
    let data = dir.path().join("data");
    let ckpt = dir.path().join("ckpt");
    let _workers: Vec<Proc> = (0..2u32)
        .map(|node| {
            let mut cmd = Command::new(MURI);
            cmd.args(["worker", "--scheduler", &format!("127.0.0.1:{}", run.port)])
                .args(["--node-id", &node.to_string(), "--gpus", "1"])
                .args(["--listen", &format!("127.0.0.{}:0", node + 2)])
                .args(["--workload", "real", "--check_sync", "--data_dir"])
                .arg(&data)
                .arg("--checkpoint_dir")
                .arg(&ckpt)
                .env("MURI_TOKEN", token)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Proc(cmd.spawn().unwrap())
        })
        .collect();
    let err = wait_done(&mut run, Duration::from_secs(600));
    assert!(
        err.contains(&format!("{} jobs completed, 0 failed", jobs.len())),
        "{err}"
    );
    check_job_csv(&run.log, jobs.len());
    let text = std::fs::read_to_string(run.log.join("launches.csv")).unwrap();
    let mut spanning = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if !f[3].split('+').any(|j| wide.iter().any(|w| w == j)) {
            continue;
        }
        assert_eq!(f[5], "127.0.0.2+127.0.0.3", "one rank per host: {line}");
        assert_eq!((f[6], f[7]), ("1+1", "ok"), "{line}");
        let log = run
            .log
            .join("trainer-logs")
            .join(format!("launch-{}.log", f[0]));
        let trainer = std::fs::read_to_string(&log).unwrap();
        let checks: u64 = trainer
            .split("check-sync: ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{}: no check-sync line:\n{trainer}", log.display()));
        assert!(checks >= 3, "{}: {checks} checks", log.display());
        spanning += 1;
    }
    assert!(spanning > 0, "no launch of a 2-GPU job:\n{text}");
    assert_nothing_left(token, Duration::from_secs(10));
}

#[test]
fn muri_s_runs_8_gpu_jobs_across_two_loopback_hosts() {
    multi_node_run("multi-resource-blossom-same-gpu", "multi-muri-s", "1");
}

#[test]
fn srtf_runs_8_gpu_jobs_across_two_loopback_hosts() {
    multi_node_run("shortest", "multi-srtf", "0");
}

/// SIGKILL of the second node of a running 8-GPU launch: the ranks on the first node end
/// too, the launch is recorded as lost, and the job runs again on the nodes left.
#[test]
fn losing_a_node_of_an_8_gpu_job_ends_its_ranks_everywhere_and_requeues_it() {
    trainer_present();
    let token = "multi-fault";
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 3);
    // One 8-GPU job; each sample runs 30 iterations of 0.2 s.
    let trace = write_trace(dir.path(), &["0,8,0,2000,gpt2,4,400000,0,200,0.6,180,20,0"]);
    let mut run = start_scheduler_on(
        dir.path(),
        &spec,
        Some(&trace),
        "shortest",
        &["--time_scale", "1", "--fast_forwarding", "30"],
        token,
    );
    let mut workers: Vec<Proc> = (0..3)
        .map(|n| start_host_worker(run.port, n, token))
        .collect();
    // Launch 1's processes: its ranks, and the mpirun that started them (MPI builds).
    let first_launch = |cmd: &str| cmd.contains("muri-trainer") && cmd.contains("--group-id 1 ");
    let is_rank = |cmd: &str| {
        cmd.split(' ')
            .next()
            .is_some_and(|p| p.ends_with("muri-trainer"))
    };
    let started = Instant::now();
    while processes_with_token(token)
        .iter()
        .filter(|(_, c)| first_launch(c) && is_rank(c))
        .count()
        < 8
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the 8 ranks never started: {:#?}",
            processes_with_token(token)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    workers[1].0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    while processes_with_token(token)
        .iter()
        .any(|(_, c)| first_launch(c))
    {
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "ranks of the lost launch still run (the sample alone takes 6 s): {:#?}",
            processes_with_token(token)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = wait_done(&mut run, Duration::from_secs(60));
    assert!(err.contains("worker 1 lost"), "{err}");
    assert!(err.contains("1 jobs completed, 0 failed"), "{err}");
    check_job_csv(&run.log, 1);
    let launches = read_launches(&run.log);
    assert_eq!(launches[0][1], "0+1", "{launches:?}");
    assert!(launches[0][4].starts_with("lost: "), "{launches:?}");
    let last = launches.last().unwrap();
    assert_eq!(
        (last[1].as_str(), last[4].as_str()),
        ("0+2", "ok"),
        "{launches:?}"
    );
    drop(workers.remove(1));
    assert_nothing_left(token, Duration::from_secs(10));
}

#[test]
fn a_daemon_listening_on_every_interface_must_advertise_an_address() {
    let worker = muri(&[
        "worker",
        "--node-id",
        "0",
        "--listen",
        "0.0.0.0:0",
        "--allow-remote",
        "--no_auth",
    ]);
    assert!(!worker.status.success());
    let err = String::from_utf8_lossy(&worker.stderr);
    assert!(err.contains("needs --advertise"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Command::new(MURI)
        .args(["scheduler", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--allow-remote",
            "--no_auth",
            "--log_path",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!scheduler.status.success());
    let err = String::from_utf8_lossy(&scheduler.stderr);
    assert!(err.contains("needs --advertise"), "{err}");
}
