//! Sweeps for research: seeds of generated traces with mean ± 95 % CI, the `load`
//! multiplier, simulate flags as grid keys, `--resume`, and error bars in the plots.

use std::path::Path;

use muri::plot::{self, Metric};
use muri::sweep::{self, Sweep};

/// A sweep file in `dir` with `grid` as its only [[grid]] table, loaded with `out` under `dir`.
fn load(dir: &Path, grid: &str) -> anyhow::Result<Sweep> {
    let file = dir.join("s.toml");
    let text = format!(
        "out = \"{}\"\nbaseline = \"multi-resource-blossom-same-gpu\"\n[[grid]]\n{grid}\n",
        dir.join("out").display()
    );
    std::fs::write(&file, text).unwrap();
    sweep::load(&file, None)
}

const SEEDS_GRID: &str = r#"policies = ["shortest", "multi-resource-blossom-same-gpu"]
seeds = [1, 2, 3]
generate = { name = "gen", jobs = 60, interarrival = 600 }"#;

#[test]
fn mean_ci95_is_the_student_t_interval() {
    let (mean, half) = sweep::mean_ci95(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(mean, 3.0);
    // t(0.975, 4 dof) = 2.776445; s = sqrt(2.5); half = t · s / sqrt(5).
    let expected = 2.776_445 * 2.5f64.sqrt() / 5f64.sqrt();
    assert!((half.unwrap() - expected).abs() < 1e-5, "{half:?}");
    assert_eq!(sweep::mean_ci95(&[7.0]), (7.0, None));
}

#[test]
fn a_seeds_sweep_reports_mean_and_ci_over_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(dir.path(), SEEDS_GRID).unwrap();
    assert_eq!(s.runs.len(), 6);
    let dirs: Vec<String> = s
        .runs
        .iter()
        .map(|r| r.dir().display().to_string())
        .collect();
    assert!(dirs.contains(&"gen/shortest-s1".to_string()), "{dirs:?}");
    let results = sweep::run(&s, &|_| {}).unwrap();
    let groups = sweep::seed_groups(&results, &s.baseline);
    assert_eq!(groups.len(), 2);
    let srtf = groups.iter().find(|g| g.policy == "shortest").unwrap();
    assert_eq!(srtf.seeds, [1, 2, 3]);
    let jcts: Vec<f64> = results
        .iter()
        .filter(|r| r.spec.policy == "shortest")
        .map(|r| r.summary.avg_jct)
        .collect();
    assert_eq!(srtf.metrics[0], sweep::mean_ci95(&jcts));
    assert!(
        jcts.windows(2).any(|w| w[0] != w[1]),
        "the seeds give different traces"
    );
    let muri_s = groups.iter().find(|g| g.policy != "shortest").unwrap();
    assert_eq!(
        muri_s.ratios[0],
        Some((1.0, Some(0.0))),
        "the baseline against itself"
    );
    let md = std::fs::read_to_string(s.out.join("summary.md")).unwrap();
    assert!(
        md.contains("Mean ± 95 % confidence interval over seeds"),
        "{md}"
    );
    assert!(md.contains("| gen | SRTF |  | 3 | "), "{md}");
    let csv = std::fs::read_to_string(s.out.join("summary-seeds.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3);

    // The plot averages the per-seed ratios and gives them an interval.
    let runs = plot::discover_runs(&s.out).unwrap();
    let t = plot::normalised_table(&runs, Metric::AvgJct, &s.baseline);
    assert_eq!(t.keys, ["shortest", "multi-resource-blossom-same-gpu"]);
    let ratios: Vec<f64> = [1, 2, 3]
        .iter()
        .map(|seed| {
            let of = |p: &str| {
                results
                    .iter()
                    .find(|r| r.spec.policy == p && r.spec.seed == Some(*seed))
                    .unwrap()
                    .summary
                    .avg_jct
            };
            of("shortest") / of("multi-resource-blossom-same-gpu")
        })
        .collect();
    let (mean, half) = sweep::mean_ci95(&ratios);
    assert!((t.values[0][0].unwrap() - mean).abs() < 1e-12);
    assert!((t.errors[0][0].unwrap() - half.unwrap()).abs() < 1e-12);
    let report = plot::plot_dir(
        &s.out,
        &plot::PlotOptions {
            out: dir.path().join("plots"),
            formats: vec![plot::Format::Svg],
            baseline: None,
            timelines: Some(Vec::new()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn load_and_simulate_flags_are_grid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(
        dir.path(),
        r#"policies = ["multi-resource-blossom-same-gpu"]
seeds = [4]
generate = { jobs = 40 }
load = [1.0, 2.0]
multi_resource = [3, 4]
autopack = [false]"#,
    )
    .unwrap();
    let dirs: Vec<String> = s
        .runs
        .iter()
        .map(|r| r.dir().display().to_string())
        .collect();
    assert_eq!(
        dirs,
        [
            "generated/multi-resource-blossom-same-gpu-m3-noautopack-s4",
            "generated/multi-resource-blossom-same-gpu-m3-noautopack-l2-s4",
            "generated/multi-resource-blossom-same-gpu-noautopack-s4",
            "generated/multi-resource-blossom-same-gpu-noautopack-l2-s4",
        ]
    );
    let opts = s.runs[0].policy_options();
    assert_eq!((opts.multi_resource, opts.autopack), (3, false));
    let results = sweep::run(&s, &|_| {}).unwrap();
    assert_ne!(
        results[2].summary.avg_jct, results[3].summary.avg_jct,
        "twice the arrival rate changes the schedule"
    );
}

#[test]
fn load_divides_every_submit_time() {
    let cfg = muri::tracegen::TraceGenConfig {
        jobs: 10,
        ..Default::default()
    };
    let t = muri::tracegen::generate(&cfg, "t").unwrap();
    let doubled = sweep::scale_load(&t, 2.0);
    for (a, b) in t.jobs.iter().zip(&doubled.jobs) {
        assert_eq!(b.submit_time, a.submit_time / 2.0);
        assert_eq!(b.duration, a.duration);
    }
}

#[test]
fn bad_research_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (grid, key) in [
        (
            "policies = [\"shortest\"]\nseeds = [1]\nload = [0.0]",
            "load",
        ),
        (
            "policies = [\"shortest\"]\nseeds = [1]\nmulti_resource = [0]",
            "multi_resource",
        ),
        (
            "policies = [\"shortest\"]\ngenerate = { jobs = 5 }\ntraces = [\"x\"]",
            "generate",
        ),
        (
            "policies = [\"shortest\"]\nseeds = [1]\ngenerate = { jobs = 0 }",
            "generate.jobs",
        ),
        ("policies = [\"shortest\"]", "traces"),
    ] {
        let err = format!("{:#}", load(dir.path(), grid).unwrap_err());
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
}

#[test]
fn resume_skips_finished_runs_and_keeps_their_run_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = load(dir.path(), SEEDS_GRID).unwrap();
    let first = sweep::run(&s, &|_| {}).unwrap();
    let kept = s.out.join("gen/shortest-s1/job.csv");
    let redo = s.out.join("gen/shortest-s2/job.csv");
    let kept_time = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::remove_file(&redo).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.resume = true;
    let second = sweep::run(&s, &|_| {}).unwrap();
    assert!(redo.is_file(), "the missing run ran again");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        kept_time
    );
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            a.summary.avg_jct,
            b.summary.avg_jct,
            "{}",
            a.spec.dir().display()
        );
    }
    let skipped = |r: &[sweep::RunResult]| {
        r.iter()
            .find(|x| x.spec.dir() == Path::new("gen/shortest-s1"))
            .map(|x| (format!("{:.3}", x.wall_seconds), x.events))
            .unwrap()
    };
    assert_eq!(
        skipped(&first),
        skipped(&second),
        "run time from summary.csv"
    );
}
