//! Evaluation commands: `muri sweep` (a grid of simulations in parallel) and
//! `muri calc --compare` (several runs in one table) and `muri plot` (figures from logs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use muri::metrics::Summary;
use muri::output;
use muri::plot;
use muri::policy::PolicyKind;
use muri::report::{Report, ReportFormat, RunFigures};
use muri::runinfo::{self, RunInfo, RunOrigin};
use muri::sweep::{self, SweepRecord};

#[derive(Args)]
pub struct SweepArgs {
    /// Sweep file (TOML): traces × policies × clusters × flags; see experiments/*.toml.
    pub file: PathBuf,
    /// Output directory (overrides the file's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory of bare trace names (overrides the file's `trace_dir`; default
    /// ../shared/traces/muri-sim).
    #[arg(long = "trace-dir", alias = "trace_dir")]
    pub trace_dir: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Overwrite runs already in the output directory.
    #[arg(long)]
    pub force: bool,
    /// Skip runs whose job.csv an earlier sweep into the same directory already wrote.
    #[arg(long)]
    pub resume: bool,
}

pub fn run_sweep(args: SweepArgs) -> anyhow::Result<()> {
    let mut sweep = sweep::load(&args.file, args.trace_dir.as_deref())?;
    if let Some(out) = args.out {
        sweep.out = out;
    }
    sweep.force = args.force;
    sweep.resume = args.resume;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("--threads: starting the thread pool")?;
    }
    let bar = ProgressBar::new(sweep.runs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {pos}/{len} runs {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let results = sweep::run(&sweep, &|spec| {
        bar.set_message(spec.dir().display().to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    outln!(
        "{}",
        sweep::markdown_table(&results, &sweep.baseline).trim_end()
    )?;
    eprintln!(
        "{} runs in {:.1} s; logs, summary.csv and summary.md under {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        sweep.out.display()
    );
    Ok(())
}

/// `muri calc --compare DIR...` (and `muri calc DIR` on a directory of runs): one table,
/// ratios to the baseline (Muri-S when present). Runs whose run.json shows another trace or
/// cluster are refused unless `allow_mixed`.
pub fn run_compare(
    dirs: &[PathBuf],
    allow_mixed: bool,
    format: ReportFormat,
) -> anyhow::Result<()> {
    if dirs.is_empty() {
        anyhow::bail!("--compare needs at least one run directory");
    }
    let labels = run_labels(dirs);
    let mut figures = Vec::new();
    let mut origins = Vec::new();
    for (d, label) in dirs.iter().zip(labels) {
        let (dir, job_csv) = if d.is_dir() {
            (d.clone(), d.join("job.csv"))
        } else {
            (
                d.parent().map(Path::to_path_buf).unwrap_or_default(),
                d.clone(),
            )
        };
        let records = output::read_job_csv(&job_csv)?;
        let s = Summary::from_records(&records)
            .with_context(|| format!("{}: no job rows (did the run finish?)", job_csv.display()))?;
        origins.push(RunOrigin {
            label: d.display().to_string(),
            info: RunInfo::read(&dir)?,
            job_rows: records.len(),
        });
        let cluster_csv = dir.join("cluster.csv");
        let utilisation = if cluster_csv.exists() {
            output::gpu_utilisation(&output::read_cluster_csv(&cluster_csv)?)
        } else {
            None
        };
        let mut f = run_figures(&dir, &job_csv, s, utilisation)?;
        f.label = label;
        figures.push(f);
    }
    for warning in runinfo::check_same_inputs(&origins, allow_mixed)? {
        eprintln!("warning: {warning}");
    }
    write!(
        std::io::stdout().lock(),
        "{}",
        Report::new(figures).render(format)
    )?;
    Ok(())
}

/// The sub-directories of `dir` that hold a job.csv, sorted by name.
pub fn run_subdirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let p = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if p.join("job.csv").is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// One run's figures; its policy comes from run.json, else from the directory name.
pub fn run_figures(
    dir: &Path,
    job_csv: &Path,
    summary: Summary,
    gpu_utilisation: Option<f64>,
) -> anyhow::Result<RunFigures> {
    let from_info = RunInfo::read(dir)?.and_then(|i| PolicyKind::parse(&i.policy).ok());
    let policy = from_info.or_else(|| {
        dir.file_name()
            .and_then(|n| PolicyKind::parse(&n.to_string_lossy()).ok())
    });
    Ok(RunFigures {
        label: policy.map_or_else(|| label(job_csv), |k| k.paper_name().to_string()),
        policy,
        summary,
        gpu_utilisation,
        wall_s: None,
    })
}

/// Row labels: the policies' paper names (or the directory names) when they tell the runs
/// apart, else the last two path components.
fn run_labels(dirs: &[PathBuf]) -> Vec<String> {
    let leaf = |d: &PathBuf| {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PolicyKind::parse(&name).map_or(name, |k| k.paper_name().to_string())
    };
    let leaves: Vec<String> = dirs.iter().map(leaf).collect();
    let mut unique = leaves.clone();
    unique.sort();
    unique.dedup();
    if unique.len() == leaves.len() && !leaves.iter().any(|l| l == "job.csv" || l.is_empty()) {
        leaves
    } else {
        dirs.iter().map(|d| label(d)).collect()
    }
}

/// Runs drawn on one chart must share a trace, and runs with the same flags a cluster.
fn check_plotted_runs(runs: &[plot::Run], allow_mixed: bool) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut traces: Vec<&str> = runs.iter().map(|r| r.trace.as_str()).collect();
    traces.dedup();
    for trace in traces {
        let group: Vec<&plot::Run> = runs.iter().filter(|r| r.trace == trace).collect();
        let origins = group
            .iter()
            .map(|r| {
                Ok(RunOrigin {
                    label: r.dir.display().to_string(),
                    info: RunInfo::read(&r.dir)?,
                    job_rows: r.jobs.len(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        warnings.extend(runinfo::check_same_trace(&origins, allow_mixed)?);
        let mut flags: Vec<&str> = group.iter().map(|r| r.flags.as_str()).collect();
        flags.sort_unstable();
        flags.dedup();
        for f in flags {
            let same_flags: Vec<RunOrigin> = group
                .iter()
                .zip(&origins)
                .filter(|(r, _)| r.flags == f)
                .map(|(_, o)| o.clone())
                .collect();
            warnings.extend(runinfo::check_same_inputs(&same_flags, allow_mixed)?);
        }
    }
    Ok(warnings)
}

/// The last two components of a run's path (`trace3/shortest`).
fn label(d: &Path) -> String {
    let parts: Vec<String> = d
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

#[derive(Args)]
pub struct PlotArgs {
    /// Directory of runs: a sweep's output (`<trace>/<policy>/job.csv`) or a
    /// `muri simulate --log_path` directory (`<policy>/job.csv`).
    pub dir: PathBuf,
    /// Where the figures go (default: DIR/plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Image formats, comma-separated: png, svg, pdf.
    #[arg(long, default_value = "png,svg")]
    pub format: String,
    /// Draw only these policies, in this order (comma-separated; reference names such as
    /// `shortest`, paper names such as `SRTF`, or run directory names such as
    /// `multi-resource-blossom-same-gpu-unaware-p2`). Default: every policy.
    #[arg(long, value_delimiter = ',', value_name = "POLICY,...")]
    pub policies: Option<Vec<String>>,
    /// Draw only these traces, in this order (comma-separated). Default: every trace.
    #[arg(long, value_delimiter = ',', value_name = "TRACE,...")]
    pub traces: Option<Vec<String>>,
    /// Put a title line on each figure (default: none, as papers set captions themselves).
    #[arg(long, overrides_with = "no_title")]
    pub title: bool,
    /// No title line on the figures (the default).
    #[arg(long = "no_title", alias = "no-title", overrides_with = "title")]
    pub no_title: bool,
    /// Draw Figures 9-13 of the Muri paper in its layout (one file per figure:
    /// fig9 … fig13, plus paper.csv) from DIR, the output of `muri sweep experiments/all.toml`.
    #[arg(long, conflicts_with_all = ["policies", "traces", "baseline", "timeline"])]
    pub paper: bool,
    /// Policy the bar charts are normalised to (name such as
    /// `multi-resource-blossom-same-gpu`, a run directory name, or a paper name such as
    /// `Muri-L`). Default: Muri-S if present, else Muri-L, else the first policy.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Draw the cluster timeline of only this run (`TRACE/POLICY`, repeatable; `none` for no
    /// timelines). Default: one timeline per run.
    #[arg(long, value_name = "TRACE/POLICY")]
    pub timeline: Vec<String>,
    /// Plot runs side by side even when their run.json files show different traces (or, for
    /// runs with the same flags, different clusters).
    #[arg(long = "allow_mixed", alias = "allow-mixed")]
    pub allow_mixed: bool,
    /// DIR is a testbed run folder, or a folder of them (`results` of `run.sh`): draw only
    /// the utilisation timeline per resource, one panel per run (`testbed-timeline.*`).
    #[arg(long)]
    pub testbed: bool,
}

/// `muri plot DIR`: bar charts, CDFs and timelines from the logs under DIR.
pub fn run_plot(args: PlotArgs) -> anyhow::Result<()> {
    if args.testbed {
        let out = args.out.unwrap_or_else(|| args.dir.join("plots"));
        let formats = plot::Format::parse_list(&args.format)?;
        for path in muri::plot_timeline::plot_testbed(&args.dir, &out, &formats)? {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let timelines = if args.timeline.is_empty() {
        None
    } else {
        Some(
            args.timeline
                .into_iter()
                .filter(|t| t != "none")
                .collect::<Vec<_>>(),
        )
    };
    // A sweep's own baseline unless the command line names another.
    let baseline = match args.baseline {
        Some(b) => Some(b),
        None => SweepRecord::read(&args.dir)?.map(|r| r.baseline),
    };
    let opts = plot::PlotOptions {
        out: args.out.unwrap_or_else(|| args.dir.join("plots")),
        formats: plot::Format::parse_list(&args.format)?,
        baseline,
        timelines,
        policies: args.policies,
        traces: args.traces,
        title: args.title && !args.no_title,
    };
    let runs = plot::discover_runs(&args.dir)?;
    for warning in check_plotted_runs(&runs, args.allow_mixed)? {
        eprintln!("warning: {warning}");
    }
    if args.paper {
        let report = plot::paper::plot_paper(&runs, &opts)?;
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "{} files under {} (Figures 9-13 of the paper)",
            report.files.len(),
            opts.out.display()
        );
        return Ok(());
    }
    let report = plot::plot_runs(&runs, &opts)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{} files under {} (bars normalised to {})",
        report.files.len(),
        opts.out.display(),
        plot::label_for_key(&report.baseline)
    );
    Ok(())
}
