//! Inputs that once crashed `muri` or were silently accepted: each now gives a clear error
//! naming file, line and field, with exit status 1. Also: line numbers as in the file for
//! every line ending, the input size limit, a closed output pipe, and the shipped inputs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TRACE_HEADER: &str = "job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,interval,iteration_time,resource_time_0,resource_time_1,resource_time_2,priority";

fn muri(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .output()
        .expect("run muri")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/regressions")
}

fn n8g8() -> String {
    repo().join("cluster_spec/n8g8.csv").display().to_string()
}

/// What each regression input must say (besides naming its file): `line N` and the field.
const EXPECTED: &[(&str, &str)] = &[
    ("spec-nodes-product-wraps-to-zero.csv", "line 2: field `num_node_p_switch`: num_switch × num_node_p_switch = 4294967296 nodes"),
    ("spec-nodes-product-wraps-2x2147483648.csv", "line 2: field `num_node_p_switch`"),
    ("spec-4294967295-switches.csv", "line 2: field `num_switch`"),
    ("spec-gpus-product-wraps-to-zero.csv", "line 2: field `num_gpu_p_node`: more than the limit of 1024 GPUs per node"),
    ("trace-job-of-4294967295-gpus.csv", "line 3: field `num_gpu`: job 1 needs 4294967295 GPUs"),
    ("trace-row-shorter-than-header.csv", "line 3: 12 fields, but the header has 13"),
    ("trace-batch-size-over-u32.csv", "line 2: field `batch_size`: must be at most 4294967295"),
    ("trace-duplicate-job-id.csv", "line 3: field `job_id`: duplicate: line 2 has the same job id"),
    ("trace-zero-iterations.csv", "line 2: field `iterations`: must be positive"),
    ("trace-all-zero-stage-times.csv", "line 2: field `resource_time_0`: resource_time_0, resource_time_1 and resource_time_2 are all zero"),
    ("trace-submit-time-1e308.csv", "line 2: field `submit_time`: must be at most 1e12 ms"),
    ("trace-nul-in-model-name.csv", "line 2: field `model_name`: must not contain control characters"),
    ("trace-cr-line-endings-bad-line-6.csv", "line 6: field `num_gpu`: expected a non-negative integer"),
    ("trace-unsorted-job-too-large-line-4.csv", "line 4: field `num_gpu`: job 2 needs 128 GPUs"),
    ("jobcsv-nan-jct.csv", "line 3: field `JCT`: must be finite"),
    ("jobcsv-infinite-end-time.csv", "line 2: field `end_time`: must be finite"),
    ("jobcsv-negative-jct.csv", "line 2: field `JCT`: must not be negative"),
    ("jobcsv-job-id-minus-1.csv", "line 2: field `job_id`: expected"),
    ("jobcsv-fractional-gpus.csv", "line 2: field `num_gpu`: expected an integer"),
];

/// Runs the command that reads a regression file the way a user would hand it to `muri`.
fn run_on(file: &Path) -> Output {
    let name = file.file_name().unwrap().to_string_lossy();
    let path = file.display().to_string();
    let spec = n8g8();
    let args: Vec<&str> = if name.starts_with("trace-") {
        vec![
            "simulate",
            "--schedule",
            "fifo",
            "--cluster_spec",
            &spec,
            "--trace_file",
            &path,
        ]
    } else if name.starts_with("spec-") {
        vec!["simulate", "--schedule", "fifo", "--cluster_spec", &path]
    } else if name.starts_with("jobcsv-") {
        vec!["calc", &path]
    } else {
        panic!("{name}: regression files are named trace-*, spec-* or jobcsv-*");
    };
    muri(&args)
}

#[test]
fn every_regression_input_is_refused_with_file_line_and_field() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (name, _) in EXPECTED {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "{name} is missing from tests/data/regressions"
        );
    }
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let out = run_on(file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: exit status; stderr: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: must not panic: {err}");
        assert!(
            err.contains(&format!("error: {}: line ", file.display())),
            "{name}: the error must name the file and line: {err}"
        );
        if let Some((_, expected)) = EXPECTED.iter().find(|(n, _)| *n == name) {
            assert!(
                err.contains(expected),
                "{name}: expected {expected:?} in: {err}"
            );
        }
    }
}

