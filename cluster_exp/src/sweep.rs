//! Sweeps: a grid of (trace × policy × cluster × flags) simulations from one TOML file, run
//! in parallel (rayon), with every run's logs and one summary table.
//!
//! ```toml
//! out = "results/fig9"                 # output directory (default: results/<file stem>)
//! trace_dir = "../shared/traces/muri-sim"  # where bare trace names are looked up
//! baseline = "Muri-S"   # ratio column of summary.md (default: Muri-S when in the grid,
//!                       # else Muri-L, else the first policy); any policy name, any case
//!
//! [[grid]]
//! traces = ["trace1", "trace1_pr", "my/own.csv"]   # names or paths
//! policies = ["shortest", "SRSF"]          # reference or paper names
//! clusters = ["cluster_spec/n8g8.csv"]   # optional; default n8g8
//! packing_num = [2, 3, 4]                  # optional; default [4]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rayon::prelude::*;
use serde::Deserialize;

use crate::cluster::ClusterSpec;
use crate::metrics::Summary;
use crate::output;
use crate::policy::{PolicyKind, PolicyOptions};
use crate::runinfo::{self, InputFile, RunInfo};
use crate::simulate::simulate;
use crate::trace::Trace;

/// Where bare trace names are looked up unless the file or the command line says otherwise.
pub const DEFAULT_TRACE_DIR: &str = "../shared/traces/muri-sim";
const DEFAULT_PACKING_NUM: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    out: Option<PathBuf>,
    trace_dir: Option<PathBuf>,
    baseline: Option<String>,
    grid: Vec<GridFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    traces: Vec<String>,
    policies: Vec<String>,
    #[serde(default)]
    clusters: Vec<PathBuf>,
    #[serde(default)]
    packing_num: Vec<usize>,
}

/// One simulation of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub trace_name: String,
    pub trace_path: PathBuf,
    pub policy: String,
    pub cluster: Option<PathBuf>,
    pub packing_num: usize,
}

impl RunSpec {
    /// Non-default flags as a short tag (`p2`, `n4g8-p3`), empty when all are defaults.
    pub fn flags(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.cluster {
            parts.push(
                c.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        if self.packing_num != DEFAULT_PACKING_NUM {
            parts.push(format!("p{}", self.packing_num));
        }
        parts.join("-")
    }

    /// `<trace>/<policy>[-<flags>]`.
    pub fn dir(&self) -> PathBuf {
        let flags = self.flags();
        let leaf = if flags.is_empty() {
            self.policy.clone()
        } else {
            format!("{}-{flags}", self.policy)
        };
        Path::new(&self.trace_name).join(leaf)
    }
}

/// A parsed, validated sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub out: PathBuf,
    /// The baseline policy's reference name.
    pub baseline: String,
    pub runs: Vec<RunSpec>,
    /// Overwrite runs already in `out` (`--force`); without it such a sweep is refused.
    pub force: bool,
}

/// The file at the top of a sweep's output that `muri plot` reads its baseline from.
pub const SWEEP_FILE: &str = "sweep.json";

/// What `sweep.json` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SweepRecord {
    /// The baseline policy's reference name.
    pub baseline: String,
}

