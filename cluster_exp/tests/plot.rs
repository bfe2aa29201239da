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
        ..Default::default()
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
        ..Default::default()
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
        ..Default::default()
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

/// Writes the first `jobs` jobs of the default trace under each policy into
/// `<root>/<trace>/<key>/` for every trace, as `muri sweep` would (`key` = policy plus flags).
fn write_sweep(root: &Path, traces: &[&str], runs: &[(&str, &str, usize)], jobs: usize) {
    let mut trace = Trace::from_path(&manifest().join("../trace-data/default.csv")).unwrap();
    trace.jobs.truncate(jobs);
    let spec = ClusterSpec::from_path(&manifest().join("../cluster_spec/n8g8.csv")).unwrap();
    for &(key, policy, packing_num) in runs {
        let opts = PolicyOptions {
            packing_num,
            ..PolicyOptions::default()
        };
        let r = simulate(&trace, spec, policy, opts, None).unwrap();
        for t in traces {
            output::write_logs(&root.join(t).join(key), &r).unwrap();
        }
    }
}

/// Where each of `wanted` first occurs among the SVG's texts (panics when one is missing).
fn text_positions(svg_file: &Path, wanted: &[&str]) -> Vec<usize> {
    let texts = svg_texts(&svg(svg_file));
    wanted
        .iter()
        .map(|w| {
            texts
                .iter()
                .position(|t| t == w)
                .unwrap_or_else(|| panic!("{}: no text {w:?} in {texts:?}", svg_file.display()))
        })
        .collect()
}

/// Checks a PDF's structure: header, trailer, and every cross-reference entry pointing at the
/// object it names; returns the file's bytes.
fn assert_valid_pdf(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"%PDF-1."),
        "{}: no PDF header",
        path.display()
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.trim_end().ends_with("%%EOF"),
        "{}: no %%EOF",
        path.display()
    );
    let start: usize = text
        .rsplit_once("startxref")
        .and_then(|(_, tail)| tail.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: no startxref", path.display()));
    let xref = &bytes[start..];
    assert!(
        xref.starts_with(b"xref"),
        "{}: startxref points elsewhere",
        path.display()
    );
    let xref = String::from_utf8_lossy(xref);
    let mut lines = xref.lines().skip(1);
    let header: Vec<usize> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (first, count) = (header[0], header[1]);
    assert!(count > 5, "{}: only {count} objects", path.display());
    for (i, line) in lines.take(count).enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[2] != "n" {
            continue;
        }
        let offset: usize = f[0].parse().unwrap();
        let want = format!("{} {} obj", first + i, f[1].parse::<u32>().unwrap());
        assert!(
            bytes[offset..].starts_with(want.as_bytes()),
            "{}: xref entry {} does not point at `{want}`",
            path.display(),
            first + i
        );
    }
    bytes
}

#[test]
fn policies_and_traces_are_drawn_in_the_order_given() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    let runs = [
        ("shortest", "shortest", 4),
        ("dlas-gpu", "dlas-gpu", 4),
        (
            "multi-resource-blossom-same-gpu",
            "multi-resource-blossom-same-gpu",
            4,
        ),
    ];
    write_sweep(&runs_dir, &["alpha", "beta", "gamma"], &runs, 60);
    let out = tmp.path().join("figs");
    let opts = PlotOptions {
        out: out.clone(),
        formats: vec![Format::Svg, Format::Pdf],
        timelines: Some(Vec::new()),
        policies: Some(vec!["Muri-S".into(), "shortest".into()]),
        traces: Some(vec!["gamma".into(), "ALPHA".into()]),
        ..Default::default()
    };
    let report = plot::plot_dir(&runs_dir, &opts).unwrap();
    for t in &report.tables {
        assert_eq!(t.traces, ["gamma", "alpha"]);
        assert_eq!(t.keys, ["multi-resource-blossom-same-gpu", "shortest"]);
    }
    // Legend and group labels appear in the SVG in the order given; Tiresias and beta do not.
    let bars = out.join("bars-avg_jct.svg");
    let pos = text_positions(&bars, &["Muri-S", "SRTF"]);
    assert!(pos[0] < pos[1], "legend order {pos:?}");
    let pos = text_positions(&bars, &["gamma", "alpha"]);
    assert!(pos[0] < pos[1], "trace order {pos:?}");
    let texts = svg_texts(&svg(&bars));
    assert!(
        !texts.iter().any(|t| t == "Tiresias" || t == "beta"),
        "{texts:?}"
    );
    // No title by default; `title: true` adds one.
    assert!(
        !texts.iter().any(|t| t.contains("normalised to")),
        "{texts:?}"
    );
    assert!(out.join("cdf-gamma.pdf").is_file());
    assert!(!out.join("cdf-beta.svg").exists());
    let pos = text_positions(&out.join("cdf-alpha.svg"), &["Muri-S", "SRTF"]);
    assert!(pos[0] < pos[1]);

    let titled = PlotOptions {
        out: tmp.path().join("titled"),
        formats: vec![Format::Svg],
        title: true,
        ..opts
    };
    plot::plot_dir(&runs_dir, &titled).unwrap();
    let texts = svg_texts(&svg(&titled.out.join("bars-avg_jct.svg")));
    assert!(
        texts
            .iter()
            .any(|t| t == "Average JCT, normalised to Muri-S"),
        "{texts:?}"
    );
}

