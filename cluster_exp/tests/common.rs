//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use muri::cluster::ClusterSpec;
use muri::metrics::Summary;
use muri::policy::PolicyOptions;
use muri::simulate::simulate;
use muri::trace::Trace;

/// `../shared` next to the repository (CI has it; the tests must not be skipped without it).
pub fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(
        p.join("reference/goldens.csv").exists(),
        "../shared is missing: the fidelity tests need ../shared/traces and ../shared/reference next to the repository"
    );
    p
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a shared trace by name: a subset if one exists, else a full trace.
pub fn trace_path(name: &str) -> PathBuf {
    let sub = shared().join("traces/subsets").join(format!("{name}.csv"));
    if sub.exists() {
        sub
    } else {
        shared().join("traces/muri-sim").join(format!("{name}.csv"))
    }
}

pub fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// One row of `goldens.csv` (the file has CRLF line ends).
#[derive(Debug, Clone)]
pub struct Golden {
    pub source: String,
    pub trace: String,
    pub policy: String,
    pub avg_jct: f64,
    pub makespan: f64,
    pub p99_jct: f64,
}

pub fn goldens() -> Vec<Golden> {
    let text = std::fs::read_to_string(shared().join("reference/goldens.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Golden {
                source: f[0].into(),
                trace: f[1].into(),
                policy: f[3].into(),
                avg_jct: f[4].parse().unwrap(),
                makespan: f[5].parse().unwrap(),
                p99_jct: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// Simulates a shared trace under `policy` on the paper's n8g8 cluster with default flags,
/// checks that every job finished exactly once, and returns the metrics.
pub fn summarize(trace: &str, policy: &str) -> Summary {
    let t = Trace::from_path(&trace_path(trace)).unwrap();
    let r = simulate(
        &t,
        ClusterSpec::N8G8,
        policy,
        PolicyOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(r.unfinished, 0, "{trace} {policy}: every job must finish");
    assert_eq!(
        r.jobs.len(),
        t.jobs.len(),
        "{trace} {policy}: one row per job"
    );
    Summary::from_records(&r.jobs).unwrap()
}