impl SweepRecord {
    /// Reads `dir/sweep.json`, `Ok(None)` when the directory is not a sweep's output.
    pub fn read(dir: &Path) -> anyhow::Result<Option<SweepRecord>> {
        let path = dir.join(SWEEP_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let record = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a sweep.json written by muri", path.display()))?;
        Ok(Some(record))
    }
}

/// Reads a sweep file. Errors name the file and the offending key or value.
pub fn load(path: &Path, trace_dir_override: Option<&Path>) -> anyhow::Result<Sweep> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading sweep file {}", path.display()))?;
    let file: SweepFile =
        toml::from_str(&text).with_context(|| format!("{}: invalid sweep file", path.display()))?;
    let trace_dir = trace_dir_override
        .map(Path::to_path_buf)
        .or(file.trace_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TRACE_DIR));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    if file.grid.is_empty() {
        bail!(
            "{}: key `grid`: at least one [[grid]] table is needed",
            path.display()
        );
    }
    let mut runs: Vec<RunSpec> = Vec::new();
    for (i, g) in file.grid.iter().enumerate() {
        for run in
            expand_grid(g, &trace_dir).with_context(|| format!("{}: grid[{i}]", path.display()))?
        {
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    check_trace_names(&runs).with_context(|| format!("{}: key `traces`", path.display()))?;
    let baseline = match &file.baseline {
        Some(b) => {
            PolicyKind::parse(b).with_context(|| format!("{}: key `baseline`", path.display()))?
        }
        None => {
            let kinds: Vec<PolicyKind> = runs
                .iter()
                .filter_map(|r| PolicyKind::parse(&r.policy).ok())
                .collect();
            PolicyKind::baseline_among(&kinds).unwrap_or(PolicyKind::DEFAULT_BASELINE)
        }
    };
    Ok(Sweep {
        out: file.out.unwrap_or_else(|| Path::new("results").join(stem)),
        baseline: baseline.name().to_string(),
        runs,
        force: false,
    })
}

/// Two different files with one name would write into one directory and be compared as one
/// trace.
fn check_trace_names(runs: &[RunSpec]) -> anyhow::Result<()> {
    for (i, a) in runs.iter().enumerate() {
        if let Some(b) = runs[..i]
            .iter()
            .find(|b| b.trace_name == a.trace_name && b.trace_path != a.trace_path)
        {
            bail!(
                "{} and {} are both named `{}`; rename one",
                b.trace_path.display(),
                a.trace_path.display(),
                a.trace_name
            );
        }
    }
    Ok(())
}

fn expand_grid(g: &GridFile, trace_dir: &Path) -> anyhow::Result<Vec<RunSpec>> {
    if g.traces.is_empty() {
        bail!("key `traces` is empty");
    }
    if g.policies.is_empty() {
        bail!("key `policies` is empty");
    }
    let policies = g
        .policies
        .iter()
        .map(|p| PolicyKind::parse(p).map(PolicyKind::name))
        .collect::<Result<Vec<_>, _>>()
        .context("key `policies`")?;
    if let Some(bad) = g.packing_num.iter().find(|&&p| !(1..=4).contains(&p)) {
        bail!("key `packing_num`: {bad} is out of range (1..=4)");
    }
    let packings = if g.packing_num.is_empty() {
        vec![DEFAULT_PACKING_NUM]
    } else {
        g.packing_num.clone()
    };
    let clusters: Vec<Option<PathBuf>> = if g.clusters.is_empty() {
        vec![None]
    } else {
        g.clusters.iter().cloned().map(Some).collect()
    };
    let mut runs = Vec::new();
    for t in &g.traces {
        let (name, path) = resolve_trace(t, trace_dir);
        for p in &policies {
            for c in &clusters {
                for &k in &packings {
                    runs.push(RunSpec {
                        trace_name: name.clone(),
                        trace_path: path.clone(),
                        policy: p.to_string(),
                        cluster: c.clone(),
                        packing_num: k,
                    });
                }
            }
        }
    }
    Ok(runs)
}

/// A bare name is `<trace_dir>/<name>.csv`; anything with a slash or `.csv` is a path.
fn resolve_trace(t: &str, trace_dir: &Path) -> (String, PathBuf) {
    let path = if t.contains('/') || t.ends_with(".csv") {
        PathBuf::from(t)
    } else {
        trace_dir.join(format!("{t}.csv"))
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| t.into());
    (name, path)
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    pub summary: Summary,
    /// Time-weighted share of GPUs busy (0..1).
    pub gpu_utilisation: Option<f64>,
    pub wall_seconds: f64,
    pub events: usize,
}

/// Runs every simulation of the sweep in parallel, writes logs and summaries, and returns
/// the results in grid order. `on_done` is called after each run (for a progress bar).
pub fn run(sweep: &Sweep, on_done: &(dyn Fn(&RunSpec) + Sync)) -> anyhow::Result<Vec<RunResult>> {
    let dirs: Vec<PathBuf> = sweep.runs.iter().map(|r| sweep.out.join(r.dir())).collect();
    runinfo::refuse_overwrite(&dirs, sweep.force)?;
    let traces = load_traces(&sweep.runs)?;
    write_sweep_record(sweep)?;
    // Longest runs first, so the last core is not left with a big job at the end.
    let mut order: Vec<usize> = (0..sweep.runs.len()).collect();
    let cost = |r: &RunSpec| {
        traces
            .iter()
            .find(|(p, _, _)| *p == r.trace_path)
            .map_or(0, |(_, t, _)| t.jobs.len())
    };
    order.sort_by_key(|&i| {
        std::cmp::Reverse(cost(&sweep.runs[i]) * policy_weight(&sweep.runs[i].policy))
    });
    let mut results: Vec<(usize, RunResult)> = order
        .par_iter()
        .map(|&i| {
            let spec = &sweep.runs[i];
            let (_, trace, trace_file) = traces
                .iter()
                .find(|(p, _, _)| *p == spec.trace_path)
                .expect("trace loaded");
            let r = run_one(spec, trace, trace_file, &sweep.out)
                .with_context(|| format!("run {}", spec.dir().display()))?;
            on_done(spec);
            Ok((i, r))
        })
        .collect::<anyhow::Result<_>>()?;
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<RunResult> = results.into_iter().map(|(_, r)| r).collect();
    write_summaries(&sweep.out, &results, &sweep.baseline)?;
    Ok(results)
}

/// Muri runs cost far more per job than the others.
fn policy_weight(policy: &str) -> usize {
    if policy.starts_with("multi-resource") {
        10
    } else {
        1
    }
}

type LoadedTrace = (PathBuf, Trace, InputFile);

fn load_traces(runs: &[RunSpec]) -> anyhow::Result<Vec<LoadedTrace>> {
    let mut traces: Vec<LoadedTrace> = Vec::new();
    for r in runs {
        if !traces.iter().any(|(p, _, _)| *p == r.trace_path) {
            let t = Trace::from_path(&r.trace_path).with_context(|| {
                format!("trace `{}` (set trace_dir or --trace-dir)", r.trace_name)
            })?;
            let file = InputFile::of_path(&r.trace_path)?;
            traces.push((r.trace_path.clone(), t, file));
        }
    }
    Ok(traces)
}

fn write_sweep_record(sweep: &Sweep) -> anyhow::Result<()> {
    std::fs::create_dir_all(&sweep.out)
        .with_context(|| format!("creating {}", sweep.out.display()))?;
    let record = SweepRecord {
        baseline: sweep.baseline.clone(),
    };
    let path = sweep.out.join(SWEEP_FILE);
    let text = serde_json::to_string_pretty(&record).context("encoding sweep.json")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn run_one(
    spec: &RunSpec,
    trace: &Trace,
    trace_file: &InputFile,
    out: &Path,
) -> anyhow::Result<RunResult> {
    let (cluster, cluster_file) = match &spec.cluster {
        Some(p) => (ClusterSpec::from_path(p)?, InputFile::of_path(p)?),
        None => (ClusterSpec::N8G8, runinfo::default_cluster_file()),
    };
    let opts = PolicyOptions {
        packing_num: spec.packing_num,
        ..PolicyOptions::default()
    };
    let options = [
        ("packing_num", opts.packing_num.to_string()),
        ("multi_resource", opts.multi_resource.to_string()),
        ("weight_lbd", opts.weight_lbd.to_string()),
        ("autopack", opts.autopack.to_string()),
        ("match_block", opts.match_block.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut info = RunInfo::new(
        trace_file.clone(),
        trace.jobs.len(),
        cluster_file,
        &spec.policy,
        options,
    );
    let result = simulate(trace, cluster, &spec.policy, opts, None)?;
    let dir = out.join(spec.dir());
    output::write_logs(&dir, &result)?;
    info.wall_seconds = result.wall_seconds;
    info.write(&dir)?;
    let summary = Summary::from_records(&result.jobs).context("no job finished")?;
    Ok(RunResult {
        spec: spec.clone(),
        summary,
        gpu_utilisation: output::gpu_utilisation(&result.cluster),
        wall_seconds: result.wall_seconds,
        events: result.events,
    })
}

const SUMMARY_HEADER: &str = "trace,policy,flags,jobs,avg_jct_s,makespan_s,p99_jct_s,p50_jct_s,p90_jct_s,avg_queueing_delay_s,gpu_utilisation,preemptions,wall_s,events";

fn write_summaries(out: &Path, results: &[RunResult], baseline: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut csv = String::from(SUMMARY_HEADER);
    csv.push('\n');
    for r in results {
        let s = &r.summary;
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{},{:.3},{}\n",
            r.spec.trace_name,
            r.spec.policy,
            r.spec.flags(),
            s.jobs,
            s.avg_jct,
            s.makespan,
            s.p99_jct,
            s.p50_jct,
            s.p90_jct,
            s.avg_queueing_delay,
            r.gpu_utilisation
                .map_or(String::new(), |u| format!("{u:.6}")),
            s.preemptions,
            r.wall_seconds,
            r.events
        ));
    }
    let path = out.join("summary.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    let path = out.join("summary.md");
    std::fs::write(&path, markdown_table(results, baseline))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The summary as a Markdown table with ratios to `baseline` (same trace, default flags).
pub fn markdown_table(results: &[RunResult], baseline: &str) -> String {
    let base_name = crate::policy::display_name(baseline);
    let mut md = format!(
        "| trace | policy | flags | jobs | avg JCT (s) | ×{base_name} | makespan (s) | ×{base_name} | 99th JCT (s) | ×{base_name} | wall (s) | events |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in results {
        let base = results
            .iter()
            .find(|b| {
                b.spec.trace_name == r.spec.trace_name
                    && b.spec.policy == baseline
                    && b.spec.flags().is_empty()
            })
            .map(|b| b.summary);
        let ratio = |v: f64, f: fn(&Summary) -> f64| {
            base.map_or("-".to_string(), |b| format!("{:.3}", v / f(&b)))
        };
        let s = &r.summary;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {:.1} | {} | {:.2} | {} |\n",
            r.spec.trace_name,
            crate::policy::display_name(&r.spec.policy),
            r.spec.flags(),
            s.jobs,
            s.avg_jct,
            ratio(s.avg_jct, |b| b.avg_jct),
            s.makespan,
            ratio(s.makespan, |b| b.makespan),
            s.p99_jct,
            ratio(s.p99_jct, |b| b.p99_jct),
            r.wall_seconds,
            r.events
        ));
    }
    md
}