#[test]
fn a_bad_field_on_line_6_is_reported_as_line_6_for_every_line_ending() {
    let row = |id: u32, gpus: &str| {
        format!(
            "{id},{gpus},{},100,vgg16,16,10700,0,107,117,68,0,0",
            id * 10
        )
    };
    let dir = tempfile::tempdir().unwrap();
    for (eol, label) in [("\n", "lf"), ("\r\n", "crlf"), ("\r", "cr")] {
        // Line 3 is blank: it still counts, as in an editor.
        let lines = [
            TRACE_HEADER.to_string(),
            row(0, "1"),
            String::new(),
            row(1, "2"),
            row(2, "1"),
            row(3, "two"),
            row(4, "1"),
        ];
        let path = dir.path().join(format!("line6-{label}.csv"));
        std::fs::write(&path, lines.join(eol) + eol).unwrap();
        let out = muri(&[
            "simulate",
            "--schedule",
            "fifo",
            "--cluster_spec",
            &n8g8(),
            "--trace_file",
            path.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{label}: {err}");
        let expected = format!(
            "{}: line 6: field `num_gpu`: expected a non-negative integer (got \"two\")",
            path.display()
        );
        assert!(
            err.contains(&expected),
            "{label}: expected {expected:?} in: {err}"
        );
    }
}

#[test]
fn an_endless_input_fails_fast_with_the_size_limit() {
    let started = Instant::now();
    let out = muri(&["simulate", "--trace_file", "/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/dev/zero: larger than the 134217728-byte limit"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// Runs `muri args` with its standard output closed before it writes (as `| head -1` does
/// once it has its line), and returns the exit status and standard error.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muri"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run muri");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), err)
}

#[test]
fn a_closed_output_pipe_ends_quietly_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let trace = repo().join("trace-data/testbed.csv").display().to_string();
    let logs = dir.path().join("run").display().to_string();
    let decisions = dir.path().join("decisions.csv").display().to_string();
    let out = muri(&[
        "simulate",
        "--schedule",
        "fifo",
        "--trace_file",
        &trace,
        "--log_path",
        &logs,
        "--decisions",
        &decisions,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands: [&[&str]; 7] = [
        &["policies"],
        &["trace", "stats", &trace],
        &["diff", &decisions, &decisions],
        &["calc", &logs],
        &["calc", "--compare", &logs, &logs],
        &[
            "simulate",
            "--schedule",
            "fifo,shortest",
            "--trace_file",
            &trace,
        ],
        &["trace", "gen", "--jobs", "2000"],
    ];
    for args in commands {
        let (code, err) = with_closed_stdout(args);
        assert_eq!(code, Some(0), "muri {args:?}: exit status; stderr: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "muri {args:?}: {err}"
        );
    }
}

/// Every trace and cluster spec the project ships or reads from ../shared still loads.
#[test]
fn the_shipped_traces_and_cluster_specs_load() {
    use muri::cluster::ClusterSpec;
    use muri::trace::Trace;
    let shared = repo().join("../shared/traces");
    assert!(shared.is_dir(), "../shared/traces is missing");
    let mut dirs = vec![repo().join("trace-data"), repo().join("cluster_spec")];
    for entry in std::fs::read_dir(&shared).unwrap() {
        dirs.push(entry.unwrap().path());
    }
    let mut traces = 0;
    let mut specs = 0;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "csv") {
                continue;
            }
            let header = std::fs::read_to_string(&path).unwrap();
            let header = header.lines().next().unwrap_or("");
            if header.starts_with("num_switch") {
                ClusterSpec::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
                specs += 1;
            } else if header.starts_with("job_id") {
                let t = Trace::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!t.jobs.is_empty(), "{}", path.display());
                traces += 1;
            }
        }
    }
    assert!(
        traces >= 20 && specs >= 6,
        "found {traces} traces and {specs} specs"
    );
}
