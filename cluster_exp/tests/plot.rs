//! `muri plot`: figures from a directory of runs in the sweep layout.

use std::path::{Path, PathBuf};

use muri::cluster::ClusterSpec;
use muri::output;
use muri::plot::{self, Format, Metric, PlotOptions};
use muri::policy::PolicyOptions;
use muri::simulate::simulate;
use muri::trace::Trace;

const POLICIES: [&str; 2] = ["shortest", "multi-resource-blossom-same-gpu"];

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `<root>/default/<policy>/{job,cluster}.csv` for the first 120 jobs of the default
/// trace, as `muri sweep` would.
fn write_runs(root: &Path) {
    let mut trace = Trace::from_path(&manifest().join("../trace-data/default.csv")).unwrap();
    trace.jobs.truncate(120);
    let spec = ClusterSpec::from_path(&manifest().join("../cluster_spec/n8g8.csv")).unwrap();
    for p in POLICIES {
        let r = simulate(&trace, spec, p, PolicyOptions::default(), None).unwrap();
        output::write_logs(&root.join("default").join(p), &r).unwrap();
    }
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 8_000,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
}

/// The trimmed contents of every `<text>` element.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

fn svg(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(s.contains("<svg"), "{}: not an SVG", path.display());
    assert!(s.contains("<text"), "{}: no text", path.display());
    s
}

#[test]
fn plots_a_sweep_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    write_runs(&runs_dir);
    let out = tmp.path().join("figs");
    let opts = PlotOptions {
        out: out.clone(),
        formats: vec![Format::Png, Format::Svg],
        baseline: None,
        timelines: None,
    };
    let report = plot::plot_dir(&runs_dir, &opts).unwrap();
    assert_eq!(report.baseline, "multi-resource-blossom-same-gpu");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // Normalised tables: the baseline's bars are exactly 1, the other policy's are its ratio.
    assert_eq!(report.tables.len(), 3);
    let runs = plot::discover_runs(&runs_dir).unwrap();
    assert_eq!(runs.len(), 2);
    for t in &report.tables {
        assert_eq!(t.traces, vec!["default".to_string()]);
        assert_eq!(t.keys, vec!["shortest", "multi-resource-blossom-same-gpu"]);
        let b = t.keys.iter().position(|k| *k == t.baseline).unwrap();
        assert_eq!(t.values[0][b], Some(1.0));
        let srtf = runs.iter().find(|r| r.key == "shortest").unwrap();
        let muri = runs.iter().find(|r| r.key == t.baseline).unwrap();
        let want = t.metric.value(&srtf.summary) / t.metric.value(&muri.summary);
        assert!((t.values[0][0].unwrap() - want).abs() < 1e-12);
    }

    for stem in [
        "bars-avg_jct",
        "bars-makespan",
        "bars-p99_jct",
        "cdf-default",
        "timeline-default-shortest",
        "timeline-default-multi-resource-blossom-same-gpu",
    ] {
        assert_png(&out.join(format!("{stem}.png")));
        svg(&out.join(format!("{stem}.svg")));
    }
    let has = |file: &str, want: &[&str]| {
        let texts = svg_texts(&svg(&out.join(file)));
        for w in want {
            assert!(
                texts.iter().any(|t| t == w),
                "{file}: no text {w:?} in {texts:?}"
            );
        }
    };
    has(
        "bars-avg_jct.svg",
        &[
            "Average JCT (× Muri-S)",
            "trace",
            "default",
            "SRTF",
            "Muri-S",
        ],
    );
    has(
        "cdf-default.svg",
        &[
            "JCT (hours, log scale)",
            "fraction of jobs",
            "SRTF",
            "Muri-S",
        ],
    );
    has(
        "timeline-default-multi-resource-blossom-same-gpu.svg",
        &[
            "time (hours)",
            "jobs",
            "GPU utilisation (%)",
            "running jobs",
            "pending jobs",
        ],
    );
    let csv = std::fs::read_to_string(out.join("normalised.csv")).unwrap();
    assert!(csv.starts_with("metric,trace,policy,value,normalised,baseline\n"));
    assert_eq!(csv.lines().count(), 1 + 3 * 2);

    // A chosen baseline and a chosen timeline, PNG only.
    let out2 = tmp.path().join("figs2");
    let opts = PlotOptions {
        out: out2.clone(),
        formats: vec![Format::Png],
        baseline: Some("SRTF".into()),
        timelines: Some(vec!["default/Muri-S".into()]),
    };
    let report = plot::plot_dir(&runs_dir, &opts).unwrap();
    assert_eq!(report.baseline, "shortest");
    let t = &report.tables[0];
    assert_eq!(t.metric, Metric::AvgJct);
    assert_eq!(t.values[0][0], Some(1.0));
    assert!(out2
        .join("timeline-default-multi-resource-blossom-same-gpu.png")
        .exists());
    assert!(!out2.join("timeline-default-shortest.png").exists());
    assert!(!out2.join("bars-avg_jct.svg").exists());
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = |out: &Path| PlotOptions {
        out: out.to_path_buf(),
        formats: vec![Format::Png],
        baseline: None,
        timelines: None,
    };
    let missing = tmp.path().join("nope");
    let e = plot::plot_dir(&missing, &opts(tmp.path())).unwrap_err();
    assert!(format!("{e:#}").contains("no such directory"), "{e:#}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = plot::plot_dir(&empty, &opts(tmp.path())).unwrap_err();
    assert!(format!("{e:#}").contains("no runs found"), "{e:#}");

    let bad = tmp.path().join("bad/t1/shortest");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("job.csv"),
        format!("{}\n1,2,x\n", output::JOB_HEADER),
    )
    .unwrap();
    let e = plot::plot_dir(&tmp.path().join("bad"), &opts(tmp.path())).unwrap_err();
    assert!(format!("{e:#}").contains("job.csv"), "{e:#}");

    let e = Format::parse_list("png,jpg").unwrap_err();
    assert!(e.to_string().contains("jpg"));
}

#[test]
fn run_keys_split_into_policy_and_flags() {
    assert_eq!(
        plot::split_key("multi-resource-blossom-same-gpu-unaware-p2"),
        (
            "multi-resource-blossom-same-gpu-unaware".into(),
            "p2".into()
        )
    );
    assert_eq!(
        plot::label_for_key("multi-resource-blossom-same-gpu-unaware-p2"),
        "Muri-L (p2)"
    );
    assert_eq!(
        plot::label_for_key("multi-resource-blossom-same-gpu"),
        "Muri-S"
    );
    assert_eq!(plot::label_for_key("antman"), "AntMan");
    let keys: Vec<String> = vec![
        "shortest".into(),
        "multi-resource-blossom-same-gpu-unaware".into(),
    ];
    assert_eq!(
        plot::choose_baseline(&keys, None).unwrap(),
        "multi-resource-blossom-same-gpu-unaware"
    );
    assert!(plot::choose_baseline(&keys, Some("themis")).is_err());
}
