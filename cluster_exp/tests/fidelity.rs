//! Fidelity against the reference simulator: `../shared/reference/goldens.csv`.
//!
//! `reference` rows are reruns of the shipped Python simulator; a faithful port reproduces
//! them to 1e-6. `paper` rows are the authors' published numbers (from a slightly different
//! revision of their code); they must be within 3 %, except the rows listed in
//! `KNOWN_PAPER_DIVERGENCES`, where the shipped reference itself differs from the paper.
//! Run in release mode (`cargo test --release`): full traces take a few seconds each.

mod common;

use common::*;
use muri::metrics::Summary;

fn run(trace: &str, policy: &str) -> Summary {
    summarize(trace, policy)
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

/// `MURI_FIDELITY_TRACES=trace3,trace3_pr` limits the reference rows to those traces (the
/// debug-assertion subset `make test` runs in the `ci` profile); unset, every row runs.
fn selected_traces() -> Option<Vec<String>> {
    let list = std::env::var("MURI_FIDELITY_TRACES").ok()?;
    Some(list.split(',').map(|t| t.trim().to_string()).collect())
}

fn reference_rows(filter: impl Fn(&Golden) -> bool) -> Vec<Golden> {
    let traces = selected_traces();
    goldens()
        .into_iter()
        .filter(|g| g.source == "reference" && g.policy != "themis" && filter(g))
        .filter(|g| traces.as_ref().is_none_or(|t| t.contains(&g.trace)))
        .collect()
}

/// The number of rows a full run must find; any subset must find at least one.
fn expected_rows(full: usize) -> usize {
    if selected_traces().is_some() {
        1
    } else {
        full
    }
}

#[test]
fn reference_rows_for_srtf_srsf_tiresias_antman_match_exactly() {
    let rows = reference_rows(|g| !g.policy.starts_with("multi-resource"));
    assert!(
        rows.len() >= expected_rows(30),
        "expected the golden rows, found {}",
        rows.len()
    );
    let bad: Vec<String> = rows.iter().flat_map(|g| check(g, 1e-6)).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn reference_rows_for_muri_match_exactly() {
    let rows = reference_rows(|g| g.policy.starts_with("multi-resource"));
    assert!(
        rows.len() >= expected_rows(18),
        "expected the golden rows, found {}",
        rows.len()
    );
    let bad: Vec<String> = rows.iter().flat_map(|g| check(g, 1e-6)).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Paper rows where some metric is more than 3 % away from the published number, with the
/// deviations we measure (avg JCT, makespan, 99th; relative). Our port matches the shipped
/// reference exactly (see the tests above), and the reference itself shows these gaps where
/// it has a row (trace3 Muri-S: avg −2.6 %, 99th −4.5 %): the published numbers came from
/// another revision of the authors' code. The test pins the gaps so a change shows up.
/// The reference's distance from the paper for every policy and trace (SRTF, SRSF,
/// Tiresias and AntMan: none; Muri-S and Muri-L: up to 8 % on Fig. 9/10, Muri-L 46 % on
/// job_type_1; Themis: up to 44 %) is tabulated in docs/evaluation.md.
const KNOWN_PAPER_DIVERGENCES: [(&str, &str, [f64; 3]); 6] = [
    (
        "trace1",
        "multi-resource-blossom-same-gpu",
        [-0.0781, 0.0049, -0.0635],
    ),
    (
        "trace1_pr",
        "multi-resource-blossom-same-gpu",
        [-0.0289, 0.0006, -0.0437],
    ),
    (
        "trace3",
        "multi-resource-blossom-same-gpu",
        [-0.0264, 0.0000, -0.0453],
    ),
    (
        "trace3_pr",
        "multi-resource-blossom-same-gpu",
        [0.0048, 0.0215, -0.0382],
    ),
    (
        "trace1",
        "multi-resource-blossom-same-gpu-unaware",
        [-0.0633, -0.0138, -0.0731],
    ),
    (
        "trace3_pr",
        "multi-resource-blossom-same-gpu-unaware",
        [-0.0077, -0.0119, -0.0324],
    ),
];

#[test]
fn paper_rows_within_three_percent_or_documented() {
    let rows: Vec<Golden> = goldens()
        .into_iter()
        .filter(|g| g.source == "paper")
        .collect();
    assert_eq!(rows.len(), 20);
    let mut bad = Vec::new();
    for g in &rows {
        let s = run(&g.trace, &g.policy);
        let dev = [
            (s.avg_jct - g.avg_jct) / g.avg_jct,
            (s.makespan - g.makespan) / g.makespan,
            (s.p99_jct - g.p99_jct) / g.p99_jct,
        ];
        let known = KNOWN_PAPER_DIVERGENCES
            .iter()
            .find(|(t, p, _)| *t == g.trace && *p == g.policy);
        match known {
            None if dev.iter().all(|d| d.abs() <= 0.03) => {}
            None => bad.push(format!(
                "{} {}: deviations {dev:?} exceed 3 %",
                g.trace, g.policy
            )),
            Some((_, _, recorded)) => {
                for (d, r) in dev.iter().zip(recorded) {
                    if (d - r).abs() > 0.005 {
                        bad.push(format!(
                            "{} {}: deviation {d:.4} differs from the recorded {r}",
                            g.trace, g.policy
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn average_jct_within_three_percent_of_the_paper_except_full_trace1_muri() {
    // The headline check, on the metric the paper leads with.
    for g in goldens().iter().filter(|g| g.source == "paper") {
        if g.trace == "trace1" && g.policy.starts_with("multi-resource") {
            continue;
        }
        let s = run(&g.trace, &g.policy);
        let e = rel_err(s.avg_jct, g.avg_jct);
        assert!(e <= 0.03, "{} {}: avg JCT off by {e:.4}", g.trace, g.policy);
    }
}
