//! The `muri` binary end to end: bad input gives a clear error naming file, line and field
//! with a non-zero exit; good input gives the reference's metric line; logs round-trip.

use std::path::Path;
use std::process::{Command, Output};

const HEADER: &str = "job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,interval,iteration_time,resource_time_0,resource_time_1,resource_time_2,priority";

fn muri(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .output()
        .expect("run muri")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn spec(dir: &Path) -> String {
    write(
        dir,
        "n1g8.csv",
        "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,1,8,92,520\n",
    )
}

/// Simulates a trace whose text is given, expecting failure; returns stderr.
fn expect_error(trace: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "bad.csv", trace);
    let s = spec(dir.path());
    let args = vec![
        "simulate",
        "--trace_file",
        &t,
        "--cluster_spec",
        &s,
        "--schedule",
        "shortest",
    ];
    let out = muri(&args);
    assert!(!out.status.success(), "expected failure for {trace:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "must not panic: {err}");
    assert!(err.contains("bad.csv"), "error must name the file: {err}");
    err
}

const GOOD_ROW: &str = "0,1,0,100,vgg16,16,10700,0,107,117,68,0,0";

#[test]
fn missing_column_is_named() {
    let err = expect_error("job_id,num_gpu,submit_time\n0,1,0\n");
    assert!(
        err.contains("line 1") && err.contains("missing column `iterations`"),
        "{err}"
    );
}

#[test]
fn non_numeric_field_names_line_and_field() {
    let err = expect_error(&format!(
        "{HEADER}\n{GOOD_ROW}\n1,1,abc,100,vgg16,16,10700,0,107,117,68,0,0\n"
    ));
    assert!(
        err.contains("line 3") && err.contains("submit_time") && err.contains("abc"),
        "{err}"
    );
}

#[test]
fn zero_and_negative_gpus_are_rejected() {
    let err = expect_error(&format!(
        "{HEADER}\n0,0,0,100,vgg16,16,10700,0,107,117,68,0,0\n"
    ));
    assert!(
        err.contains("line 2") && err.contains("num_gpu") && err.contains("positive"),
        "{err}"
    );
    let err = expect_error(&format!(
        "{HEADER}\n0,-2,0,100,vgg16,16,10700,0,107,117,68,0,0\n"
    ));
    assert!(err.contains("num_gpu") && err.contains("negative"), "{err}");
}

#[test]
fn job_larger_than_cluster_is_rejected() {
    let err = expect_error(&format!(
        "{HEADER}\n0,16,0,100,vgg16,16,10700,0,107,117,68,0,0\n"
    ));
    assert!(
        err.contains("16 GPUs") && err.contains("num_gpu") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn empty_file_is_rejected() {
    let err = expect_error("");
    assert!(err.contains("empty"), "{err}");
    let err = expect_error(&format!("{HEADER}\n"));
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn unknown_policy_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "t.csv", &format!("{HEADER}\n{GOOD_ROW}\n"));
    let out = muri(&["simulate", "--trace_file", &t, "--schedule", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown policy `nope`") && err.contains("multi-resource-blossom-same-gpu"),
        "{err}"
    );
}

#[test]
fn bad_cluster_spec_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "t.csv", &format!("{HEADER}\n{GOOD_ROW}\n"));
    let s = write(
        dir.path(),
        "spec.csv",
        "num_switch,num_node_p_switch\n1,8\n",
    );
    let out = muri(&["simulate", "--trace_file", &t, "--cluster_spec", &s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.csv") && err.contains("num_gpu_p_node"),
        "{err}"
    );
}

#[test]
fn simulate_writes_logs_that_calc_reads() {
    let dir = tempfile::tempdir().unwrap();
    // Two 1-GPU jobs of 100 iterations at 107 ms (×1.015) on one 8-GPU node: both run at once.
    let t = write(
        dir.path(),
        "t.csv",
        &format!("{HEADER}\n{GOOD_ROW}\n1,1,1000,200,bert,4,35600,1000,178,0.5,160,0,1\n"),
    );
    let s = spec(dir.path());
    let logs = dir.path().join("logs");
    let out = muri(&[
        "simulate",
        "--trace_file",
        &t,
        "--cluster_spec",
        &s,
        "--schedule",
        "shortest",
        "--log_path",
        logs.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Solo times: 100 × 0.107 × 1.015 = 10.8605 s and 200 × 0.178 × 1.015 = 36.134 s.
    // The reference charges the restart overhead (vgg16: 7 s, bert: 10 s) on every event
    // interval: job 0 loses the 1 s before job 1 arrives (ends at 11.8605); job 1 loses 10 s
    // of the 10.8605 s before job 0's end event (ends at 1 + 36.134 + 10 = 47.134).
    let expected = "Total jobs: 2, avg JCT: 28.997250, makespan: 47.134000, 99th JCT: 46.134000";
    assert!(stdout.contains(expected), "{stdout}");
    let job_csv = std::fs::read_to_string(logs.join("job.csv")).unwrap();
    assert!(job_csv.starts_with("time,job_id,num_gpu,submit_time,start_time,end_time"));
    assert_eq!(job_csv.lines().count(), 3);
    let calc = muri(&["calc", logs.to_str().unwrap()]);
    assert!(calc.status.success());
    assert!(String::from_utf8_lossy(&calc.stdout).contains(expected));
}

#[test]
fn calc_on_missing_or_empty_log_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = muri(&["calc", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("job.csv"));
    write(dir.path(), "job.csv", "time,job_id,num_gpu,submit_time,start_time,end_time,executed_time,real_executed_time,JCT,duration,pending_time,preempt,promote\n");
    let out = muri(&["calc", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job rows"));
}

#[test]
fn default_simulate_compares_every_policy() {
    let out = muri(&["simulate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["SRTF", "SRSF", "Tiresias", "Muri-S", "Muri-L", "FIFO"] {
        assert!(stdout.contains(name), "missing {name}: {stdout}");
    }
    // The baseline's own ratio is 1.
    let muri_s = stdout.lines().find(|l| l.starts_with("Muri-S ")).unwrap();
    assert!(muri_s.contains("1.000"), "{muri_s}");
}

#[test]
fn trace_gen_is_deterministic_and_simulates() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    for p in [&a, &b] {
        let out = muri(&[
            "trace",
            "gen",
            "--jobs",
            "50",
            "--seed",
            "7",
            "-o",
            p.to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
    let ta = std::fs::read_to_string(&a).unwrap();
    assert_eq!(ta, std::fs::read_to_string(&b).unwrap());
    assert!(ta.starts_with(HEADER));
    assert_eq!(ta.lines().count(), 51);
    let out = muri(&[
        "simulate",
        "--trace_file",
        a.to_str().unwrap(),
        "--schedule",
        "multi-resource-blossom-same-gpu",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Total jobs: 50,"));
}

#[test]
fn the_shipped_default_trace_is_what_trace_gen_makes() {
    let out = muri(&["trace", "gen"]);
    assert!(out.status.success());
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace-data/default.csv"),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
}

#[test]
fn trace_gen_draws_measured_profiles_from_a_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let cat = write(
        dir.path(),
        "cat.csv",
        "model,num_gpu,batch_size,iteration_time,resource_time_0,resource_time_1,resource_time_2\n\
         tinylm,1,8,41.5,0.5,38,3\n",
    );
    let out = muri(&[
        "trace",
        "gen",
        "--catalogue",
        &cat,
        "--models",
        "tinylm",
        "--gpu-mix",
        "1:1",
        "--jobs",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(&f[4..6], ["tinylm", "8"], "{row}");
        assert_eq!(&f[8..12], ["41.5", "0.5", "38", "3"], "{row}");
    }
    // A model the catalogue lacks is named, with the models it has.
    let out = muri(&["trace", "gen", "--catalogue", &cat, "--models", "nosuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch") && err.contains("tinylm"), "{err}");
    // A bad catalogue row names file, line and field.
    let bad = write(
        dir.path(),
        "bad.csv",
        "model,num_gpu,batch_size,iteration_time,resource_time_0,resource_time_1,resource_time_2\n\
         x,two,8,1,1,1,1\n",
    );
    let out = muri(&["trace", "gen", "--catalogue", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.csv") && err.contains("line 2") && err.contains("num_gpu"),
        "{err}"
    );
}

#[test]
fn data_gen_writes_readable_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let args = [
        "data",
        "gen",
        "--dir",
        d.to_str().unwrap(),
        "--images",
        "64",
        "--tokens",
        "4096",
    ];
    let out = muri(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = text.lines().filter_map(|l| l.split(" (").next()).collect();
    assert_eq!(paths.len(), 2, "{text}");
    let images = muri_workloads::data::ImageReader::open(Path::new(paths[0])).unwrap();
    assert_eq!(images.header().count, 64);
    let tokens = muri_workloads::data::TokenReader::open(Path::new(paths[1])).unwrap();
    assert_eq!(tokens.header().count, 4096);
    // Generating again finds the same valid files (no rewrite, same names).
    let again = muri(&args);
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);
}

/// `muri simulate` arguments for a shared trace on `n8g8`.
fn simulate_shared(trace: &str, schedule: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trace = manifest.join(format!("../../shared/traces/muri-sim/{trace}.csv"));
    let spec = manifest.join("../cluster_spec/n8g8.csv");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    [
        "simulate",
        "--trace_file",
        &path(&trace),
        "--cluster_spec",
        &path(&spec),
    ]
    .into_iter()
    .chain(["--schedule", schedule])
    .map(str::to_owned)
    .collect()
}

/// Runs `muri` with `MURI_RECORD_MATCHINGS` set; returns its output and the lines recorded.
fn run_recording_matchings(args: &[String]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("matchings.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .env("MURI_RECORD_MATCHINGS", &record)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&record).unwrap_or_default();
    (out, text)
}

#[test]
fn twin_shortcuts_agree_with_the_plain_port_on_trace1() {
    // Every exact matching of a full Muri-S run on trace1 (6,395 solves, up to 256
    // vertices, few profile classes): the class-table solve, with all its twin
    // shortcuts, must give the mates of the plain port (the same weights, no classes).
    let args = simulate_shared("trace1", "multi-resource-blossom-same-gpu");
    let (run, text) = run_recording_matchings(&args);
    assert!(run.status.success());
    let mut solver = muri::matching::BlossomMatcher::new();
    let (mut solves, mut free_roots, mut others) = (0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        let r = muri::matching::RecordedSolve::parse(line)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(solver.solve(&r.graph), r.mates, "line {}", i + 1);
        let skips = solver.twin_scans_skipped();
        (free_roots, others) = (free_roots + skips.free_roots, others + skips.other_vertices);
        let plain = solver.solve(&r.graph.without_classes());
        assert_eq!(plain, r.mates, "line {}: plain port differs", i + 1);
        solves += 1;
    }
    assert!(solves > 5000, "only {solves} matchings recorded");
    assert!(
        free_roots > 10_000 && others > 10_000,
        "shortcuts barely exercised: {free_roots} free-root and {others} other replays"
    );
}

#[test]
fn recorded_matchings_replay_to_the_same_mates() {
    // `MURI_RECORD_MATCHINGS` writes every exact matching the simulator solves; each line
    // must parse and solve again to the mates recorded, and recording changes no result.
    let args = simulate_shared("trace3", "multi-resource-blossom-same-gpu");
    let plain = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(&args)
        .output()
        .unwrap();
    let (recorded, text) = run_recording_matchings(&args);
    assert!(plain.status.success() && recorded.status.success());
    let metrics = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("Total jobs:"))
            .map(str::to_owned)
    };
    assert!(metrics(&plain).is_some());
    assert_eq!(metrics(&plain), metrics(&recorded));

    let mut solver = muri::matching::BlossomMatcher::new();
    let mut solves = 0;
    let mut matched = 0;
    for (i, line) in text.lines().enumerate() {
        let r = muri::matching::RecordedSolve::parse(line)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(solver.solve(&r.graph), r.mates, "line {}", i + 1);
        solves += 1;
        matched += r.mates.iter().flatten().count();
    }
    assert!(solves >= 10, "only {solves} matchings recorded");
    assert!(matched > 0, "no recorded matching paired anything");
}

#[test]
fn recorded_lines_with_bad_parts_are_rejected() {
    use muri::matching::RecordedSolve;
    let good = RecordedSolve::format(1, &[Some(0.5)], &[0, 0], &[Some(1), Some(0)]);
    assert_eq!(good, "2 1;3fe0000000000000;0,0;1,0");
    let r = RecordedSolve::parse(&good).unwrap();
    assert_eq!((r.graph.get(0, 1), r.graph.get(1, 1)), (0.5, 0.0));
    for (bad, says) in [
        ("2 1;3fe0000000000000;0,0", "4 ';'-separated parts"),
        ("2 x;3fe0000000000000;0,0;1,0", "header"),
        ("2 1;zz;0,0;1,0", "weight"),
        ("2 1;3fe0000000000000;0,1;1,0", "out of range"),
        ("2 1;3fe0000000000000;0;1,0", "sizes"),
        ("2 1;3fe0000000000000;0,0;1,q", "mate"),
    ] {
        let err = RecordedSolve::parse(bad).unwrap_err();
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}