#[test]
fn pdf_output_is_valid_and_embeds_the_font() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    write_runs(&runs_dir);
    let out = tmp.path().join("figs");
    let opts = PlotOptions {
        out: out.clone(),
        formats: vec![Format::Pdf],
        ..Default::default()
    };
    plot::plot_dir(&runs_dir, &opts).unwrap();
    for stem in ["bars-avg_jct", "cdf-default", "timeline-default-shortest"] {
        let bytes = assert_valid_pdf(&out.join(format!("{stem}.pdf")));
        let text = String::from_utf8_lossy(&bytes);
        // Text stays text, set in a subset of the shipped DejaVu Sans (not a system font).
        assert!(
            text.contains("/FontFile2"),
            "{stem}: no embedded TrueType font"
        );
        assert!(
            text.contains("DejaVuSans"),
            "{stem}: font is not DejaVu Sans"
        );
        assert!(!out.join(format!("{stem}.png")).exists());
    }
    assert_eq!(
        Format::parse_list("PNG, pdf").unwrap(),
        [Format::Png, Format::Pdf]
    );
}

#[test]
fn unknown_policies_and_traces_are_refused_with_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("runs");
    write_runs(&runs_dir);
    let attempt = |policies: Option<&str>, traces: Option<&str>| {
        let opts = PlotOptions {
            out: tmp.path().join("figs"),
            policies: policies.map(|p| p.split(',').map(String::from).collect()),
            traces: traces.map(|t| t.split(',').map(String::from).collect()),
            ..Default::default()
        };
        format!("{:#}", plot::plot_dir(&runs_dir, &opts).unwrap_err())
    };
    let e = attempt(Some("SRTF,shortset"), None);
    assert!(e.contains("unknown policy `shortset`"), "{e}");
    assert!(e.contains("did you mean `shortest`?"), "{e}");
    let e = attempt(Some("themis"), None);
    assert!(e.contains("no Themis runs"), "{e}");
    assert!(e.contains("have: SRTF, Muri-S"), "{e}");
    let e = attempt(None, Some("defualt"));
    assert!(e.contains("no trace `defualt`"), "{e}");
    assert!(e.contains("did you mean `default`?"), "{e}");
    // Nothing was drawn before the error.
    assert!(!tmp.path().join("figs").exists());
}

