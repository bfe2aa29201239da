//! Figures from run logs (`muri plot`): paper-style normalised bar charts, JCT CDFs and
//! cluster timelines, drawn with plotters into PNG and SVG, and into PDF through svg2pdf
//! ([`svg_to_pdf`]); `--paper` lays out the paper's Figures 9–13 ([`paper`]).
//!
//! Everything is computed from the logs on disk: each run's `job.csv` (recomputed with
//! [`Summary`]) and `cluster.csv`. A directory of runs is either a sweep
//! (`DIR/<trace>/<policy>[-flags]/job.csv`) or one `muri simulate --log_path DIR` with several
//! policies (`DIR/<policy>/job.csv`, the trace is then named after `DIR`).
//!
//! Text uses DejaVu Sans, embedded in the binary and registered with plotters once, so no
//! system font library is needed. Series are told apart by colour (Okabe–Ito) and by hatch or
//! dash ([`style`]), so the figures survive greyscale printing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::engine::{ClusterRecord, JobRecord};
use crate::metrics::Summary;
use crate::output;
use crate::policy::{self, PolicyKind};

pub mod paper;
mod pdf;
pub mod style;

pub use pdf::svg_to_pdf;
use style::SeriesStyle;

/// DejaVu Sans (licence: assets/fonts/LICENSE-DejaVu.txt).
pub(crate) static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
static FONT_INIT: Once = Once::new();

/// Registers the embedded font as plotters' "sans-serif" (idempotent).
pub fn register_font() {
    FONT_INIT.call_once(|| {
        // The font is a valid TTF compiled into the binary; failure would be a build error.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            eprintln!("warning: the embedded DejaVu Sans font could not be registered");
        }
    });
}

/// Policies tried in order when no baseline is given: Muri-S, then Muri-L.
pub const DEFAULT_BASELINES: [&str; 2] = [PolicyKind::MuriS.name(), PolicyKind::MuriL.name()];

// plotters draws text at size/1.24 px (the SVG's font-size), so 19 here is 15.3 px.
const TITLE_PX: u32 = 28;
const LABEL_PX: u32 = 23;
const TICK_PX: u32 = 19;
const LEGEND_PX: u32 = 19;
const VALUE_PX: u32 = 18;
const MAX_LINE_POINTS: usize = 1500;

/// Output image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
    /// Drawn as SVG, converted by svg2pdf.
    Pdf,
}

impl Format {
    pub fn ext(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
            Format::Pdf => "pdf",
        }
    }

    /// Parses `png,svg,pdf`.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Format>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f = match part.to_ascii_lowercase().as_str() {
                "png" => Format::Png,
                "svg" => Format::Svg,
                "pdf" => Format::Pdf,
                other => bail!("--format: unknown format `{other}` (expected png, svg, pdf)"),
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            bail!("--format is empty (expected one or more of png, svg, pdf)");
        }
        Ok(out)
    }
}

/// One run found on disk.
#[derive(Debug, Clone)]
pub struct Run {
    pub trace: String,
    /// The run directory's leaf: `<policy>[-<flags>]`.
    pub key: String,
    /// The policy name (the key without flags).
    pub policy: String,
    /// Flags tag (`p2`, `n4g8-p3`), empty for defaults.
    pub flags: String,
    pub dir: PathBuf,
    pub jobs: Vec<JobRecord>,
    pub summary: Summary,
}

impl Run {
    /// Legend label: the policy's paper name plus the flags, e.g. `Muri-L (p2)`.
    pub fn label(&self) -> String {
        label_for_key(&self.key)
    }
}

/// Splits a run leaf into (policy, flags) by the longest known policy name it starts with.
pub fn split_key(key: &str) -> (String, String) {
    let best = PolicyKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| key == *n || key.starts_with(&format!("{n}-")))
        .max_by_key(|n| n.len());
    match best {
        Some(n) if n.len() < key.len() => (n.to_string(), key[n.len() + 1..].to_string()),
        Some(n) => (n.to_string(), String::new()),
        None => (key.to_string(), String::new()),
    }
}

/// `Muri-L (p2)` for `multi-resource-blossom-same-gpu-unaware-p2`.
pub fn label_for_key(key: &str) -> String {
    let (p, flags) = split_key(key);
    let name = policy::display_name(&p);
    if flags.is_empty() {
        name.to_string()
    } else {
        format!("{name} ({flags})")
    }
}

/// Sort rank of a run key: the order of `muri policies`, then flags.
fn key_rank(key: &str) -> (usize, String) {
    let (p, flags) = split_key(key);
    let idx = PolicyKind::ALL
        .iter()
        .position(|k| k.name() == p)
        .unwrap_or(PolicyKind::ALL.len());
    (idx, format!("{p}\u{0}{flags}"))
}

