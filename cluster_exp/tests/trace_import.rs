//! `muri trace import` on a sample of each published format, then `muri simulate` on the
//! result; the minimal trace; `muri trace stats`. Samples: tests/data/public (README there).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use muri::trace::Trace;

fn muri(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .output()
        .expect("run muri")
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/public")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn n8g8() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cluster_spec/n8g8.csv")
        .to_string_lossy()
        .into_owned()
}

/// Imports `files` as `format` with `extra` flags; returns the trace and the import's report.
fn import(dir: &Path, format: &str, files: &[&str], extra: &[&str]) -> (Trace, String) {
    let out = dir.join(format!("{format}.csv"));
    let out_s = out.to_string_lossy().into_owned();
    let files: Vec<String> = files.iter().map(|f| sample(f)).collect();
    let mut args = vec!["trace", "import", "--format", format, "-o", &out_s];
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    let o = muri(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "import {format} failed: {stderr}");
    (
        Trace::from_path(&out).expect("the import writes a valid trace"),
        stderr,
    )
}

/// Simulates `trace` with SRTF and Muri-S; returns the number of rows of each job.csv.
fn simulate_rows(dir: &Path, trace: &Path) -> Vec<usize> {
    let logs = dir.join("logs");
    let o = muri(&[
        "simulate",
        "--trace_file",
        &trace.to_string_lossy(),
        "--cluster_spec",
        &n8g8(),
        "--schedule",
        "shortest,multi-resource-blossom-same-gpu",
        "--log_path",
        &logs.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ["shortest", "multi-resource-blossom-same-gpu"]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(logs.join(p).join("job.csv")).expect("job.csv");
            text.lines().count() - 1
        })
        .collect()
}

fn check_end_to_end(format: &str, files: &[&str], expect_jobs: usize, expect_gpus: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    let (trace, report) = import(dir.path(), format, files, &[]);
    assert_eq!(trace.jobs.len(), expect_jobs, "{format}: {report}");
    let gpus: Vec<u32> = trace.jobs.iter().map(|j| j.num_gpu).collect();
    assert_eq!(gpus, expect_gpus, "{format}: GPUs in arrival order");
    assert_eq!(
        trace.jobs[0].submit_time, 0.0,
        "{format}: rebased to the first job"
    );
    for j in &trace.jobs {
        let p = muri::models::profile(&j.model_name, j.num_gpu.min(32).next_power_of_two().min(32));
        assert!(
            p.is_some(),
            "{format}: {} is a catalogue model",
            j.model_name
        );
        assert!(j.iterations >= 1 && j.iteration_time_ms > 0.0);
    }
    let rows = simulate_rows(dir.path(), &dir.path().join(format!("{format}.csv")));
    assert_eq!(
        rows,
        [expect_jobs, expect_jobs],
        "{format}: every job finishes"
    );
}

#[test]
fn philly_imports_and_simulates() {
    check_end_to_end(
        "philly",
        &["philly_cluster_job_log.json"],
        5,
        &[1, 4, 16, 1, 2],
    );
}

#[test]
fn helios_imports_and_simulates() {
    check_end_to_end("helios", &["helios_cluster_log.csv"], 5, &[1, 8, 16, 4, 2]);
}

#[test]
fn acme_imports_and_simulates() {
    check_end_to_end("acme", &["acme_trace_seren.csv"], 5, &[8, 1, 4, 1, 64]);
}

#[test]
fn pai_imports_and_simulates() {
    let files = [
        "pai_job_table.csv",
        "pai_task_table.csv",
        "pai_group_tag_table.csv",
    ];
    check_end_to_end("pai", &files, 5, &[1, 4, 8, 1, 1]);
}

#[test]
fn philly_run_time_sums_the_attempts_and_gpus_are_the_last_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (trace, _) = import(dir.path(), "philly", &["philly_cluster_job_log.json"], &[]);
    // application_…_0005: attempts of 30 min on 8 GPUs and 3 h on 16 GPUs.
    let j = trace.jobs.iter().find(|j| j.num_gpu == 16).unwrap();
    assert!((j.duration - 3.5 * 3600.0).abs() <= j.iteration_time_ms / 1000.0);
    assert_eq!(j.submit_time, 3600.0);
}

#[test]
fn pai_takes_models_from_the_tag_table_and_rounds_gpu_shares_up() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "pai_job_table.csv",
        "pai_task_table.csv",
        "pai_group_tag_table.csv",
    ];
    let (trace, report) = import(dir.path(), "pai", &files, &[]);
    assert!(report.contains("3 with the trace's model name"), "{report}");
    let models: Vec<&str> = trace.jobs.iter().map(|j| j.model_name.as_str()).collect();
    assert_eq!(models[0], "bert", "workload `bert`");
    assert_eq!(models[1], "resnet18", "workload `ResNet50`");
    assert_eq!(models[4], "vgg16", "workload `vgg`");
    // The last job: two tasks of a quarter GPU each → 1 GPU.
    assert_eq!(trace.jobs[4].num_gpu, 1);
}

