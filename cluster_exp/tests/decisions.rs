//! One round, two drivers: for every policy, the decision log of `muri simulate
//! --decisions` and that of the testbed (`muri scheduler --executor model`, with worker
//! daemons registering over real gRPC on loopback) are identical, as `muri diff` finds them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MURI: &str = env!("CARGO_BIN_EXE_muri");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// SRTF, SRSF, Tiresias, Muri-S, Muri-L, Themis, AntMan, FIFO.
const POLICIES: [&str; 8] = [
    "shortest",
    "shortest-gpu",
    "dlas-gpu",
    "multi-resource-blossom-same-gpu",
    "multi-resource-blossom-same-gpu-unaware",
    "themis",
    "antman",
    "fifo",
];

/// A child process killed when the test ends, so nothing outlives a failed test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn muri(args: &[&str]) -> Output {
    Command::new(MURI)
        .args(args)
        .env_remove("MURI_TOKEN")
        .output()
        .unwrap()
}

fn simulate_decisions(trace: &Path, spec: &Path, policy: &str, out: &Path) {
    let status = Command::new(MURI)
        .args(["simulate", "--schedule", policy, "--trace_file"])
        .arg(trace)
        .arg("--cluster_spec")
        .arg(spec)
        .arg("--decisions")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "muri simulate --schedule {policy} failed");
}