fn read_run(trace: &str, key: &str, dir: &Path) -> anyhow::Result<Run> {
    let job_csv = dir.join("job.csv");
    let jobs = output::read_job_csv(&job_csv)?;
    let summary = Summary::from_records(&jobs)
        .with_context(|| format!("{}: no job rows (did the run finish?)", job_csv.display()))?;
    let (policy, flags) = split_key(key);
    Ok(Run {
        trace: trace.to_string(),
        key: key.to_string(),
        policy,
        flags,
        dir: dir.to_path_buf(),
        jobs,
        summary,
    })
}

fn sorted_subdirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let p = e.path();
        if p.is_dir() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Finds every run under `dir` (sweep layout `<trace>/<key>/job.csv`, or `<key>/job.csv`
/// for one trace), reads its job.csv and recomputes its summary. Runs come back sorted by
/// trace, then policy in `muri policies` order.
pub fn discover_runs(dir: &Path) -> anyhow::Result<Vec<Run>> {
    if !dir.exists() {
        bail!("{}: no such directory", dir.display());
    }
    if !dir.is_dir() {
        bail!(
            "{}: not a directory (expected a directory of runs)",
            dir.display()
        );
    }
    let mut runs = Vec::new();
    if dir.join("job.csv").is_file() {
        // A single run directory.
        let dir_abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let key = file_name(&dir_abs);
        let trace = dir_abs
            .parent()
            .map(file_name)
            .unwrap_or_else(|| "trace".into());
        runs.push(read_run(&trace, &key, dir)?);
    }
    for sub in sorted_subdirs(dir)? {
        if sub.join("job.csv").is_file() {
            let dir_abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            runs.push(read_run(&file_name(&dir_abs), &file_name(&sub), &sub)?);
            continue;
        }
        for leaf in sorted_subdirs(&sub)? {
            if leaf.join("job.csv").is_file() {
                runs.push(read_run(&file_name(&sub), &file_name(&leaf), &leaf)?);
            }
        }
    }
    if runs.is_empty() {
        bail!(
            "{}: no runs found (expected <trace>/<policy>/job.csv as `muri sweep` writes, \
             or <policy>/job.csv as `muri simulate --log_path` writes)",
            dir.display()
        );
    }
    runs.sort_by(|a, b| {
        a.trace
            .cmp(&b.trace)
            .then_with(|| key_rank(&a.key).cmp(&key_rank(&b.key)))
    });
    Ok(runs)
}

/// A metric of the bar charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    AvgJct,
    Makespan,
    P99Jct,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::AvgJct, Metric::Makespan, Metric::P99Jct];

    pub fn slug(self) -> &'static str {
        match self {
            Metric::AvgJct => "avg_jct",
            Metric::Makespan => "makespan",
            Metric::P99Jct => "p99_jct",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Metric::AvgJct => "Average JCT",
            Metric::Makespan => "Makespan",
            Metric::P99Jct => "99th-percentile JCT",
        }
    }

    pub fn value(self, s: &Summary) -> f64 {
        match self {
            Metric::AvgJct => s.avg_jct,
            Metric::Makespan => s.makespan,
            Metric::P99Jct => s.p99_jct,
        }
    }
}

/// Picks the baseline run key: the requested one (a key, a policy name or a paper name such as
/// `Muri-S`), else Muri-S, else Muri-L, else the first.
pub fn choose_baseline(keys: &[String], requested: Option<&str>) -> anyhow::Result<String> {
    if keys.is_empty() {
        bail!("no runs to choose a baseline from");
    }
    if let Some(r) = requested {
        if let Some(k) = keys.iter().find(|k| k.as_str() == r) {
            return Ok(k.clone());
        }
        if let Some(k) = keys
            .iter()
            .find(|k| label_for_key(k).eq_ignore_ascii_case(r))
        {
            return Ok(k.clone());
        }
        if let Ok(kind) = PolicyKind::parse(r) {
            if let Some(k) = keys.iter().find(|k| k.as_str() == kind.name()) {
                return Ok(k.clone());
            }
        }
        bail!(
            "--baseline {r}: no such policy among the runs (have: {})",
            keys.join(", ")
        );
    }
    for b in DEFAULT_BASELINES {
        if let Some(k) = keys.iter().find(|k| k.as_str() == b) {
            return Ok(k.clone());
        }
    }
    Ok(keys[0].clone())
}

/// The normalised values of one metric: `values[trace][policy] = run / baseline` of the same
/// trace (`None` when either run is missing).
#[derive(Debug, Clone, PartialEq)]
pub struct NormTable {
    pub metric: Metric,
    pub baseline: String,
    pub traces: Vec<String>,
    /// Run keys, in plotting order.
    pub keys: Vec<String>,
    pub raw: Vec<Vec<Option<f64>>>,
    pub values: Vec<Vec<Option<f64>>>,
    /// 95 % confidence half-widths of `values` where a key has replicates over seeds.
    pub errors: Vec<Vec<Option<f64>>>,
}

/// Splits a run key into the key its replicates share and its seed: `shortest-l2-s3` →
/// (`shortest-l2`, 3); a key without a trailing `-s<seed>` has no seed.
pub fn replicate_key(key: &str) -> (&str, Option<u64>) {
    if let Some((base, last)) = key.rsplit_once('-') {
        if let Some(seed) = last.strip_prefix('s').and_then(|d| d.parse().ok()) {
            return (base, Some(seed));
        }
    }
    (key, None)
}

