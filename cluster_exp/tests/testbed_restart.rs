//! `muri scheduler --state_dir`: the scheduler SIGKILLed at several points of a real run
//! (scheduler, worker daemons and trainers as processes on loopback) and restarted on its
//! state directory. Every job must finish exactly once, the rows written before the kill
//! must stay as they were (the logs are appended to, never rewritten), and nothing the run
//! started may outlive it.
//!
//! Needs the `muri-trainer` executable next to `muri` (built by `cargo test` at the
//! workspace root, or `cargo build --release -p muri-workloads`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod testbed_support;
use testbed_support::{processes_with_token, Proc};

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

/// A trace of `jobs` jobs that fit one 4-GPU node, arriving every 300 s.
fn make_trace(dir: &Path, jobs: usize) -> PathBuf {
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
        "11",
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

/// One experiment: its inputs, directories and token.
struct Setup {
    dir: tempfile::TempDir,
    spec: PathBuf,
    trace: PathBuf,
    policy: &'static str,
    extra: Vec<&'static str>,
    token: &'static str,
}

impl Setup {
    fn log(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the scheduler on `listen` (port 0 at first; the same port on restart).
    fn scheduler(&self, listen: &str) -> Scheduler {
        let mut cmd = Command::new(MURI);
        cmd.args(["scheduler", "--cluster_spec"])
            .arg(&self.spec)
            .arg("--trace_file")
            .arg(&self.trace)
            .args(["--schedule", self.policy, "--log_path"])
            .arg(self.log())
            .arg("--state_dir")
            .arg(self.state())
            .args(["--listen", listen, "--schedule_interval", "3600"])
            // Worker faults are not under test: generous timeouts keep a loaded machine from
            // turning slow samples into lost workers and failed jobs.
            .args(["--heartbeat_ms", "200", "--heartbeat_timeout_ms", "10000"])
            .args(["--sample_timeout", "120", "--max_attempts", "20"])
            .args(["--time_scale", "0.01"])
            .args(&self.extra)
            .env("MURI_TOKEN", self.token)
            // Launch ends and completions are logged at info level.
            .env("RUST_LOG", "muri::testbed=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        spawn_listening(cmd)
    }

    /// Worker `node`, on its own loopback host 127.0.0.<node + 2>.
    fn worker(&self, port: u16, node: u32) -> Proc {
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
            .args(["--listen", &format!("127.0.0.{}:0", node + 2)])
            .env("MURI_TOKEN", self.token)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Proc(cmd.spawn().unwrap())
    }

    fn jobs(&self) -> Vec<u64> {
        muri::trace::Trace::from_path(&self.trace)
            .unwrap()
            .jobs
            .iter()
            .map(|j| j.job_id)
            .collect()
    }
}

struct Scheduler {
    proc: Proc,
    port: u16,
    stderr: Option<JoinHandle<String>>,
}

impl Scheduler {
    /// Waits for a successful exit; returns stderr.
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

    /// SIGKILL; returns what it wrote to stderr.
    fn kill(mut self) -> String {
        self.proc.0.kill().unwrap();
        self.proc.0.wait().unwrap();
        self.stderr.take().unwrap().join().unwrap()
    }
}

/// Spawns the scheduler and reads its port from `scheduler listening on IP:PORT`; the rest
/// of stderr is collected.
fn spawn_listening(mut cmd: Command) -> Scheduler {
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
        Ok(Some(port)) => Scheduler {
            proc: Proc(child),
            port,
            stderr: Some(reader),
        },
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

/// Data rows of a CSV log (empty if it does not exist yet).
fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

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

/// Polls `ready` every 20 ms until it holds.
fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Trainer ranks running per launch id (the `--group-id` of their command line).
fn ranks_per_launch(token: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (_, cmd) in processes_with_token(token) {
        let mut words = cmd.split(' ');
        if !words.next().is_some_and(|p| p.ends_with("muri-trainer")) {
            continue;
        }
        if let Some(id) = words.skip_while(|w| *w != "--group-id").nth(1) {
            *out.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Starts the run, waits for `kill_point`, SIGKILLs the scheduler, optionally damages the
/// state directory, restarts the scheduler on it and checks the outcome. Returns the
/// restarted scheduler's stderr and the `job.csv` rows written before the kill.
fn kill_and_resume(
    setup: &Setup,
    nodes: u32,
    kill_point: impl FnMut() -> bool,
    damage: impl FnOnce(&Path),
) -> (String, Vec<String>) {
    trainer_present();
    let jobs = setup.jobs();
    let first = setup.scheduler("127.0.0.1:0");
    let port = first.port;
    let workers: Vec<Proc> = (0..nodes).map(|n| setup.worker(port, n)).collect();
    wait_for("the kill point", Duration::from_secs(120), kill_point);
    let first_err = first.kill();
    let before = rows(&setup.log().join("job.csv"));
    let launches_before = rows(&setup.log().join("launches.csv"));
    damage(&setup.state());
    let mut second = setup.scheduler(&format!("127.0.0.1:{port}"));
    let err = second.wait_done(Duration::from_secs(300));
    assert!(err.contains("resumed from"), "{first_err}\n----\n{err}");
    let summary = format!("{} jobs completed, 0 failed", jobs.len());
    assert!(err.contains(&summary), "{err}");

    // One row per job, each job once.
    let after = rows(&setup.log().join("job.csv"));
    let ids: Vec<u64> = after
        .iter()
        .map(|r| r.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        jobs.len(),
        "one row per job:\n{}",
        after.join("\n")
    );
    assert_eq!(unique, jobs.iter().copied().collect(), "every job, once");
    // The rows written before the kill are kept as they were: appended to, not rewritten.
    assert_eq!(
        after[..before.len()],
        before[..],
        "rows before the kill changed"
    );
    let records = muri::output::read_job_csv(&setup.log().join("job.csv")).unwrap();
    for r in &records {
        assert!(
            r.end_time > r.start_time && r.start_time >= r.submit_time - 1e-6,
            "{r:?}"
        );
    }
    // launches.csv: each launch once, the first run's rows first.
    let launches = rows(&setup.log().join("launches.csv"));
    let launch_ids: Vec<u64> = launches
        .iter()
        .map(|r| r.split(',').next().unwrap().parse().unwrap())
        .collect();
    let unique: BTreeSet<u64> = launch_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        launch_ids.len(),
        "a launch twice:\n{}",
        launches.join("\n")
    );
    assert_eq!(launches[..launches_before.len()], launches_before[..]);
    let calc = muri(&["calc", setup.log().to_str().unwrap()]);
    assert!(
        calc.status.success(),
        "{}",
        String::from_utf8_lossy(&calc.stderr)
    );
    // Workers exit with the scheduler, killing what they run.
    drop(workers);
    assert_nothing_left(setup.token, Duration::from_secs(10));
    (err, before)
}

fn single_node_setup(token: &'static str, jobs: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let trace = make_trace(dir.path(), jobs);
    Setup {
        spec: write_spec(dir.path(), 2),
        trace,
        dir,
        policy: "multi-resource-blossom-same-gpu",
        extra: vec!["--fast_forwarding", "10"],
        token,
    }
}

#[test]
fn scheduler_killed_before_the_first_completion_resumes() {
    let setup = single_node_setup("restart-early", 12);
    let launches = setup.log().join("launches.csv");
    let (_, before) = kill_and_resume(&setup, 2, || !rows(&launches).is_empty(), |_| {});
    assert!(
        before.is_empty(),
        "the kill came after a completion: {before:?}"
    );
}

#[test]
fn scheduler_killed_mid_run_resumes_keeping_finished_jobs() {
    let setup = single_node_setup("restart-mid", 12);
    let jobs = setup.log().join("job.csv");
    let (_, before) = kill_and_resume(&setup, 2, || rows(&jobs).len() >= 4, |_| {});
    assert!((4..12).contains(&before.len()), "{before:?}");
}

#[test]
fn a_torn_journal_tail_is_dropped_with_a_warning_and_the_run_resumes() {
    let setup = single_node_setup("restart-torn", 12);
    let jobs = setup.log().join("job.csv");
    let (err, _) = kill_and_resume(
        &setup,
        2,
        || rows(&jobs).len() >= 3,
        |state| {
            let journal = state.join("journal.log");
            let len = std::fs::metadata(&journal).unwrap().len();
            assert!(len > 16, "the journal holds records");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&journal)
                .unwrap();
            f.set_len(len - 7).unwrap();
        },
    );
    assert!(err.contains("dropped a torn or corrupt record"), "{err}");
}

/// The kill lands while an 8-GPU launch spans two hosts: its ranks must be killed on both
/// (by the restarted scheduler, as the workers register again) and the job run again.
#[test]
fn scheduler_killed_during_a_multi_node_launch_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        spec: write_spec(dir.path(), 3),
        trace: Path::new(ROOT).join("trace-data/testbed-multinode.csv"),
        dir,
        policy: "shortest",
        // The 8 ranks' start-up (about a second) is long enough to land in.
        extra: vec!["--fast_forwarding", "10"],
        token: "restart-multi",
    };
    let token = setup.token;
    kill_and_resume(
        &setup,
        3,
        || ranks_per_launch(token).values().any(|&n| n > 4),
        |_| {},
    );
    // The launch cut by the kill is recorded as lost, on its two hosts with 4 ranks each.
    let launches = rows(&setup.log().join("launches.csv"));
    assert!(
        launches.iter().any(|r| {
            let f: Vec<&str> = r.split(',').collect();
            f[4].contains('+') && f[6] == "4+4" && f[7] == "lost: scheduler restarted"
        }),
        "{}",
        launches.join("\n")
    );
}

#[test]
fn a_state_dir_of_another_policy_is_refused() {
    let setup = single_node_setup("restart-refused", 3);
    let first = setup.scheduler("127.0.0.1:0");
    wait_for("the state header", Duration::from_secs(30), || {
        setup.state().join("header.json").exists()
    });
    first.kill();
    let out = Command::new(MURI)
        .args(["scheduler", "--cluster_spec"])
        .arg(&setup.spec)
        .arg("--trace_file")
        .arg(&setup.trace)
        .args(["--schedule", "shortest", "--log_path"])
        .arg(setup.log())
        .arg("--state_dir")
        .arg(setup.state())
        .args(["--listen", "127.0.0.1:0"])
        .env("MURI_TOKEN", setup.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "holds a run with another policy (multi-resource-blossom-same-gpu; this run: shortest)"
        ),
        "{err}"
    );
}

/// In real time (`--fast_forwarding 0`): the scheduler SIGKILLed while jobs run and have
/// finished, restarted on its state directory, goes on with the iterations the jobs had
/// reached (the journal holds what their trainers reported and the polls saw), and kills
/// the launches of the old scheduler on their nodes.
#[test]
fn scheduler_killed_mid_run_in_real_time_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    // 8 jobs of about 10 virtual minutes (6 s of wall time at 0.01), every 5 minutes.
    let out = muri(&[
        "trace",
        "gen",
        "--jobs",
        "8",
        "--interarrival",
        "300",
        "--median-hours",
        "0.15",
        "--duration-sigma",
        "0.5",
        "--gpu-mix",
        "1:0.5,2:0.25,4:0.25",
        "--seed",
        "11",
        "-o",
        trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let setup = Setup {
        spec: write_spec(dir.path(), 2),
        trace,
        dir,
        policy: "shortest",
        extra: vec!["--fast_forwarding", "0"],
        token: "restart-realtime",
    };
    let jobs = setup.log().join("job.csv");
    let token = setup.token;
    let (err, before) = kill_and_resume(
        &setup,
        2,
        || rows(&jobs).len() >= 2 && !ranks_per_launch(token).is_empty(),
        |_| {},
    );
    assert!((2..8).contains(&before.len()), "{before:?}");
    // The launches cut by the kill are recorded as lost and killed by the new scheduler.
    let launches = rows(&setup.log().join("launches.csv"));
    assert!(
        launches
            .iter()
            .any(|r| r.split(',').nth(7) == Some("lost: scheduler restarted")),
        "{}",
        launches.join("\n")
    );
    assert!(err.contains("launches to kill"), "{err}");
    // A job cut by the kill goes on from where its trainer was: its first launch after the
    // restart runs to the end (status ok) with fewer iterations than the trace gives it.
    let trace = muri::trace::Trace::from_path(&setup.trace).unwrap();
    let mut seen = BTreeSet::new();
    let mut resumed_short = false;
    for l in err.lines().filter(|l| l.contains("launch ended")) {
        for j in &trace.jobs {
            if !l.contains(&format!("jobs=[{}]", j.job_id)) || !seen.insert(j.job_id) {
                continue;
            }
            let ran = l
                .split("iterations=[")
                .nth(1)
                .and_then(|r| r.split(']').next()?.parse::<u64>().ok());
            resumed_short |= l.contains("status=ok") && ran.is_some_and(|n| n < j.iterations);
        }
    }
    assert!(
        resumed_short,
        "no job went on from its journaled count:\n{err}"
    );
}
