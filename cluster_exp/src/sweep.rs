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
//! multi_resource = [3, 4]                  # optional simulate flags, each a list:
//! weight_lbd = [0.0, 0.5]                  #   multi_resource, weight_lbd, autopack,
//! autopack = [true, false]                 #   match_block (defaults as in `simulate`)
//! load = [0.5, 1.0, 2.0]                   # arrival-rate multiplier: submit times / load
//!
//! [[grid]]                                 # generated traces, one per seed:
//! policies = ["shortest", "multi-resource-blossom-same-gpu"]
//! seeds = [1, 2, 3, 4, 5]
//! generate = { name = "gen", jobs = 400, interarrival = 3600 }   # `trace gen` options
//! ```
//!
//! A run's flags tag names every non-default value (`p2`, `m3`, `l2`, `s4`, …), and its logs
//! go to `<out>/<trace>/<policy>[-<flags>]`. Runs that differ only in their seed are
//! replicates: summary.md then adds their mean ± 95 % confidence interval (Student t).

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
use crate::tracegen::{self, TraceGenConfig};

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
    #[serde(default)]
    traces: Vec<String>,
    policies: Vec<String>,
    #[serde(default)]
    clusters: Vec<PathBuf>,
    #[serde(default)]
    packing_num: Vec<usize>,
    #[serde(default)]
    multi_resource: Vec<usize>,
    #[serde(default)]
    weight_lbd: Vec<f64>,
    #[serde(default)]
    autopack: Vec<bool>,
    #[serde(default)]
    match_block: Vec<usize>,
    #[serde(default)]
    load: Vec<f64>,
    #[serde(default)]
    seeds: Vec<u64>,
    generate: Option<GenerateFile>,
}

/// `trace gen`'s options for a grid's generated traces (defaults: `trace gen`'s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateFile {
    /// Trace name in the output tree (default `generated`).
    pub name: Option<String>,
    pub jobs: Option<usize>,
    /// Mean seconds between arrivals.
    pub interarrival: Option<f64>,
    pub median_hours: Option<f64>,
    pub duration_sigma: Option<f64>,
    /// `GPUS:WEIGHT` pairs, as `trace gen --gpu-mix`.
    pub gpu_mix: Option<String>,
    pub models: Option<Vec<String>>,
}

impl GenerateFile {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "generated".into())
    }

    /// The generator's configuration for `seed`.
    pub fn config(&self, seed: u64) -> anyhow::Result<TraceGenConfig> {
        let mut cfg = TraceGenConfig {
            seed,
            ..TraceGenConfig::default()
        };
        if let Some(n) = self.jobs {
            cfg.jobs = n;
        }
        if let Some(s) = self.interarrival {
            cfg.mean_interarrival_s = s;
        }
        if let Some(h) = self.median_hours {
            cfg.median_duration_s = h * 3600.0;
        }
        if let Some(s) = self.duration_sigma {
            cfg.duration_sigma = s;
        }
        if let Some(mix) = &self.gpu_mix {
            cfg.gpu_mix = tracegen::parse_mix(mix).context("key `generate.gpu_mix`")?;
        }
        if let Some(models) = &self.models {
            cfg.model_mix = models.iter().map(|m| (m.clone(), 1.0)).collect();
        }
        if cfg.jobs == 0 {
            bail!("key `generate.jobs`: must be at least 1");
        }
        Ok(cfg)
    }
}

/// One simulation of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub trace_name: String,
    pub trace_path: PathBuf,
    pub policy: String,
    pub cluster: Option<PathBuf>,
    pub packing_num: usize,
    /// `multi_resource`, `weight_lbd`, `autopack` and `match_block` (packing_num above).
    pub sim: SimFlags,
    /// Arrival-rate multiplier (1 = the trace as is).
    pub load: f64,
    /// Seed of a generated trace (`None` for a trace file).
    pub seed: Option<u64>,
    /// How the trace is generated, for generated traces.
    pub generate: Option<GenerateFile>,
}