fn traces_and_keys(runs: &[Run]) -> (Vec<String>, Vec<String>) {
    let mut traces: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for r in runs {
        if !traces.contains(&r.trace) {
            traces.push(r.trace.clone());
        }
        let key = replicate_key(&r.key).0.to_string();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort_by_key(|k| key_rank(k));
    (traces, keys)
}

/// Normalised table of `metric` over `runs` (as [`discover_runs`] returns them). Runs that
/// differ only in their seed are averaged: each seed's value is divided by the baseline's
/// for the same seed, and the bar is the mean of those ratios with its 95 % interval.
pub fn normalised_table(runs: &[Run], metric: Metric, baseline: &str) -> NormTable {
    let (traces, keys) = traces_and_keys(runs);
    normalised_table_of(runs, metric, baseline, traces, keys)
}

/// As [`normalised_table`], for the given traces and run keys (replicate keys, see
/// [`replicate_key`]) in the given order.
pub fn normalised_table_of(
    runs: &[Run],
    metric: Metric,
    baseline: &str,
    traces: Vec<String>,
    keys: Vec<String>,
) -> NormTable {
    let members = |t: &str, k: &str| -> Vec<(&Run, Option<u64>)> {
        runs.iter()
            .filter(|r| r.trace == t)
            .filter_map(|r| {
                let (base, seed) = replicate_key(&r.key);
                (base == k).then_some((r, seed))
            })
            .collect()
    };
    let mut raw = Vec::new();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for t in &traces {
        let base_runs = members(t, baseline);
        let base_for = |seed: Option<u64>| {
            base_runs
                .iter()
                .find(|(_, s)| *s == seed)
                .map(|(r, _)| metric.value(&r.summary))
                .filter(|b| *b > 0.0)
        };
        let (mut raw_row, mut value_row, mut error_row) = (Vec::new(), Vec::new(), Vec::new());
        for k in &keys {
            let runs_k = members(t, k);
            if runs_k.is_empty() {
                raw_row.push(None);
                value_row.push(None);
                error_row.push(None);
                continue;
            }
            let vals: Vec<f64> = runs_k
                .iter()
                .map(|(r, _)| metric.value(&r.summary))
                .collect();
            raw_row.push(Some(vals.iter().sum::<f64>() / vals.len() as f64));
            let ratios: Option<Vec<f64>> = runs_k
                .iter()
                .map(|(r, seed)| base_for(*seed).map(|b| metric.value(&r.summary) / b))
                .collect();
            match ratios {
                Some(ratios) => {
                    let (mean, ci) = crate::sweep::mean_ci95(&ratios);
                    value_row.push(Some(mean));
                    error_row.push(ci);
                }
                None => {
                    value_row.push(None);
                    error_row.push(None);
                }
            }
        }
        raw.push(raw_row);
        values.push(value_row);
        errors.push(error_row);
    }
    NormTable {
        metric,
        baseline: baseline.to_string(),
        traces,
        keys,
        raw,
        values,
        errors,
    }
}

/// What `muri plot` draws.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    pub out: PathBuf,
    pub formats: Vec<Format>,
    /// Baseline policy of the bar charts (see [`choose_baseline`]).
    pub baseline: Option<String>,
    /// Timelines to draw: `None` every drawn run, `Some(list)` only those `TRACE/KEY` runs (an
    /// empty list draws none).
    pub timelines: Option<Vec<String>>,
    /// Policies to draw, in this order (see [`select_keys`]); `None`: every policy, in
    /// `muri policies` order.
    pub policies: Option<Vec<String>>,
    /// Traces to draw, in this order; `None`: every trace, sorted by name.
    pub traces: Option<Vec<String>>,
    /// Whether figures get a title line (papers set their captions themselves).
    pub title: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            out: PathBuf::from("plots"),
            formats: vec![Format::Png, Format::Svg],
            baseline: None,
            timelines: None,
            policies: None,
            traces: None,
            title: false,
        }
    }
}