#[test]
fn filters_keep_failed_window_and_gpu_cap() {
    let dir = tempfile::tempdir().unwrap();
    let log = ["helios_cluster_log.csv"];
    let (all, report) = import(dir.path(), "helios", &log, &["--keep-failed"]);
    // 10 rows: one CPU-only job dropped, the 4 failed/cancelled/timed-out kept.
    assert_eq!(all.jobs.len(), 9, "{report}");
    let (window, _) = import(
        dir.path(),
        "helios",
        &log,
        &["--from-hours", "0.1", "--to-hours", "1"],
    );
    // Completed jobs submitted in [00:06:05, 01:00:05): 1006 (00:30) and 1008 (01:00:00).
    let gpus: Vec<u32> = window.jobs.iter().map(|j| j.num_gpu).collect();
    assert_eq!(gpus, [16, 4]);
    assert_eq!(
        window.jobs[1].submit_time, 1800.0,
        "rebased to the first job kept"
    );
    let (capped, report) = import(dir.path(), "helios", &log, &["--max-gpu", "8"]);
    assert_eq!(capped.jobs.len(), 4);
    assert!(report.contains("1 over the GPU cap"), "{report}");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let dir = tempfile::tempdir().unwrap();
    let models = |seed: &str| -> Vec<String> {
        let (t, _) = import(
            dir.path(),
            "helios",
            &["helios_cluster_log.csv"],
            &["--keep-failed", "--seed", seed],
        );
        t.jobs.into_iter().map(|j| j.model_name).collect()
    };
    assert_eq!(models("3"), models("3"));
    assert_ne!(models("3"), models("4"));
}

#[test]
fn bad_input_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cluster_log.csv");
    std::fs::write(
        &bad,
        "job_id,user,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n\
         1,u,1,6,1,COMPLETED,2020-04-01 00:00:05,,,60,0\n\
         2,u,one,6,1,COMPLETED,2020-04-01 00:00:05,,,60,0\n",
    )
    .unwrap();
    let out = dir.path().join("t.csv");
    let o = muri(&[
        "trace",
        "import",
        "--format",
        "helios",
        &bad.to_string_lossy(),
        "-o",
        &out.to_string_lossy(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("cluster_log.csv") && err.contains("line 3") && err.contains("`gpu_num`"),
        "{err}"
    );
    let o = muri(&[
        "trace",
        "import",
        "--format",
        "pai",
        &sample("pai_job_table.csv"),
        "-o",
        &out.to_string_lossy(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("pai_task_table"),
        "{err}"
    );
}

#[test]
fn the_minimal_trace_simulates() {
    let path = PathBuf::from(sample("minimal.csv"));
    let trace = Trace::from_path(&path).unwrap();
    assert_eq!(trace.jobs.len(), 5);
    assert_eq!(
        trace.jobs[1].model_name, "bert",
        "`bert-base` maps to its family"
    );
    assert_eq!(trace.jobs[3].model_name, "gpt2");
    let bert = muri::models::profile("bert", 4).unwrap();
    assert_eq!(trace.jobs[1].iteration_time_ms, bert.iteration_time_ms);
    assert_eq!(trace.jobs[1].submit_time, 60.0);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(simulate_rows(dir.path(), &path), [5, 5]);
}

#[test]
fn the_minimal_trace_rejects_unknown_models_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.csv");
    std::fs::write(
        &p,
        "job_id,num_gpu,submit_time,duration,model_name\n0,1,0,1000,llama\n",
    )
    .unwrap();
    let err = Trace::from_path(&p).unwrap_err().to_string();
    assert!(
        err.contains("m.csv") && err.contains("line 2") && err.contains("`model_name`"),
        "{err}"
    );
}

#[test]
fn stats_report_mix_load_and_percentiles() {
    let o = muri(&[
        "trace",
        "stats",
        &sample("minimal.csv"),
        "--cluster_spec",
        &n8g8(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("5 jobs arriving over 0.25 h"), "{text}");
    assert!(
        text.contains("GPUs per job: 1: 2 (40.0 %), 2: 1 (20.0 %), 4: 1 (20.0 %), 8: 1 (20.0 %)"),
        "{text}"
    );
    // Σ GPUs × duration ≈ 1·1 + 4·2 + 2·0.5 + 8·4 + 1·(1/6) h = 42.17 GPU-hours over 0.25 h.
    assert!(text.contains("GPU-hours: 42.2"), "{text}");
    assert!(text.contains("× a 64-GPU cluster"), "{text}");
    assert!(text.contains("max 4.0"), "{text}");
}
