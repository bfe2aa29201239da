//! `muri plot --paper`: Figures 9–13 of the Muri paper, one file per figure, from the output
//! folder of `muri sweep experiments/all.toml`.
//!
//! The layout follows the reference's plotting scripts (`simulator/draw_fig9-10.py`,
//! `draw_fig11-13.py`): grouped bars over trace IDs (`1`, `1'`, … for `trace1`, `trace1_pr`,
//! …), each policy normalised to Muri's on the same trace, a legend above each panel and no
//! title (the paper's captions carry it). Sub-figures (a), (b), (c) sit side by side in one
//! file:
//!
//! | figure | panels | traces | bars (baseline last) |
//! |---|---|---|---|
//! | 9 | avg JCT, makespan, p99 JCT | the 8 traces | SRTF, SRSF, Muri-S |
//! | 10 | avg JCT, makespan, p99 JCT | the 8 traces | Tiresias, AntMan, Themis, Muri-L |
//! | 11 | avg JCT, makespan | trace1–4 | Muri-L, w/ worst ordering, w/o Blossom (baseline first) |
//! | 12 | avg JCT, makespan | trace1_pr–4_pr | AntMan, Muri-L-2, Muri-L-3, Muri-L-4 |
//! | 13 | avg JCT speedup | job_type_1–4 | Muri-S over SRTF; Muri-L over Tiresias |

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{
    normalised_table_of, register_font, render, replicate_key, style, BarLook, Figure, Metric,
    NormTable, PlotOptions, PlotReport, Run,
};
use crate::policy::PolicyKind;

/// One bar series of a paper figure: the run keys that may hold it (the first present one is
/// used) and its legend label.
struct Series {
    keys: Vec<String>,
    label: &'static str,
}

fn series(kind: PolicyKind, label: &'static str) -> Series {
    Series {
        keys: vec![kind.name().to_string()],
        label,
    }
}

/// Muri-L with `--packing_num n`; 4 is the default, so a sweep may name that run either way.
fn muri_l_packing(n: u32, label: &'static str) -> Series {
    let base = PolicyKind::MuriL.name();
    let mut keys = vec![format!("{base}-p{n}")];
    if n == 4 {
        keys.push(base.to_string());
    }
    Series { keys, label }
}

/// One sub-figure: a metric over the figure's traces, bars normalised to `baseline`.
struct Panel {
    metric: Metric,
    y_desc: &'static str,
    series: Vec<Series>,
    /// Index into `series` of the bar everything is divided by.
    baseline: usize,
    /// Draw only these series (the baseline may be left out, as in Figure 13).
    shown: Vec<usize>,
    /// Style index of the first shown series (Figure 13's two panels use two colours).
    first_style: usize,
}

/// A paper figure: its file stem, x axis and panels.
struct PaperFigure {
    stem: &'static str,
    traces: Vec<&'static str>,
    x_desc: &'static str,
    panels: Vec<Panel>,
}

const EIGHT_TRACES: [&str; 8] = [
    "trace1",
    "trace1_pr",
    "trace2",
    "trace2_pr",
    "trace3",
    "trace3_pr",
    "trace4",
    "trace4_pr",
];