/// Resolves `--policies` selectors to run keys (replicate keys), in the order given. A
/// selector is a run key (`multi-resource-blossom-same-gpu-unaware-p2`), a legend label
/// (`Muri-L (p2)`) or a policy's reference or paper name, which selects every run of that
/// policy (all its flag variants). Duplicates keep their first place.
pub fn select_keys(selectors: &[String], keys: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let have = || {
        keys.iter()
            .map(|k| label_for_key(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for sel in selectors.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let exact: Vec<&String> = keys
            .iter()
            .filter(|k| k.as_str() == sel || label_for_key(k).eq_ignore_ascii_case(sel))
            .collect();
        let chosen: Vec<&String> = if !exact.is_empty() {
            exact
        } else {
            let kind = PolicyKind::parse(sel).map_err(|e| anyhow::anyhow!("--policies: {e}"))?;
            let of_kind: Vec<&String> = keys
                .iter()
                .filter(|k| split_key(k).0 == kind.name())
                .collect();
            if of_kind.is_empty() {
                bail!(
                    "--policies {sel}: no {} runs in this directory (have: {})",
                    kind.paper_name(),
                    have()
                );
            }
            of_kind
        };
        for k in chosen {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    if out.is_empty() {
        bail!("--policies is empty (have: {})", have());
    }
    Ok(out)
}

/// Resolves `--traces` names (exact, else ignoring ASCII case) in the order given; an unknown
/// name is refused with the closest known one.
pub fn select_traces(names: &[String], traces: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let found = traces
            .iter()
            .find(|t| t.as_str() == name)
            .or_else(|| traces.iter().find(|t| t.eq_ignore_ascii_case(name)));
        let Some(t) = found else {
            let hint = traces
                .iter()
                .map(|t| (strsim::jaro_winkler(name, t), t))
                .filter(|(score, _)| *score >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, t)| format!("; did you mean `{t}`?"))
                .unwrap_or_default();
            bail!(
                "--traces: no trace `{name}` in this directory{hint} (have: {})",
                traces.join(", ")
            );
        };
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if out.is_empty() {
        bail!("--traces is empty (have: {})", traces.join(", "));
    }
    Ok(out)
}

/// What was drawn.
#[derive(Debug, Clone)]
pub struct PlotReport {
    pub files: Vec<PathBuf>,
    pub tables: Vec<NormTable>,
    pub baseline: String,
    pub warnings: Vec<String>,
}

/// Draws every figure for the runs under `dir` into `opts.out`.
pub fn plot_dir(dir: &Path, opts: &PlotOptions) -> anyhow::Result<PlotReport> {
    let runs = discover_runs(dir)?;
    plot_runs(&runs, opts)
}

/// Draws every figure for `runs` into `opts.out`.
pub fn plot_runs(runs: &[Run], opts: &PlotOptions) -> anyhow::Result<PlotReport> {
    register_font();
    let (all_traces, all_keys) = traces_and_keys(runs);
    let traces = match &opts.traces {
        Some(names) => select_traces(names, &all_traces)?,
        None => all_traces,
    };
    let keys = match &opts.policies {
        Some(selectors) => select_keys(selectors, &all_keys)?,
        None => all_keys.clone(),
    };
    // The baseline may be a policy that is not drawn (e.g. `--policies SRTF,SRSF`, bars
    // normalised to Muri-S).
    let baseline = choose_baseline(&all_keys, opts.baseline.as_deref())?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let drawn =
        |r: &Run| traces.contains(&r.trace) && keys.iter().any(|k| k == replicate_key(&r.key).0);
    let mut warnings = Vec::new();
    for t in &traces {
        if !runs
            .iter()
            .any(|r| &r.trace == t && replicate_key(&r.key).0 == baseline)
        {
            warnings.push(format!(
                "trace {t}: no {baseline} run, so its bars are left out of the normalised charts"
            ));
        }
    }
    let mut files = Vec::new();
    let mut tables = Vec::new();
    for metric in Metric::ALL {
        let table = normalised_table_of(runs, metric, &baseline, traces.clone(), keys.clone());
        let look = BarLook::plain(&table, opts.title);
        let stem = opts.out.join(format!("bars-{}", metric.slug()));
        for &f in &opts.formats {
            let path = stem.with_extension(f.ext());
            render(&path, f, (1100, 580), Figure::Bars(&table, &look))?;
            files.push(path);
        }
        tables.push(table);
    }
    let csv = opts.out.join("normalised.csv");
    std::fs::write(&csv, tables_csv(&tables))
        .with_context(|| format!("writing {}", csv.display()))?;
    files.push(csv);

    for t in &traces {
        let pooled = pool_replicates(runs.iter().filter(|r| &r.trace == t && drawn(r)));
        // In the bars' order, so each policy keeps its colour and pattern across figures.
        let trace_runs: Vec<(&Run, SeriesStyle)> = keys
            .iter()
            .enumerate()
            .filter_map(|(j, k)| {
                pooled
                    .iter()
                    .find(|r| &r.key == k)
                    .map(|r| (r, style::series(j)))
            })
            .collect();
        if trace_runs.is_empty() {
            continue;
        }
        let title = opts.title.then(|| format!("JCT CDF, {t}"));
        let stem = opts.out.join(format!("cdf-{}", sanitize(t)));
        for &f in &opts.formats {
            let path = stem.with_extension(f.ext());
            render(
                &path,
                f,
                (900, 620),
                Figure::Cdf(title.as_deref(), &trace_runs),
            )?;
            files.push(path);
        }
    }

    let selected: Vec<&Run> = match &opts.timelines {
        None => runs.iter().filter(|r| drawn(r)).collect(),
        Some(list) => {
            let mut v = Vec::new();
            for want in list {
                let r = runs
                    .iter()
                    .find(|r| timeline_matches(r, want))
                    .with_context(|| {
                        let have: Vec<String> = runs
                            .iter()
                            .map(|r| format!("{}/{}", r.trace, r.key))
                            .collect();
                        format!("--timeline {want}: no such run (have: {})", have.join(", "))
                    })?;
                v.push(r);
            }
            v
        }
    };
    for r in selected {
        let cluster_csv = r.dir.join("cluster.csv");
        if !cluster_csv.is_file() {
            let msg = format!(
                "{}: missing, no timeline for this run",
                cluster_csv.display()
            );
            if opts.timelines.is_some() {
                bail!(msg);
            }
            warnings.push(msg);
            continue;
        }
        let rows = output::read_cluster_csv(&cluster_csv)?;
        if rows.len() < 2 {
            let msg = format!("{}: fewer than 2 rows, no timeline", cluster_csv.display());
            if opts.timelines.is_some() {
                bail!(msg);
            }
            warnings.push(msg);
            continue;
        }
        let stem = opts.out.join(format!(
            "timeline-{}-{}",
            sanitize(&r.trace),
            sanitize(&r.key)
        ));
        for &f in &opts.formats {
            let path = stem.with_extension(f.ext());
            let title = opts
                .title
                .then(|| format!("Cluster timeline, {}, {}", r.trace, r.label()));
            render(
                &path,
                f,
                (1000, 760),
                Figure::Timeline(title.as_deref(), &rows),
            )?;
            files.push(path);
        }
    }
    Ok(PlotReport {
        files,
        tables,
        baseline,
        warnings,
    })
}

/// One run per replicate key: the jobs of runs that differ only in their seed pooled into
/// one, so that a CDF shows one line per policy with every seed's jobs.
fn pool_replicates<'a>(runs: impl Iterator<Item = &'a Run>) -> Vec<Run> {
    let mut pooled: Vec<Run> = Vec::new();
    for r in runs {
        let base = replicate_key(&r.key).0;
        match pooled.iter_mut().find(|p| p.key == base) {
            Some(p) => p.jobs.extend_from_slice(&r.jobs),
            None => pooled.push(Run {
                key: base.to_string(),
                ..r.clone()
            }),
        }
    }
    for p in &mut pooled {
        if let Some(s) = Summary::from_records(&p.jobs) {
            p.summary = s;
        }
    }
    pooled
}

fn timeline_matches(r: &Run, want: &str) -> bool {
    let Some((t, p)) = want.split_once('/') else {
        return false;
    };
    r.trace == t && (r.key == p || label_for_key(&r.key).eq_ignore_ascii_case(p))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `metric,trace,policy,value,normalised` rows of every table.
pub fn tables_csv(tables: &[NormTable]) -> String {
    let mut s = String::from("metric,trace,policy,value,normalised,baseline\n");
    for t in tables {
        for (i, trace) in t.traces.iter().enumerate() {
            for (j, key) in t.keys.iter().enumerate() {
                let raw = t.raw[i][j].map(|v| format!("{v}")).unwrap_or_default();
                let norm = t.values[i][j].map(|v| format!("{v}")).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{}",
                    t.metric.slug(),
                    trace,
                    key,
                    raw,
                    norm,
                    t.baseline
                );
            }
        }
    }
    s
}

/// One figure to draw, independent of the backend.
enum Figure<'a> {
    Bars(&'a NormTable, &'a BarLook),
    /// Bar-chart panels side by side (the paper's sub-figures (a), (b), (c)).
    Panels(&'a [(NormTable, BarLook)]),
    /// Optional title, runs with their styles.
    Cdf(Option<&'a str>, &'a [(&'a Run, SeriesStyle)]),
    /// Optional title, the run's cluster log.
    Timeline(Option<&'a str>, &'a [ClusterRecord]),
}

/// Renders one figure to `path` in `format`; errors name the file.
fn render(path: &Path, format: Format, size: (u32, u32), fig: Figure<'_>) -> anyhow::Result<()> {
    let res = match format {
        Format::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw_figure(&root, &fig).and_then(|()| Ok(root.present()?))
        }
        Format::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw_figure(&root, &fig).and_then(|()| Ok(root.present()?))
        }
        Format::Pdf => render_svg_string(size, &fig).and_then(|svg| {
            let pdf = svg_to_pdf(&svg)?;
            std::fs::write(path, pdf).context("writing the file")
        }),
    };
    res.with_context(|| format!("drawing {}", path.display()))
}

fn render_svg_string(size: (u32, u32), fig: &Figure<'_>) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_figure(&root, fig)?;
        root.present()?;
    }
    Ok(svg)
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure<'_>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    match fig {
        Figure::Bars(t, look) => draw_bars(root, t, look),
        Figure::Panels(panels) => {
            let areas = root.split_evenly((1, panels.len().max(1)));
            for (area, (t, look)) in areas.iter().zip(panels.iter()) {
                draw_bars(area, t, look)?;
            }
            Ok(())
        }
        Figure::Cdf(title, runs) => draw_cdf(root, *title, runs),
        Figure::Timeline(title, rows) => draw_timeline(root, *title, rows),
    }
}

fn font(px: u32) -> TextStyle<'static> {
    ("sans-serif", px).into_font().color(&BLACK)
}

