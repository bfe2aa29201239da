//! `muri trace import` (published cluster traces → trace CSV) and `muri trace stats`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use muri::cluster::ClusterSpec;
use muri::models::Catalogue;
use muri::trace::Trace;
use muri::trace_import::{self, Format, ImportOptions, TraceStats};

#[derive(Args)]
pub struct ImportArgs {
    /// The published format of FILE (see `muri::trace_import` for the columns read).
    #[arg(long, value_enum)]
    format: Format,
    /// Input files: the job logs for philly, helios and acme; pai_job_table.csv and
    /// pai_task_table.csv (and optionally pai_group_tag_table.csv) for pai.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output trace CSV (reference format).
    #[arg(short, long, value_name = "CSV")]
    output: PathBuf,
    /// Keep failed and killed jobs (with the time they held GPUs); default: completed only.
    #[arg(long = "keep-failed", alias = "keep_failed")]
    keep_failed: bool,
    /// Keep jobs submitted at least this many hours after the first submission.
    #[arg(long = "from-hours", alias = "from_hours", value_name = "HOURS")]
    from_hours: Option<f64>,
    /// Keep jobs submitted before this many hours after the first submission.
    #[arg(long = "to-hours", alias = "to_hours", value_name = "HOURS")]
    to_hours: Option<f64>,
    /// Drop jobs needing more GPUs than this (e.g. the simulated cluster's GPU count).
    #[arg(long = "max-gpu", alias = "max_gpu", value_name = "GPUS")]
    max_gpu: Option<u32>,
    /// Seed of the model draw for jobs whose trace names no model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra profiles (same CSV as `trace gen --catalogue`), overriding built-in ones.
    #[arg(long, value_name = "CSV")]
    catalogue: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Trace CSV (full or minimal format).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Cluster spec to state the offered load as a share of its GPUs.
    #[arg(long = "cluster_spec", alias = "cluster-spec", value_name = "CSV")]
    cluster_spec: Option<PathBuf>,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--from-hours", args.from_hours),
        ("--to-hours", args.to_hours),
    ] {
        if v.is_some_and(|h| !h.is_finite() || h < 0.0) {
            anyhow::bail!("{flag} must be a non-negative number of hours");
        }
    }
    let opts = ImportOptions {
        keep_failed: args.keep_failed,
        from_s: args.from_hours.map(|h| h * 3600.0),
        until_s: args.to_hours.map(|h| h * 3600.0),
        max_gpu: args.max_gpu,
        seed: args.seed,
        catalogue: match &args.catalogue {
            Some(path) => Catalogue::with_file(path)?,
            None => Catalogue::default(),
        },
    };
    let name = args
        .output
        .file_stem()
        .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned());
    let (trace, report) = trace_import::import(args.format, &args.files, &opts, &name)?;
    let f = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    trace.write_csv(std::io::BufWriter::new(f))?;
    eprintln!("{report}; wrote {}", args.output.display());
    Ok(())
}

pub fn run_stats(args: StatsArgs) -> anyhow::Result<()> {
    let trace = Trace::from_path(&args.file)?;
    let gpus = args
        .cluster_spec
        .as_deref()
        .map(ClusterSpec::from_path)
        .transpose()?
        .map(|s| s.num_gpus());
    let name = args.file.display().to_string();
    let stats = TraceStats::of(&trace).render(&name, gpus);
    std::io::Write::write_all(&mut std::io::stdout().lock(), stats.as_bytes())?;
    Ok(())
}