/// The simulate flags a grid may vary besides `packing_num`; `None` is `simulate`'s default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimFlags {
    pub multi_resource: Option<usize>,
    pub weight_lbd: Option<f64>,
    pub autopack: Option<bool>,
    pub match_block: Option<usize>,
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
        let d = PolicyOptions::default();
        if let Some(m) = self.sim.multi_resource.filter(|&m| m != d.multi_resource) {
            parts.push(format!("m{m}"));
        }
        if let Some(l) = self.sim.weight_lbd.filter(|&l| l != d.weight_lbd) {
            parts.push(format!("lbd{l}"));
        }
        if self.sim.autopack == Some(false) {
            parts.push("noautopack".into());
        }
        if let Some(b) = self.sim.match_block {
            parts.push(format!("mb{b}"));
        }
        if self.load != 1.0 {
            parts.push(format!("l{}", self.load));
        }
        if let Some(seed) = self.seed {
            parts.push(format!("s{seed}"));
        }
        parts.join("-")
    }

    /// The flags tag without the seed: what replicates over seeds share.
    pub fn flags_without_seed(&self) -> String {
        RunSpec {
            seed: None,
            ..self.clone()
        }
        .flags()
    }

    /// The policy options of this run.
    pub fn policy_options(&self) -> PolicyOptions {
        let d = PolicyOptions::default();
        PolicyOptions {
            packing_num: self.packing_num,
            multi_resource: self.sim.multi_resource.unwrap_or(d.multi_resource),
            weight_lbd: self.sim.weight_lbd.unwrap_or(d.weight_lbd),
            autopack: self.sim.autopack.unwrap_or(d.autopack),
            match_block: self.sim.match_block.unwrap_or(d.match_block),
        }
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
    /// Skip runs whose `job.csv` is already under `out` (`muri sweep --resume`).
    pub resume: bool,
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
        resume: false,
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
    if g.traces.is_empty() && g.seeds.is_empty() {
        bail!("key `traces` is empty (or give `seeds` for generated traces)");
    }
    if g.generate.is_some() && g.seeds.is_empty() {
        bail!("key `generate` needs `seeds`: one generated trace per seed");
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
    if let Some(bad) = g.multi_resource.iter().find(|&&m| !(1..=16).contains(&m)) {
        bail!("key `multi_resource`: {bad} is out of range (1..=16)");
    }
    if let Some(bad) = g.match_block.iter().find(|&&b| b < 2) {
        bail!("key `match_block`: {bad} is below 2");
    }
    if let Some(bad) = g.weight_lbd.iter().find(|l| !l.is_finite() || **l < 0.0) {
        bail!("key `weight_lbd`: {bad} must be a non-negative number");
    }
    if let Some(bad) = g.load.iter().find(|l| !l.is_finite() || **l <= 0.0) {
        bail!("key `load`: {bad} must be a positive arrival-rate multiplier");
    }
    let generate = g.generate.clone().unwrap_or(GenerateFile {
        name: None,
        jobs: None,
        interarrival: None,
        median_hours: None,
        duration_sigma: None,
        gpu_mix: None,
        models: None,
    });
    if !g.seeds.is_empty() {
        generate.config(0)?;
    }
    let or_default = |v: Vec<Option<usize>>| if v.is_empty() { vec![None] } else { v };
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
    let multi = or_default(g.multi_resource.iter().map(|&m| Some(m)).collect());
    let blocks = or_default(g.match_block.iter().map(|&b| Some(b)).collect());
    let lbds: Vec<Option<f64>> = if g.weight_lbd.is_empty() {
        vec![None]
    } else {
        g.weight_lbd.iter().map(|&l| Some(l)).collect()
    };
    let autopacks: Vec<Option<bool>> = if g.autopack.is_empty() {
        vec![None]
    } else {
        g.autopack.iter().map(|&a| Some(a)).collect()
    };
    let loads = if g.load.is_empty() {
        vec![1.0]
    } else {
        g.load.clone()
    };
    let mut sims = Vec::new();
    for &multi_resource in &multi {
        for &weight_lbd in &lbds {
            for &autopack in &autopacks {
                for &match_block in &blocks {
                    sims.push(SimFlags {
                        multi_resource,
                        weight_lbd,
                        autopack,
                        match_block,
                    });
                }
            }
        }
    }
    // (name, path, seed) per trace: the files, then one generated trace per seed.
    let mut sources: Vec<(String, PathBuf, Option<u64>)> = g
        .traces
        .iter()
        .map(|t| {
            let (name, path) = resolve_trace(t, trace_dir);
            (name, path, None)
        })
        .collect();
    for &seed in &g.seeds {
        let name = generate.name();
        sources.push((
            name.clone(),
            PathBuf::from(format!("generated:{name}")),
            Some(seed),
        ));
    }
    let mut runs = Vec::new();
    for (name, path, seed) in &sources {
        for p in &policies {
            for c in &clusters {
                for &k in &packings {
                    for sim in &sims {
                        for &load in &loads {
                            runs.push(RunSpec {
                                trace_name: name.clone(),
                                trace_path: path.clone(),
                                policy: p.to_string(),
                                cluster: c.clone(),
                                packing_num: k,
                                sim: *sim,
                                load,
                                seed: *seed,
                                generate: seed.map(|_| generate.clone()),
                            });
                        }
                    }
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
    runinfo::refuse_overwrite(&dirs, sweep.force || sweep.resume)?;
    let traces = load_traces(&sweep.runs)?;
    write_sweep_record(sweep)?;
    // Longest runs first, so the last core is not left with a big job at the end.
    let mut order: Vec<usize> = (0..sweep.runs.len()).collect();
    let cost = |r: &RunSpec| trace_of(&traces, r).0.jobs.len();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(cost(&sweep.runs[i]) * policy_weight(&sweep.runs[i].policy))
    });
    let previous = sweep.resume.then(|| previous_walls(&sweep.out));
    let mut results: Vec<(usize, RunResult)> = order
        .par_iter()
        .map(|&i| {
            let spec = &sweep.runs[i];
            if let Some(walls) = &previous {
                if let Some(r) = finished_run(spec, &sweep.out, walls)? {
                    on_done(spec);
                    return Ok((i, r));
                }
            }
            let (trace, trace_file) = trace_of(&traces, spec);
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

/// The traces of a sweep, each read or generated once: (path, seed, trace, its bytes' identity).
type TraceSet = Vec<(PathBuf, Option<u64>, Trace, InputFile)>;

fn load_traces(runs: &[RunSpec]) -> anyhow::Result<TraceSet> {
    let mut traces: TraceSet = Vec::new();
    for r in runs {
        if traces
            .iter()
            .any(|(p, s, _, _)| *p == r.trace_path && *s == r.seed)
        {
            continue;
        }
        let t = match (&r.generate, r.seed) {
            (Some(g), Some(seed)) => tracegen::generate(&g.config(seed)?, &r.trace_name)
                .with_context(|| format!("generating trace `{}` with seed {seed}", r.trace_name))?,
            _ => Trace::from_path(&r.trace_path).with_context(|| {
                format!("trace `{}` (set trace_dir or --trace-dir)", r.trace_name)
            })?,
        };
        let file = match r.seed {
            // A generated trace is identified by the bytes it would be written as.
            Some(_) => {
                let mut bytes = Vec::new();
                t.write_csv(&mut bytes)?;
                InputFile::of_bytes(&r.trace_path.display().to_string(), &bytes)
            }
            None => InputFile::of_path(&r.trace_path)?,
        };
        traces.push((r.trace_path.clone(), r.seed, t, file));
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

fn trace_of<'a>(traces: &'a TraceSet, spec: &RunSpec) -> (&'a Trace, &'a InputFile) {
    let (_, _, trace, file) = traces
        .iter()
        .find(|(p, s, _, _)| *p == spec.trace_path && *s == spec.seed)
        .expect("every run's trace is loaded");
    (trace, file)
}

/// `trace` with its arrival rate multiplied by `load` (every submit time divided by it).
pub fn scale_load(trace: &Trace, load: f64) -> Trace {
    let mut t = trace.clone();
    if load != 1.0 {
        for j in &mut t.jobs {
            j.submit_time /= load;
        }
    }
    t
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
    let mut opts = spec.policy_options();
    if spec.sim.match_block.is_none() && cluster.num_gpus() > 256 {
        // As `simulate` does: exact matching per event is too slow on large clusters.
        opts.match_block = 32;
    }
    let scaled;
    let trace = if spec.load == 1.0 {
        trace
    } else {
        scaled = scale_load(trace, spec.load);
        &scaled
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

/// (trace, policy, flags) → (wall_s, events) rows of an earlier summary.csv.
type PreviousWalls = Vec<((String, String, String), (f64, usize))>;

/// The rows of an earlier summary.csv under `out`, so that a resumed sweep's summary keeps
/// the run times of the runs it skips.
fn previous_walls(out: &Path) -> PreviousWalls {
    let Ok(text) = std::fs::read_to_string(out.join("summary.csv")) else {
        return Vec::new();
    };
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let Ok(headers) = reader.headers().cloned() else {
        return Vec::new();
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(t), Some(p), Some(f), Some(w), Some(e)) = (
        col("trace"),
        col("policy"),
        col("flags"),
        col("wall_s"),
        col("events"),
    ) else {
        return Vec::new();
    };
    reader
        .records()
        .flatten()
        .filter_map(|r| {
            let key = (r.get(t)?.into(), r.get(p)?.into(), r.get(f)?.into());
            Some((key, (r.get(w)?.parse().ok()?, r.get(e)?.parse().ok()?)))
        })
        .collect()
}

/// The result of a run a previous sweep finished (its `job.csv` exists), or `None`.
fn finished_run(
    spec: &RunSpec,
    out: &Path,
    walls: &PreviousWalls,
) -> anyhow::Result<Option<RunResult>> {
    let job_csv = out.join(spec.dir()).join("job.csv");
    if !job_csv.is_file() {
        return Ok(None);
    }
    let records = output::read_job_csv(&job_csv)?;
    let Some(summary) = Summary::from_records(&records) else {
        return Ok(None);
    };
    let key = (spec.trace_name.clone(), spec.policy.clone(), spec.flags());
    let (wall_seconds, events) = walls
        .iter()
        .find(|(k, _)| *k == key)
        .map_or((0.0, 0), |(_, v)| *v);
    let cluster_csv = out.join(spec.dir()).join("cluster.csv");
    let gpu_utilisation = if cluster_csv.is_file() {
        output::gpu_utilisation(&output::read_cluster_csv(&cluster_csv)?)
    } else {
        None
    };
    tracing::info!("{}: finished earlier, skipped", job_csv.display());
    Ok(Some(RunResult {
        spec: spec.clone(),
        summary,
        gpu_utilisation,
        wall_seconds,
        events,
    }))
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
    let mut md = markdown_table(results, baseline);
    let seeds = seed_groups(results, baseline);
    if !seeds.is_empty() {
        md.push_str(&seed_markdown(&seeds, baseline));
        let path = out.join("summary-seeds.csv");
        std::fs::write(&path, seed_csv(&seeds))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let path = out.join("summary.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
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
                    && b.spec.flags_without_seed().is_empty()
                    && b.spec.seed == r.spec.seed
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

/// Mean and 95 % confidence half-width (Student t, n − 1 degrees of freedom) of `values`;
/// the half-width is `None` for fewer than two values.
pub fn mean_ci95(values: &[f64]) -> (f64, Option<f64>) {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let t = StudentsT::new(0.0, 1.0, n - 1.0)
        .expect("n ≥ 2 gives a valid distribution")
        .inverse_cdf(0.975);
    (mean, Some(t * (var / n).sqrt()))
}

/// Replicates over seeds of one (trace, policy, flags without the seed).
#[derive(Debug, Clone)]
pub struct SeedGroup {
    pub trace: String,
    pub policy: String,
    pub flags: String,
    pub seeds: Vec<u64>,
    /// Per metric (avg JCT, makespan, 99th JCT): mean and 95 % half-width of the values, and
    /// of the per-seed ratios to the baseline (same trace, seed and flags) where it ran.
    pub metrics: [(f64, Option<f64>); 3],
    pub ratios: [Option<(f64, Option<f64>)>; 3],
}

/// A summary metric's value.
type MetricOf = fn(&Summary) -> f64;

const SEED_METRICS: [(&str, MetricOf); 3] = [
    ("avg_jct_s", |s| s.avg_jct),
    ("makespan_s", |s| s.makespan),
    ("p99_jct_s", |s| s.p99_jct),
];

/// Groups the seeded runs of `results` into replicates (grid order).
pub fn seed_groups(results: &[RunResult], baseline: &str) -> Vec<SeedGroup> {
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for r in results.iter().filter(|r| r.spec.seed.is_some()) {
        let k = (
            r.spec.trace_name.clone(),
            r.spec.policy.clone(),
            r.spec.flags_without_seed(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(trace, policy, flags)| {
            let members: Vec<&RunResult> = results
                .iter()
                .filter(|r| {
                    r.spec.seed.is_some()
                        && r.spec.trace_name == trace
                        && r.spec.policy == policy
                        && r.spec.flags_without_seed() == flags
                })
                .collect();
            let base_of = |r: &RunResult| {
                results.iter().find(|b| {
                    b.spec.trace_name == r.spec.trace_name
                        && b.spec.policy == baseline
                        && b.spec.seed == r.spec.seed
                        && b.spec.flags_without_seed().is_empty()
                })
            };
            let metrics = SEED_METRICS.map(|(_, f)| {
                mean_ci95(&members.iter().map(|r| f(&r.summary)).collect::<Vec<_>>())
            });
            let ratios = SEED_METRICS.map(|(_, f)| {
                let r: Option<Vec<f64>> = members
                    .iter()
                    .map(|r| base_of(r).map(|b| f(&r.summary) / f(&b.summary)))
                    .collect();
                r.map(|v| mean_ci95(&v))
            });
            SeedGroup {
                seeds: members.iter().filter_map(|r| r.spec.seed).collect(),
                trace,
                policy,
                flags,
                metrics,
                ratios,
            }
        })
        .collect()
}

fn pm(v: (f64, Option<f64>), decimals: usize) -> String {
    match v.1 {
        Some(h) => format!("{:.*} ± {:.*}", decimals, v.0, decimals, h),
        None => format!("{:.*}", decimals, v.0),
    }
}

/// The replicates as a Markdown section: mean ± 95 % CI over seeds.
pub fn seed_markdown(groups: &[SeedGroup], baseline: &str) -> String {
    let b = crate::policy::display_name(baseline);
    let mut md = format!(
        "\n## Mean ± 95 % confidence interval over seeds (Student t)\n\n\
         Ratios are per seed to {b} on the same generated trace, then averaged.\n\n\
         | trace | policy | flags | seeds | avg JCT (s) | ×{b} | makespan (s) | ×{b} | 99th JCT (s) | ×{b} |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for g in groups {
        let ratio = |i: usize| g.ratios[i].map_or("-".to_string(), |r| pm(r, 3));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g.trace,
            crate::policy::display_name(&g.policy),
            g.flags,
            g.seeds.len(),
            pm(g.metrics[0], 1),
            ratio(0),
            pm(g.metrics[1], 1),
            ratio(1),
            pm(g.metrics[2], 1),
            ratio(2),
        ));
    }
    md
}

/// The replicates as CSV: one row per group and metric.
pub fn seed_csv(groups: &[SeedGroup]) -> String {
    let mut csv =
        String::from("trace,policy,flags,seeds,metric,mean,ci95_half,ratio_mean,ratio_ci95_half\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    for g in groups {
        for (i, (name, _)) in SEED_METRICS.iter().enumerate() {
            csv.push_str(&format!(
                "{},{},{},{},{name},{:.6},{},{},{}\n",
                g.trace,
                g.policy,
                g.flags,
                g.seeds.len(),
                g.metrics[i].0,
                opt(g.metrics[i].1),
                opt(g.ratios[i].map(|r| r.0)),
                opt(g.ratios[i].and_then(|r| r.1)),
            ));
        }
    }
    csv
}