/// `area` with `title` drawn above it, or `area` itself when there is no title.
fn maybe_titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: Option<&str>,
) -> anyhow::Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    Ok(match title {
        Some(t) => area.titled(t, font(TITLE_PX))?,
        None => area.clone(),
    })
}

/// A legend entry's sample: a hatched bar or a dashed line.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Bar(SeriesStyle),
    Line(SeriesStyle),
}

const LEGEND_ROW_PX: i32 = 28;

/// Lays legend entries out in rows that fit `width` (text widths from the font's layout, so
/// entries never overlap): (rows of entry indices, each entry's width).
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Swatch)],
) -> (Vec<Vec<usize>>, Vec<i32>) {
    let (w, _) = area.dim_in_pixel();
    let style = font(LEGEND_PX);
    let items: Vec<i32> = entries
        .iter()
        .map(|(s, _)| {
            let tw = area
                .estimate_text_size(s, &style)
                .map(|(tw, _)| tw as i32)
                .unwrap_or(12 * s.len() as i32);
            SWATCH_W + 6 + tw + 26
        })
        .collect();
    let mut rows: Vec<Vec<usize>> = vec![vec![]];
    let mut used = 0;
    for (i, &item) in items.iter().enumerate() {
        if used + item > w as i32 - 20 && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(vec![]);
            used = 0;
        }
        used += item;
        rows.last_mut().expect("non-empty").push(i);
    }
    (rows, items)
}

