//! Fidelity against the reference simulator: `../shared/reference/goldens.csv`.
//!
//! `reference` rows are reruns of the shipped Python simulator; a faithful port reproduces
//! them to 1e-6. `paper` rows are the authors' published numbers (from a slightly different
//! revision of their code); they must be within 3 %, except the rows listed in
//! `KNOWN_PAPER_DIVERGENCES`, where the shipped reference itself differs from the paper.
//! Run in release mode (`cargo test --release`): full traces take a few seconds each.

mod common;

use common::*;
use muri::cluster::ClusterSpec;
use muri::metrics::Summary;
use muri::policy::PolicyOptions;
use muri::simulate::simulate;
use muri::trace::Trace;

fn run(trace: &str, policy: &str) -> Summary {
    let t = Trace::from_path(&trace_path(trace)).unwrap();
    let r = simulate(&t, ClusterSpec::N8G8, policy, PolicyOptions::default(), None).unwrap();
    assert_eq!(r.unfinished, 0, "{trace} {policy}: every job must finish");
    Summary::from_records(&r.jobs).unwrap()
}

fn check(g: &Golden, tol: f64) -> Vec<String> {
    let s = run(&g.trace, &g.policy);
    let mut bad = Vec::new();
    for (what, got, want) in [
        ("avg JCT", s.avg_jct, g.avg_jct),
        ("makespan", s.makespan, g.makespan),
        ("99th JCT", s.p99_jct, g.p99_jct),
    ] {
        let e = rel_err(got, want);
        if e > tol {
            bad.push(format!(
                "{} {} {}: got {got:.6}, want {want:.6} (rel err {e:.2e})",
                g.trace, g.policy, what
            ));
        }
    }
    bad
}

fn reference_rows(filter: impl Fn(&Golden) -> bool) -> Vec<Golden> {
    goldens()
        .into_iter()
        .filter(|g| g.source == "reference" && g.policy != "themis" && filter(g))
        .collect()
}

#[test]
fn reference_rows_for_srtf_srsf_tiresias_match_exactly() {
    let rows = reference_rows(|g| !g.policy.starts_with("multi-resource"));
    assert!(rows.len() >= 30, "expected the golden rows, found {}", rows.len());
    let bad: Vec<String> = rows.iter().flat_map(|g| check(g, 1e-6)).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn reference_rows_for_muri_match_exactly() {
    let rows = reference_rows(|g| g.policy.starts_with("multi-resource"));
    assert!(rows.len() >= 18, "expected the golden rows, found {}", rows.len());
    let bad: Vec<String> = rows.iter().flat_map(|g| check(g, 1e-6)).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Rows where the shipped reference code (which we match exactly) is itself more than 3 %
/// away from the published number, with the divergence we measured (avg JCT, relative).
const KNOWN_PAPER_DIVERGENCES: [(&str, &str, f64); 2] = [
    ("trace1", "multi-resource-blossom-same-gpu", -0.078),
    ("trace1", "multi-resource-blossom-same-gpu-unaware", -0.063),
];

#[test]
fn paper_rows_within_three_percent() {
    let rows: Vec<Golden> = goldens().into_iter().filter(|g| g.source == "paper").collect();
    assert_eq!(rows.len(), 20);
    let mut bad = Vec::new();
    for g in &rows {
        let known = KNOWN_PAPER_DIVERGENCES
            .iter()
            .find(|(t, p, _)| *t == g.trace && *p == g.policy);
        match known {
            None => bad.extend(check(g, 0.03)),
            Some((_, _, dev)) => {
                let s = run(&g.trace, &g.policy);
                let got = (s.avg_jct - g.avg_jct) / g.avg_jct;
                assert!(
                    (got - dev).abs() < 0.01,
                    "{} {}: divergence from the paper changed: {got:.4} (recorded {dev})",
                    g.trace,
                    g.policy
                );
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