fn normalised_panels(
    metrics: &[(Metric, &'static str)],
    make: impl Fn() -> Vec<Series>,
    baseline: usize,
) -> Vec<Panel> {
    metrics
        .iter()
        .map(|&(metric, y_desc)| {
            let series = make();
            let shown = (0..series.len()).collect();
            Panel {
                metric,
                y_desc,
                series,
                baseline,
                shown,
                first_style: 0,
            }
        })
        .collect()
}

const THREE_METRICS: [(Metric, &str); 3] = [
    (Metric::AvgJct, "Normalized average JCT"),
    (Metric::Makespan, "Normalized makespan"),
    (Metric::P99Jct, "Normalized 99th-%ile JCT"),
];

/// Figures 9–13 as the paper draws them.
fn paper_figures() -> Vec<PaperFigure> {
    use PolicyKind as K;
    let fig9 = || {
        vec![
            series(K::Srtf, "SRTF"),
            series(K::Srsf, "SRSF"),
            series(K::MuriS, "Muri-S"),
        ]
    };
    let fig10 = || {
        vec![
            series(K::Tiresias, "Tiresias"),
            series(K::AntMan, "AntMan"),
            series(K::Themis, "Themis"),
            series(K::MuriL, "Muri-L"),
        ]
    };
    let fig11 = || {
        vec![
            series(K::MuriL, "Muri-L"),
            series(K::MuriLWorstOrdering, "Muri-L w/ worst ordering"),
            series(K::MuriLNoBlossom, "Muri-L w/o Blossom"),
        ]
    };
    let fig12 = || {
        vec![
            series(K::AntMan, "AntMan"),
            muri_l_packing(2, "Muri-L-2"),
            muri_l_packing(3, "Muri-L-3"),
            muri_l_packing(4, "Muri-L-4"),
        ]
    };
    let speedup = |other: PolicyKind, muri: PolicyKind, label, first_style| Panel {
        metric: Metric::AvgJct,
        y_desc: "Speedup of average JCT",
        series: vec![series(other, label), series(muri, "")],
        baseline: 1,
        shown: vec![0],
        first_style,
    };
    vec![
        PaperFigure {
            stem: "fig9",
            traces: EIGHT_TRACES.to_vec(),
            x_desc: "Trace ID",
            panels: normalised_panels(&THREE_METRICS, fig9, 2),
        },
        PaperFigure {
            stem: "fig10",
            traces: EIGHT_TRACES.to_vec(),
            x_desc: "Trace ID",
            panels: normalised_panels(&THREE_METRICS, fig10, 3),
        },
        PaperFigure {
            stem: "fig11",
            traces: vec!["trace1", "trace2", "trace3", "trace4"],
            x_desc: "Trace ID",
            panels: normalised_panels(&THREE_METRICS[..2], fig11, 0),
        },
        PaperFigure {
            stem: "fig12",
            traces: vec!["trace1_pr", "trace2_pr", "trace3_pr", "trace4_pr"],
            x_desc: "Trace ID",
            panels: normalised_panels(&THREE_METRICS[..2], fig12, 3),
        },
        PaperFigure {
            stem: "fig13",
            traces: vec!["job_type_1", "job_type_2", "job_type_3", "job_type_4"],
            x_desc: "Workload (job type)",
            panels: vec![
                speedup(K::Srtf, K::MuriS, "Speedup of Muri-S w.r.t. SRTF", 0),
                speedup(
                    K::Tiresias,
                    K::MuriL,
                    "Speedup of Muri-L w.r.t. Tiresias",
                    1,
                ),
            ],
        },
    ]
}

/// The paper's trace ID: `1` for trace1, `1'` for trace1_pr, `2` for job_type_2.
pub fn trace_id(trace: &str) -> String {
    let core = trace
        .strip_prefix("trace")
        .or_else(|| trace.strip_prefix("job_type_"))
        .unwrap_or(trace);
    match core.strip_suffix("_pr") {
        Some(n) => format!("{n}'"),
        None => core.to_string(),
    }
}

/// A panel's table and look, from the runs present; `None` when its baseline or every shown
/// series is missing on every trace. Missing traces and series go into `warnings`.
fn build_panel(
    runs: &[Run],
    fig: &PaperFigure,
    panel: &Panel,
    warnings: &mut Vec<String>,
) -> Option<(NormTable, BarLook)> {
    let has = |trace: &str, key: &str| {
        runs.iter()
            .any(|r| r.trace == trace && replicate_key(&r.key).0 == key)
    };
    let present_key = |s: &Series| -> Option<String> {
        s.keys
            .iter()
            .find(|k| fig.traces.iter().any(|t| has(t, k)))
            .cloned()
    };
    let baseline = present_key(&panel.series[panel.baseline])?;
    let traces: Vec<String> = fig
        .traces
        .iter()
        .filter(|t| has(t, &baseline))
        .map(|t| t.to_string())
        .collect();
    for t in fig.traces.iter().filter(|t| !has(t, &baseline)) {
        warnings.push(format!(
            "{}: no {baseline} run on {t}, so {t} is left out",
            fig.stem
        ));
    }
    let mut keys = Vec::new();
    let mut labels = Vec::new();
    let mut styles = Vec::new();
    for (n, &i) in panel.shown.iter().enumerate() {
        let s = &panel.series[i];
        match present_key(s) {
            Some(k) => {
                keys.push(k);
                labels.push(s.label.to_string());
                styles.push(style::series(panel.first_style + n));
            }
            None => warnings.push(format!(
                "{}: no {} run ({}), so its bars are left out",
                fig.stem,
                s.label,
                s.keys.join(" or ")
            )),
        }
    }
    if keys.is_empty() || traces.is_empty() {
        return None;
    }
    let table = normalised_table_of(runs, panel.metric, &baseline, traces, keys);
    let look = BarLook {
        title: None,
        x_desc: fig.x_desc.to_string(),
        y_desc: panel.y_desc.to_string(),
        trace_labels: table.traces.iter().map(|t| trace_id(t)).collect(),
        key_labels: labels,
        styles,
        values_on_bars: false,
    };
    Some((table, look))
}

/// Width of one panel and height of every paper figure, in pixels (points in the PDF).
const PANEL_SIZE: (u32, u32) = (760, 400);

/// Draws Figures 9–13 from `runs` (a sweep of `experiments/all.toml`) into `opts.out`, one file
/// per figure and format, plus `paper.csv` with every bar's value. A figure whose runs are
/// all missing is skipped with a warning; having none of the five is an error.
pub fn plot_paper(runs: &[Run], opts: &PlotOptions) -> anyhow::Result<PlotReport> {
    register_font();
    let mut warnings = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut tables = Vec::new();
    let mut csv = String::from("figure,metric,trace,policy,value,normalised,baseline\n");
    let mut drawn = Vec::new();
    for fig in paper_figures() {
        let panels: Vec<(NormTable, BarLook)> = fig
            .panels
            .iter()
            .filter_map(|p| build_panel(runs, &fig, p, &mut warnings))
            .collect();
        if panels.len() < fig.panels.len() {
            warnings.push(format!(
                "{}: not drawn, the runs of {} of its {} panels are missing",
                fig.stem,
                fig.panels.len() - panels.len(),
                fig.panels.len()
            ));
            continue;
        }
        if drawn.is_empty() {
            std::fs::create_dir_all(&opts.out)
                .with_context(|| format!("creating {}", opts.out.display()))?;
        }
        let size = (PANEL_SIZE.0 * panels.len() as u32, PANEL_SIZE.1);
        for &f in &opts.formats {
            let path = opts.out.join(format!("{}.{}", fig.stem, f.ext()));
            render(&path, f, size, Figure::Panels(&panels))?;
            files.push(path);
        }
        for (t, _) in &panels {
            for line in super::tables_csv(std::slice::from_ref(t)).lines().skip(1) {
                let _ = writeln!(csv, "{},{line}", fig.stem);
            }
        }
        tables.extend(panels.into_iter().map(|(t, _)| t));
        drawn.push(fig.stem);
    }
    if drawn.is_empty() {
        bail!(
            "--paper: none of Figures 9-13 could be drawn (expected the output of \
             `muri sweep experiments/all.toml`): {}",
            warnings.join("; ")
        );
    }
    let csv_path = opts.out.join("paper.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;
    files.push(csv_path);
    Ok(PlotReport {
        files,
        tables,
        baseline: PolicyKind::MuriL.name().to_string(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_follow_the_paper() {
        assert_eq!(trace_id("trace1"), "1");
        assert_eq!(trace_id("trace3_pr"), "3'");
        assert_eq!(trace_id("job_type_4"), "4");
        assert_eq!(trace_id("mine"), "mine");
    }
}