const SWATCH_W: i32 = 30;

/// Splits a legend strip off the top of `area`, draws the legend there and returns the rest.
fn with_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Swatch)],
) -> anyhow::Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let (rows, items) = legend_rows(area, entries);
    let (w, _) = area.dim_in_pixel();
    let height = rows.len() as i32 * LEGEND_ROW_PX + 8;
    let (legend, rest) = area.split_vertically(height);
    let style = font(LEGEND_PX);
    for (r, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|&i| items[i]).sum();
        let mut x = (w as i32 - total).max(0) / 2;
        let y = 15 + r as i32 * LEGEND_ROW_PX;
        for &i in row {
            let (label, swatch) = &entries[i];
            match swatch {
                Swatch::Bar(s) => {
                    style::draw_bar(&legend, *s, (x, y - 10), (x + SWATCH_W, y + 10))?
                }
                Swatch::Line(s) => {
                    let pts = vec![(x, y), (x + SWATCH_W, y)];
                    let stroke = s.colour.stroke_width(3);
                    match s.dash {
                        style::Dash::Solid => legend.draw(&PathElement::new(pts, stroke))?,
                        style::Dash::Dashed => legend.draw(
                            &plotters::element::DashedPathElement::new(pts, 9, 5, stroke),
                        )?,
                        style::Dash::Dotted => legend.draw(
                            &plotters::element::DashedPathElement::new(pts, 3, 4, stroke),
                        )?,
                    }
                }
            }
            legend.draw(&Text::new(
                label.clone(),
                (x + SWATCH_W + 6, y),
                style.pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
            x += items[i];
        }
    }
    Ok(rest)
}

/// How a bar chart is labelled and styled.
#[derive(Debug, Clone)]
pub(crate) struct BarLook {
    title: Option<String>,
    x_desc: String,
    y_desc: String,
    /// One per trace of the table.
    trace_labels: Vec<String>,
    /// One per key of the table.
    key_labels: Vec<String>,
    styles: Vec<SeriesStyle>,
    /// Print each bar's value above it (when the bars are wide enough).
    values_on_bars: bool,
}

impl BarLook {
    /// `muri plot`'s own bar charts: trace names, legend labels from the run keys.
    fn plain(t: &NormTable, title: bool) -> BarLook {
        let baseline = label_for_key(&t.baseline);
        BarLook {
            title: title.then(|| format!("{}, normalised to {baseline}", t.metric.title())),
            x_desc: "trace".into(),
            y_desc: format!("{} (× {baseline})", t.metric.title()),
            trace_labels: t.traces.clone(),
            key_labels: t.keys.iter().map(|k| label_for_key(k)).collect(),
            styles: (0..t.keys.len()).map(style::series).collect(),
            values_on_bars: true,
        }
    }
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    t: &NormTable,
    look: &BarLook,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let root = maybe_titled(root, look.title.as_deref())?;
    let entries: Vec<(String, Swatch)> = look
        .key_labels
        .iter()
        .zip(&look.styles)
        .map(|(l, s)| (l.clone(), Swatch::Bar(*s)))
        .collect();
    let plot = with_legend(&root, &entries)?;

