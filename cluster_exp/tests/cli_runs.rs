//! The command line as a researcher uses it day to day: policy names in any spelling, run
//! folders that record their inputs and refuse to be mixed up or overwritten, Ctrl-C, and
//! machine-readable output.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn muri(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .output()
        .expect("run muri")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shared_trace(name: &str) -> String {
    common::shared()
        .join("traces/muri-sim")
        .join(format!("{name}.csv"))
        .to_string_lossy()
        .into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn schedule_accepts_paper_and_reference_names_in_any_case() {
    let out = muri(&["simulate", "--schedule", "SRTF,muri-s,tiresias"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let first: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(first, ["SRTF", "Muri-S", "Tiresias"], "{text}");
    assert!(text.lines().next().unwrap().contains("×Muri-S"), "{text}");
}

#[test]
fn a_misspelt_policy_gets_a_suggestion() {
    let out = muri(&["simulate", "--schedule", "shortset"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("did you mean `shortest`?"), "{err}");
}

#[test]
fn runs_of_different_traces_are_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let t3 = dir.path().join("trace3");
    let default = dir.path().join("default");
    let trace3 = shared_trace("trace3");
    let out = muri(&[
        "simulate",
        "--trace_file",
        &trace3,
        "--schedule",
        "SRTF",
        "--log_path",
        path(&t3),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = muri(&[
        "simulate",
        "--schedule",
        "SRTF",
        "--log_path",
        path(&default),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t3.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["trace"]["path"], trace3.as_str());
    assert_eq!(info["jobs"], 992);
    assert_eq!(info["policy"], "shortest");
    assert_eq!(info["trace"]["sha256"].as_str().unwrap().len(), 64);

    let out = muri(&["calc", "--compare", path(&t3), path(&default)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("trace3.csv") && err.contains("trace-data/default.csv"),
        "{err}"
    );
    assert!(err.contains("--allow-mixed"), "{err}");

    let out = muri(&[
        "calc",
        "--compare",
        path(&t3),
        path(&default),
        "--allow-mixed",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("compared anyway"), "{}", stderr(&out));
}

#[test]
fn a_folder_holding_a_run_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let args = ["simulate", "--schedule", "fifo", "--log_path", path(&logs)];
    assert!(muri(&args).status.success());
    let out = muri(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = muri(&forced);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unwritable_log_path_fails_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let target = file.join("logs");
    let started = Instant::now();
    let out = muri(&["simulate", "--log_path", path(&target)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--log_path") && err.contains("a-file"),
        "{err}"
    );
    // Nothing was simulated: no "trace … on … GPUs" banner, no table.
    assert!(!err.contains("GPUs"), "{err}");
    assert!(stdout(&out).is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn calc_on_a_folder_of_runs_compares_them_to_muri_s() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("runs");
    let out = muri(&[
        "simulate",
        "--schedule",
        "fifo,Muri-S,SRTF",
        "--log_path",
        path(&logs),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = muri(&["calc", path(&logs), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["baseline"], "Muri-S");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let muri_s = rows.iter().find(|r| r["run"] == "Muri-S").unwrap();
    assert_eq!(muri_s["avg_jct_ratio"], 1.0);
    let fifo = rows.iter().find(|r| r["run"] == "FIFO").unwrap();
    let ratio = fifo["avg_jct_s"].as_f64().unwrap() / muri_s["avg_jct_s"].as_f64().unwrap();
    assert_eq!(fifo["avg_jct_ratio"].as_f64().unwrap(), ratio);
    assert_eq!(fifo["preemptions"], 0);
    let util = fifo["gpu_utilisation"].as_f64().unwrap();
    assert!(util > 0.0 && util <= 1.0, "{util}");
}

#[test]
fn simulate_prints_csv() {
    let out = muri(&["simulate", "--schedule", "SRTF,SRSF", "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let headers = rows.headers().unwrap().clone();
    for column in [
        "p50_jct_s",
        "p90_jct_s",
        "avg_queueing_delay_s",
        "preemptions",
    ] {
        assert!(headers.iter().any(|h| h == column), "{column}: {text}");
    }
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(&records[0][0], "SRTF");
    assert_eq!(&records[1][1], "shortest-gpu");
    // Without Muri-S or Muri-L among the runs, ratios are to the first.
    assert_eq!(&records[0][records[0].len() - 1], "SRTF");
}

#[test]
fn ctrl_c_prints_the_finished_policies_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    // SRTF takes well under a second on trace2_pr; Muri-L takes many.
    let child = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args([
            "simulate",
            "--trace_file",
            &shared_trace("trace2_pr"),
            "--schedule",
            "SRTF,Muri-L",
            "--log_path",
            path(&logs),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !logs.join("shortest/run.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "SRTF never finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("SRTF ")),
        "no SRTF row: {text}"
    );
    assert!(!text.contains("Muri-L "), "{text}");
    assert!(
        stderr(&out).contains("1 of 2 policies finished"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_worker_without_its_trainer_stops_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-trainer-here");
    let started = Instant::now();
    let out = muri(&[
        "worker",
        "--scheduler",
        "127.0.0.1:9",
        "--node-id",
        "0",
        "--no_auth",
        "--trainer",
        path(&missing),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no-trainer-here") && err.contains("not found"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn logs_carry_no_colour_when_stderr_is_not_a_terminal() {
    // An unopenable recording path makes Muri log a warning through `tracing`.
    let out = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(["simulate", "--schedule", "Muri-S"])
        .env("MURI_RECORD_MATCHINGS", "/nonexistent-dir/m.csv")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("not recording"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn sweep_baselines_reach_summary_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let trace = common::repo().join("trace-data/default.csv");
    let write_sweep = |name: &str, baseline: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "out = \"{}\"\n{baseline}\n[[grid]]\ntraces = [\"{}\"]\npolicies = [\"SRTF\", \"muri-l\", \"Muri-S\"]\n",
            dir.path().join(name).display(),
            trace.display()
        );
        std::fs::write(&file, text).unwrap();
        file
    };
    // No baseline in the file: Muri-S, present in the grid.
    let file = write_sweep("plain", "");
    let out = muri(&["sweep", path(&file), "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(dir.path().join("plain/summary.md")).unwrap();
    assert!(md.lines().next().unwrap().contains("×Muri-S"), "{md}");
    let csv = std::fs::read_to_string(dir.path().join("plain/summary.csv")).unwrap();
    assert!(csv.starts_with("trace,policy,flags,jobs,avg_jct_s,makespan_s,p99_jct_s,p50_jct_s,p90_jct_s,avg_queueing_delay_s,gpu_utilisation,preemptions"), "{csv}");
    assert!(dir.path().join("plain/default/shortest/run.json").exists());
    // Rerunning into the same folder needs --force.
    let out = muri(&["sweep", path(&file), "--threads", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));

    // The file's own baseline, by paper name, is what plot normalises to.
    let file = write_sweep("srtf", "baseline = \"srtf\"");
    let out = muri(&["sweep", path(&file), "--threads", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = muri(&[
        "plot",
        path(&dir.path().join("srtf")),
        "--format",
        "svg",
        "--timeline",
        "none",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bars normalised to SRTF"),
        "{}",
        stderr(&out)
    );
}