#[test]
fn paper_mode_draws_figures_9_to_13() {
    let tmp = tempfile::tempdir().unwrap();
    let runs_dir = tmp.path().join("all");
    let muri_l = "multi-resource-blossom-same-gpu-unaware";
    let eight = [
        "trace1",
        "trace1_pr",
        "trace2",
        "trace2_pr",
        "trace3",
        "trace3_pr",
        "trace4",
        "trace4_pr",
    ];
    let runs = [
        ("shortest", "shortest", 4),
        ("shortest-gpu", "shortest-gpu", 4),
        (
            "multi-resource-blossom-same-gpu",
            "multi-resource-blossom-same-gpu",
            4,
        ),
        ("dlas-gpu", "dlas-gpu", 4),
        ("antman", "antman", 4),
        ("themis", "themis", 4),
        (muri_l, muri_l, 4),
        (
            "multi-resource-blossom-same-gpu-unaware-worstordering",
            "multi-resource-blossom-same-gpu-unaware-worstordering",
            4,
        ),
        (
            "multi-resource-gpu-unaware",
            "multi-resource-gpu-unaware",
            4,
        ),
        ("multi-resource-blossom-same-gpu-unaware-p2", muri_l, 2),
        ("multi-resource-blossom-same-gpu-unaware-p3", muri_l, 3),
    ];
    write_sweep(&runs_dir, &eight, &runs, 40);
    let job_types = ["job_type_1", "job_type_2", "job_type_3", "job_type_4"];
    write_sweep(
        &runs_dir,
        &job_types,
        &[runs[0], runs[2], runs[3], runs[6]],
        40,
    );

    let out = tmp.path().join("paper");
    let opts = PlotOptions {
        out: out.clone(),
        formats: vec![Format::Png, Format::Svg, Format::Pdf],
        ..Default::default()
    };
    let runs = plot::discover_runs(&runs_dir).unwrap();
    let report = plot::paper::plot_paper(&runs, &opts).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    for fig in ["fig9", "fig10", "fig11", "fig12", "fig13"] {
        assert_png(&out.join(format!("{fig}.png")));
        assert_valid_pdf(&out.join(format!("{fig}.pdf")));
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5 * 3 + 1, "{names:?}");

    // Figure 9: three panels over the 8 trace IDs, legends in the paper's order.
    let fig9 = out.join("fig9.svg");
    // (The SVG escapes the prime of `1'`.)
    text_positions(
        &fig9,
        &["1&apos;", "4&apos;", "Trace ID", "Normalized 99th-%ile JCT"],
    );
    let pos = text_positions(&fig9, &["SRTF", "SRSF", "Muri-S"]);
    assert!(pos[0] < pos[1] && pos[1] < pos[2], "{pos:?}");
    text_positions(
        &out.join("fig12.svg"),
        &["AntMan", "Muri-L-2", "Muri-L-3", "Muri-L-4"],
    );
    text_positions(
        &out.join("fig13.svg"),
        &[
            "Speedup of Muri-S w.r.t. SRTF",
            "Speedup of Muri-L w.r.t. Tiresias",
        ],
    );
    // 3 + 3 + 2 + 2 + 2 panels; Figure 12's Muri-L-4 is the plain Muri-L run (packing 4).
    assert_eq!(report.tables.len(), 12);
    let fig12 = &report.tables[8];
    assert_eq!(fig12.baseline, muri_l);
    assert_eq!(
        fig12.traces,
        ["trace1_pr", "trace2_pr", "trace3_pr", "trace4_pr"]
    );
    assert_eq!(fig12.values[0][3], Some(1.0));
    // Figure 13 (a): SRTF's average JCT over Muri-S's, one bar per job type.
    let fig13a = &report.tables[10];
    assert_eq!(fig13a.keys, ["shortest"]);
    assert_eq!(fig13a.baseline, "multi-resource-blossom-same-gpu");
    let srtf = runs
        .iter()
        .find(|r| r.trace == "job_type_1" && r.key == "shortest");
    let muri_s = runs
        .iter()
        .find(|r| r.trace == "job_type_1" && r.key == "multi-resource-blossom-same-gpu");
    let want = srtf.unwrap().summary.avg_jct / muri_s.unwrap().summary.avg_jct;
    assert_eq!(fig13a.values[0][0], Some(want));
    let csv = std::fs::read_to_string(out.join("paper.csv")).unwrap();
    assert!(csv.starts_with("figure,metric,trace,policy,value,normalised,baseline\n"));
    assert_eq!(csv.lines().filter(|l| l.starts_with("fig13,")).count(), 8);

    // A folder with none of the paper's runs is refused.
    let other = tmp.path().join("other");
    write_sweep(&other, &["mine"], &[("shortest", "shortest", 4)], 20);
    let e = plot::paper::plot_paper(&plot::discover_runs(&other).unwrap(), &opts).unwrap_err();
    assert!(format!("{e:#}").contains("none of Figures 9-13"), "{e:#}");
}