    let n = t.traces.len().max(1);
    let m = t.keys.len().max(1);
    let vmax = t
        .values
        .iter()
        .zip(&t.errors)
        .flat_map(|(v, e)| v.iter().zip(e))
        .filter_map(|(v, e)| v.map(|v| v + e.unwrap_or(0.0)))
        .fold(1.0f64, f64::max);
    let ymax = vmax * 1.12;
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_right(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .x_desc(look.x_desc.as_str())
        .y_desc(look.y_desc.as_str())
        .label_style(font(TICK_PX))
        .axis_desc_style(font(LABEL_PX))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Trace names under the groups (plotters' key points do not fit a grouped bar chart).
    let base = plot.get_base_pixel();
    let plotting = chart.plotting_area().clone();
    let to_px = |x: f64, y: f64| {
        let (px, py) = plotting.map_coordinate(&(x, y));
        (px - base.0, py - base.1)
    };
    for (i, name) in look.trace_labels.iter().enumerate() {
        let (x, y) = to_px(i as f64, 0.0);
        plot.draw(&PathElement::new(vec![(x, y), (x, y + 5)], BLACK))?;
        plot.draw(&Text::new(
            name.clone(),
            (x, y + 8),
            font(TICK_PX).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }

    let group = 0.8;
    let bar = group / m as f64;
    let plot_w = plot.dim_in_pixel().0.saturating_sub(110) as f64;
    let bar_px = plot_w / n as f64 * bar;
    let value_style = font(VALUE_PX).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, s) in look.styles.iter().enumerate().take(t.keys.len()) {
        let bars: Vec<(f64, f64)> = t
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, row)| row[j].map(|v| (i as f64 - group / 2.0 + j as f64 * bar, v)))
            .collect();
        for &(x0, v) in &bars {
            style::draw_bar(
                &plot,
                *s,
                to_px(x0 + bar * 0.06, 0.0),
                to_px(x0 + bar * 0.94, v),
            )?;
        }
        draw_error_bars(&mut chart, t, j, group, bar)?;
        if look.values_on_bars && bar_px >= 42.0 {
            // Above the whisker where the bar has one (same rows as `bars`).
            let tops = t
                .values
                .iter()
                .zip(&t.errors)
                .filter(|(row, _)| row[j].is_some())
                .map(|(_, err)| err[j].unwrap_or(0.0));
            chart.draw_series(bars.iter().zip(tops).map(|(&(x0, v), e)| {
                Text::new(
                    format!("{v:.2}"),
                    (x0 + bar / 2.0, v + e),
                    value_style.clone(),
                )
            }))?;
        }
    }
    chart.draw_series(DashedLineSeries::new(
        vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
        8,
        5,
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

/// The 95 % intervals of key `j`'s bars, as whiskers with caps.
fn draw_error_bars<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    t: &NormTable,
    j: usize,
    group: f64,
    bar: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let style = BLACK.stroke_width(2);
    for (i, (row, err)) in t.values.iter().zip(&t.errors).enumerate() {
        let (Some(v), Some(e)) = (row[j], err[j]) else {
            continue;
        };
        let x = i as f64 - group / 2.0 + (j as f64 + 0.5) * bar;
        let cap = bar * 0.2;
        let (lo, hi) = ((v - e).max(0.0), v + e);
        chart.draw_series([
            PathElement::new(vec![(x, lo), (x, hi)], style),
            PathElement::new(vec![(x - cap, lo), (x + cap, lo)], style),
            PathElement::new(vec![(x - cap, hi), (x + cap, hi)], style),
        ])?;
    }
    Ok(())
}

/// Evenly spaced indices into `0..n`, at most `max` of them, always including the last.
fn sample_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut v: Vec<usize> = (0..max).map(|k| k * (n - 1) / (max - 1).max(1)).collect();
    v.dedup();
    v
}

/// Tick labels of a linear time axis: no decimals unless the span is short.
fn fmt_axis_hours(h: f64, span: f64) -> String {
    if span >= 20.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.1}")
    }
}

fn fmt_hours(h: f64) -> String {
    if h >= 1.0 {
        format!("{h:.0}")
    } else if h >= 0.1 {
        format!("{h:.1}")
    } else if h >= 0.01 {
        format!("{h:.2}")
    } else {
        format!("{h:.0e}")
    }
}

fn draw_cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: Option<&str>,
    runs: &[(&Run, SeriesStyle)],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let root = maybe_titled(root, title)?;
    let mut series: Vec<(String, Vec<f64>)> = Vec::new();
    for (r, _) in runs {
        let mut h: Vec<f64> = r.jobs.iter().map(|j| (j.jct / 3600.0).max(1e-4)).collect();
        h.sort_by(f64::total_cmp);
        series.push((r.label(), h));
    }
    let lo = series
        .iter()
        .filter_map(|(_, v)| v.first().copied())
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(0.0f64, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo / 1.3, hi * 1.3)
    } else {
        (0.01, 100.0)
    };
    let entries: Vec<(String, Swatch)> = series
        .iter()
        .zip(runs)
        .map(|((l, _), (_, s))| (l.clone(), Swatch::Line(*s)))
        .collect();
    let plot = with_legend(&root, &entries)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_right(25)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("JCT (hours, log scale)")
        .y_desc("fraction of jobs")
        .x_label_formatter(&|x| fmt_hours(*x))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style(font(TICK_PX))
        .axis_desc_style(font(LABEL_PX))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for ((_, h), (_, s)) in series.iter().zip(runs) {
        let n = h.len();
        let pts: Vec<(f64, f64)> = sample_indices(n, MAX_LINE_POINTS)
            .into_iter()
            .map(|i| (h[i], (i + 1) as f64 / n as f64))
            .collect();
        style::line_series(&mut chart, pts, *s, 3)?;
    }
    Ok(())
}

