//! Evaluation commands: `muri sweep` (a grid of simulations in parallel) and
//! `muri calc --compare` (several runs in one table) and `muri plot` (figures from logs).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use muri::metrics::Summary;
use muri::output;
use muri::plot;
use muri::sweep;

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
    pub jobs: Option<usize>,
}

pub fn run_sweep(args: SweepArgs) -> anyhow::Result<()> {
    let mut sweep = sweep::load(&args.file, args.trace_dir.as_deref())?;
    if let Some(out) = args.out {
        sweep.out = out;
    }
    if let Some(n) = args.jobs {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("--jobs: starting the thread pool")?;
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

/// `muri calc --compare DIR...`: one table, ratios to the first run.
pub fn run_compare(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut rows: Vec<(String, Summary)> = Vec::new();
    for d in dirs {
        let job_csv = if d.is_dir() {
            d.join("job.csv")
        } else {
            d.clone()
        };
        let records = output::read_job_csv(&job_csv)?;
        let s = Summary::from_records(&records)
            .with_context(|| format!("{}: no job rows (did the run finish?)", job_csv.display()))?;
        rows.push((label(d), s));
    }
    let Some((_, base)) = rows.first().cloned() else {
        anyhow::bail!("--compare needs at least one run directory");
    };
    outln!(
        "{:<40} {:>6} {:>14} {:>7} {:>14} {:>7} {:>14} {:>7}",
        "run",
        "jobs",
        "avg JCT (s)",
        "ratio",
        "makespan (s)",
        "ratio",
        "99th JCT (s)",
        "ratio"
    )?;
    for (name, s) in &rows {
        outln!(
            "{:<40} {:>6} {:>14.1} {:>7.3} {:>14.1} {:>7.3} {:>14.1} {:>7.3}",
            name,
            s.jobs,
            s.avg_jct,
            s.avg_jct / base.avg_jct,
            s.makespan,
            s.makespan / base.makespan,
            s.p99_jct,
            s.p99_jct / base.p99_jct
        )?;
    }
    Ok(())
}

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
    /// Image formats, comma-separated: png, svg.
    #[arg(long, default_value = "png,svg")]
    pub format: String,
    /// Policy the bar charts are normalised to (name such as
    /// `multi-resource-blossom-same-gpu`, a run directory name, or a paper name such as
    /// `Muri-L`). Default: Muri-S if present, else Muri-L, else the first policy.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Draw the cluster timeline of only this run (`TRACE/POLICY`, repeatable; `none` for no
    /// timelines). Default: one timeline per run.
    #[arg(long, value_name = "TRACE/POLICY")]
    pub timeline: Vec<String>,
}

/// `muri plot DIR`: bar charts, CDFs and timelines from the logs under DIR.
pub fn run_plot(args: PlotArgs) -> anyhow::Result<()> {
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
    let opts = plot::PlotOptions {
        out: args.out.unwrap_or_else(|| args.dir.join("plots")),
        formats: plot::Format::parse_list(&args.format)?,
        baseline: args.baseline,
        timelines,
    };
    let report = plot::plot_dir(&args.dir, &opts)?;
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