/// Runs the testbed scheduler with the model executor and `workers` worker daemons of
/// `gpus` GPUs each; returns when the scheduler has exited successfully.
fn testbed_decisions(trace: &Path, spec: &Path, workers: u32, gpus: u32, policy: &str, dir: &Path) {
    let mut cmd = Command::new(MURI);
    cmd.args(["scheduler", "--schedule", policy, "--executor", "model"])
        .arg("--trace_file")
        .arg(trace)
        .arg("--cluster_spec")
        .arg(spec)
        .arg("--log_path")
        .arg(dir)
        .arg("--decisions")
        .arg(dir.join("decisions.csv"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--no_auth")
        .env_remove("MURI_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut scheduler = Proc(cmd.spawn().unwrap());
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
    let _workers: Vec<Proc> = (0..workers)
        .map(|n| {
            let child = Command::new(MURI)
                .args(["worker", "--scheduler", &format!("127.0.0.1:{port}")])
                .args(["--node-id", &n.to_string(), "--gpus", &gpus.to_string()])
                .arg("--no_auth")
                .env_remove("MURI_TOKEN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            Proc(child)
        })
        .collect();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = scheduler.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{policy}: the testbed did not finish within 300 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = rest.join().unwrap().join("\n");
    assert!(status.success(), "{policy}: the scheduler failed:\n{log}");
}

/// Every policy's two decision logs on `trace` are identical (`muri diff` exits 0).
fn check_trace(name: &str, trace: &Path, spec: &Path, workers: u32, gpus: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut differing = Vec::new();
    for policy in POLICIES {
        let sim = tmp.path().join(format!("{policy}-simulate.csv"));
        let dir = tmp.path().join(format!("{policy}-testbed"));
        simulate_decisions(trace, spec, policy, &sim);
        testbed_decisions(trace, spec, workers, gpus, policy, &dir);
        let testbed = dir.join("decisions.csv");
        let out = muri(&["diff", sim.to_str().unwrap(), testbed.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {
                // Identical, and not trivially: every job started and finished.
                let log = std::fs::read_to_string(&sim).unwrap();
                let finishes = log.lines().filter(|l| l.contains(",finish,")).count();
                let jobs = muri::trace::Trace::from_path(trace).unwrap().jobs.len();
                assert_eq!(finishes, jobs, "{name} {policy}: one finish per job");
            }
            _ => differing.push(format!("{name} {policy}: {text}")),
        }
    }
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}

#[test]
fn simulator_and_model_testbed_decide_alike_on_the_testbed_trace() {
    let spec = Path::new(ROOT).join("cluster_spec/n2g4.csv");
    let trace = Path::new(ROOT).join("trace-data/testbed.csv");
    check_trace("testbed.csv", &trace, &spec, 2, 4);
}

#[test]
fn simulator_and_model_testbed_decide_alike_on_100_paper_jobs() {
    let trace: PathBuf = common::trace_path("trace1_first100");
    let spec = Path::new(ROOT).join("cluster_spec/n8g8.csv");
    check_trace("trace1_first100", &trace, &spec, 8, 8);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn diff_exit_status_says_identical_different_or_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let header = muri::round::DECISIONS_HEADER;
    let a = write(
        tmp.path(),
        "a.csv",
        &format!("{header}\n0.0,1,start,1,0,2\n5.5,1,finish,1,0,2\n"),
    );
    let same = write(
        tmp.path(),
        "same.csv",
        &format!("{header}\r\n0.0,1,start,1,0,2\r\n5.5,1,finish,1,0,2\r\n"),
    );
    let other = write(
        tmp.path(),
        "other.csv",
        &format!("{header}\n0.0,1,start,1,1,2\n5.5,1,finish,1,1,2\n"),
    );
    let short = write(
        tmp.path(),
        "short.csv",
        &format!("{header}\n0.0,1,start,1,0,2\n"),
    );
    let not_a_log = write(tmp.path(), "job.csv", "time,job_id\n1,2\n");
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();

    let out = muri(&["diff", &path(&a), &path(&same)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("identical: 2 decisions"));

    let out = muri(&["diff", &path(&a), &path(&other)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("0.0,1,start,1,1,2"), "{text}");

    let out = muri(&["diff", &path(&a), &path(&short)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(end of file)"));

    let missing = tmp.path().join("missing.csv");
    let out = muri(&["diff", &path(&a), &path(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));

    let out = muri(&["diff", &path(&a), &path(&not_a_log)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

/// The log tells each job's story consistently with job.csv: it starts before anything
/// else, a stop or regroup only follows a start (or regroup), it finishes exactly once and
/// last, at its job.csv end time, and its stops are job.csv's preemptions.
#[test]
fn decision_log_agrees_with_job_csv_for_every_policy() {
    use muri::cluster::ClusterSpec;
    use muri::policy::PolicyOptions;
    use muri::simulate::simulate_logged;
    use muri::trace::Trace;
    use std::collections::HashMap;

    let trace = Trace::from_path(&common::trace_path("trace1_first100")).unwrap();
    for policy in POLICIES {
        let r = simulate_logged(
            &trace,
            ClusterSpec::N8G8,
            policy,
            PolicyOptions::default(),
            None,
            true,
        )
        .unwrap();
        let csv = r.decisions.expect("a decision log was asked for").to_csv();
        let mut last_time = f64::NEG_INFINITY;
        let mut state: HashMap<u64, &str> = HashMap::new();
        let mut stops: HashMap<u64, u32> = HashMap::new();
        let mut finished: HashMap<u64, f64> = HashMap::new();
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 6, "{policy}: {line}");
            let (time, job, action): (f64, u64, &str) =
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2]);
            assert!(time >= last_time, "{policy}: time goes back at {line}");
            last_time = time;
            let before = state.get(&job).copied().unwrap_or("none");
            let ok = match action {
                "start" => before == "none" || before == "stop",
                "stop" | "regroup" | "finish" => before == "start" || before == "regroup",
                _ => false,
            };
            assert!(ok, "{policy}: `{action}` after `{before}`: {line}");
            state.insert(job, action);
            if action == "stop" {
                *stops.entry(job).or_default() += 1;
            }
            if action == "finish" {
                finished.insert(job, time);
            }
        }
        assert_eq!(finished.len(), r.jobs.len(), "{policy}: one finish per job");
        for rec in &r.jobs {
            assert_eq!(
                finished[&rec.job_id], rec.end_time,
                "{policy}: job {} finishes at its end time",
                rec.job_id
            );
            assert_eq!(
                stops.get(&rec.job_id).copied().unwrap_or(0),
                rec.preempt,
                "{policy}: job {} stops as often as it is preempted",
                rec.job_id
            );
        }
    }
}
