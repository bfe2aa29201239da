//! The sweep files shipped in `experiments/` load, name only known policies and expand to
//! the grids BENCHMARKS.md and docs/evaluation.md quote.

use muri::sweep;
use std::path::Path;

fn runs(file: &str) -> Vec<sweep::RunSpec> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments")
        .join(file);
    sweep::load(&path, None)
        .unwrap_or_else(|e| panic!("{file}: {e:#}"))
        .runs
}

#[test]
fn shipped_sweep_files_expand_to_their_grids() {
    for (file, expected) in [
        ("fig9.toml", 24),
        ("speed.toml", 40),
        ("all.toml", 88),
        ("seeds.toml", 20),
    ] {
        assert_eq!(runs(file).len(), expected, "{file}");
    }
}

#[test]
fn speed_sweep_is_eight_traces_by_five_policies() {
    let runs = runs("speed.toml");
    let mut traces: Vec<&str> = runs.iter().map(|r| r.trace_name.as_str()).collect();
    let mut policies: Vec<&str> = runs.iter().map(|r| r.policy.as_str()).collect();
    traces.sort_unstable();
    traces.dedup();
    policies.sort_unstable();
    policies.dedup();
    assert_eq!(traces.len(), 8);
    assert_eq!(
        policies,
        [
            "dlas-gpu",
            "multi-resource-blossom-same-gpu",
            "multi-resource-blossom-same-gpu-unaware",
            "shortest",
            "shortest-gpu"
        ]
    );
}