/// A time series over `[t0, t1]`: (hours, value) points for a step plot, time-averaged into at
/// most `max` buckets when the log has more rows.
fn step_series(
    rows: &[ClusterRecord],
    f: impl Fn(&ClusterRecord) -> f64,
    max: usize,
) -> Vec<(f64, f64)> {
    let t0 = rows[0].time;
    let t1 = rows[rows.len() - 1].time;
    if rows.len() <= max || t1 <= t0 {
        let mut pts = Vec::with_capacity(rows.len() * 2);
        for pair in rows.windows(2) {
            let v = f(&pair[0]);
            pts.push((pair[0].time / 3600.0, v));
            pts.push((pair[1].time / 3600.0, v));
        }
        return pts;
    }
    let width = (t1 - t0) / max as f64;
    let mut sum = vec![0.0; max];
    for pair in rows.windows(2) {
        let (mut a, b) = (pair[0].time, pair[1].time);
        let v = f(&pair[0]);
        while a < b {
            let k = (((a - t0) / width) as usize).min(max - 1);
            let end = if k == max - 1 {
                b
            } else {
                (t0 + (k + 1) as f64 * width).min(b)
            };
            sum[k] += v * (end - a);
            if end <= a {
                break;
            }
            a = end;
        }
    }
    let mut pts = Vec::with_capacity(max * 2);
    for (k, s) in sum.iter().enumerate() {
        let v = s / width;
        pts.push(((t0 + k as f64 * width) / 3600.0, v));
        pts.push(((t0 + (k + 1) as f64 * width) / 3600.0, v));
    }
    pts
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: Option<&str>,
    rows: &[ClusterRecord],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let root = maybe_titled(root, title)?;
    let (_, h) = root.dim_in_pixel();
    let (upper, lower) = root.split_vertically(h * 55 / 100);
    let x_max = rows[rows.len() - 1].time / 3600.0;
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let x_min = (rows[0].time / 3600.0).min(x_max * 0.999);
    let bucket = MAX_LINE_POINTS / 2;

    let running = step_series(rows, |r| r.running_job as f64, bucket);
    let pending = step_series(rows, |r| r.pending_job as f64, bucket);
    let jobs_max = running
        .iter()
        .chain(&pending)
        .map(|p| p.1)
        .fold(1.0f64, f64::max);
    let entries = vec![
        ("running jobs".to_string(), Swatch::Line(style::series(0))),
        ("pending jobs".to_string(), Swatch::Line(style::series(1))),
    ];
    let upper = with_legend(&upper, &entries)?;
    let mut chart = ChartBuilder::on(&upper)
        .margin(10)
        .margin_right(25)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, 0f64..jobs_max * 1.08)?;
    let x_fmt = |x: &f64| fmt_axis_hours(*x, x_max - x_min);
    chart
        .configure_mesh()
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("jobs")
        .label_style(font(TICK_PX))
        .axis_desc_style(font(LABEL_PX))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    style::line_series(&mut chart, running, style::series(0), 2)?;
    style::line_series(&mut chart, pending, style::series(1), 2)?;

    let util = step_series(
        rows,
        |r| {
            let total = r.busy_gpu + r.idle_gpu;
            if total == 0 {
                0.0
            } else {
                100.0 * r.busy_gpu as f64 / total as f64
            }
        },
        bucket,
    );
    let mean = output::gpu_utilisation(rows).unwrap_or(0.0) * 100.0;
    let lower = with_legend(
        &lower,
        &[
            (
                "GPU utilisation (busy / all GPUs)".to_string(),
                Swatch::Line(style::series(2)),
            ),
            (
                format!("time-weighted mean {mean:.1} %"),
                Swatch::Line(SeriesStyle {
                    colour: BLACK,
                    hatch: style::Hatch::None,
                    dash: style::Dash::Dashed,
                }),
            ),
        ],
    )?;
    let mut chart = ChartBuilder::on(&lower)
        .margin(10)
        .margin_right(25)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, 0f64..105.0)?;
    chart
        .configure_mesh()
        .x_desc("time (hours)")
        .y_desc("GPU utilisation (%)")
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(font(TICK_PX))
        .axis_desc_style(font(LABEL_PX))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let util_style = SeriesStyle {
        dash: style::Dash::Solid,
        ..style::series(2)
    };
    style::line_series(&mut chart, util, util_style, 2)?;
    chart.draw_series(DashedLineSeries::new(
        vec![(x_min, mean), (x_max, mean)],
        8,
        5,
        BLACK.stroke_width(2),
    ))?;
    Ok(())
}
