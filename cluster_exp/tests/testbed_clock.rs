//! The testbed's fast-forward clock with real processes on loopback: a launch whose sample
//! never finishes is lost after a timeout that follows the model's expected startup, and
//! each lost launch counts as an attempt, so the job ends up failed instead of relaunched
//! forever.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod testbed_support;
use testbed_support::Proc;

const MURI: &str = env!("CARGO_BIN_EXE_muri");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn a_sample_that_never_finishes_is_lost_and_counts_as_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    let out = Command::new(MURI)
        .args(["trace", "gen", "--jobs", "1", "--models", "dqn"])
        .args([
            "--gpu-mix",
            "1:1",
            "--median-hours",
            "1",
            "--seed",
            "1",
            "-o",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A trainer that starts and never reports.
    let hang = dir.path().join("hanging-trainer");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("out");
    let mut scheduler = Command::new(MURI)
        .args(["scheduler", "--schedule", "shortest", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .arg("--trace_file")
        .arg(&trace)
        .arg("--log_path")
        .arg(&log)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--sample_timeout", "0.5", "--max_attempts", "2"])
        .arg("--no_auth")
        .env_remove("MURI_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .unwrap();
    let stderr = scheduler.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("scheduler listening on ")
                .and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok())
        })
        .expect("the scheduler reports its port");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let _worker = Command::new(MURI)
        .args(["worker", "--scheduler", &format!("127.0.0.1:{port}")])
        .args([
            "--node-id",
            "0",
            "--gpus",
            "4",
            "--kill_grace",
            "0.2",
            "--trainer",
        ])
        .arg(&hang)
        .arg("--no_auth")
        .env_remove("MURI_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .unwrap();
    let started = Instant::now();
    let status = scheduler.wait_exit(
        Duration::from_secs(120),
        "the scheduler did not give up on the hanging job",
    );
    let rest = rest.join().unwrap().join("\n");
    // A run in which a job failed ends with a non-zero status.
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("0 jobs completed, 1 failed"), "{rest}");
    assert!(rest.contains("failed after 2 attempts"), "{rest}");
    // dqn on one GPU is expected to start in 5 s (the restart table): each sample waits
    // --sample_timeout 0.5 s plus that, not 0.5 s alone.
    assert!(
        started.elapsed() >= Duration::from_secs(11),
        "two lost samples took only {:?}",
        started.elapsed()
    );
    let failed = std::fs::read_to_string(log.join("failed.csv")).unwrap();
    assert!(failed.contains(",failed,2,"), "{failed}");
    let waited: f64 = failed
        .split("sample did not finish within ")
        .nth(1)
        .and_then(|t| t.trim().strip_suffix('s')?.parse().ok())
        .unwrap_or_else(|| panic!("failed.csv names the timeout: {failed}"));
    assert!(
        waited >= 5.5,
        "the timeout includes the expected startup: {failed}"
    );
}

/// A scheduler (online: no trace, port 0, logs in `log`) waiting for one worker;
/// `time_scale` is passed when given. Returns it and the port it listens on; its stderr lines go to the channel.
fn online_scheduler(
    log: &Path,
    time_scale: Option<&str>,
) -> (Proc, u16, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(MURI);
    cmd.args(["scheduler", "--cluster_spec"])
        .arg(Path::new(ROOT).join("cluster_spec/n2g4.csv"))
        .arg("--log_path")
        .arg(log)
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no_auth"])
        .env_remove("MURI_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(scale) = time_scale {
        cmd.args(["--time_scale", scale]);
    }
    let mut scheduler = Proc(cmd.spawn().unwrap());
    let stderr = scheduler.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = rx
        .iter()
        .find_map(|l| {
            l.strip_prefix("scheduler listening on ")
                .and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok())
        })
        .expect("the scheduler reports its port");
    (scheduler, port, rx)
}

/// A worker for node `node` running `workload`, giving up after a 2 s refusal.
fn worker(port: u16, node: u32, workload: &str) -> Proc {
    Command::new(MURI)
        .args(["worker", "--scheduler", &format!("127.0.0.1:{port}")])
        .args(["--node-id", &node.to_string(), "--gpus", "4"])
        .args(["--workload", workload, "--register_timeout", "2"])
        .arg("--no_auth")
        .env_remove("MURI_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .unwrap()
}

/// The scheduler's line naming the time scale it chose once its workers registered.
fn time_scale_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("time scale") => return l,
            Ok(_) => {}
            Err(e) => panic!("no time scale line: {e}"),
        }
    }
}

/// Without `--time_scale` the clock follows what the workers run: real models run at their
/// own speed (a scale of 1), emulated stages at the default 0.05; an explicit scale wins;
/// and a worker running something else than the first is refused, naming both.
#[test]
fn the_default_time_scale_follows_the_workers_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, port, lines) = online_scheduler(&dir.path().join("real"), None);
    let _real = worker(port, 0, "real");
    assert_eq!(
        time_scale_line(&lines),
        "workers run real workloads: time scale 1 (default)"
    );
    let mut emulated = worker(port, 1, "emulated");
    let status = emulated.wait_exit(
        Duration::from_secs(60),
        "the emulated worker was not refused",
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut emulated.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("node 1 runs emulated workloads, but this scheduler's workers run real"),
        "{err}"
    );

    let (_s, port, lines) = online_scheduler(&dir.path().join("emulated"), None);
    let _emulated = worker(port, 0, "emulated");
    assert_eq!(
        time_scale_line(&lines),
        "workers run emulated workloads: time scale 0.05 (default)"
    );

    let (_s, port, lines) = online_scheduler(&dir.path().join("given"), Some("0.5"));
    let _real = worker(port, 0, "real");
    assert_eq!(
        time_scale_line(&lines),
        "workers run real workloads: time scale 0.5 (--time_scale)"
    );
}
