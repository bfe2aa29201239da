//! The `muri` command line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use muri::cluster::ClusterSpec;
use muri::engine::SimResult;
use muri::metrics::Summary;
use muri::models;
use muri::output;
use muri::policy::{PolicyKind, PolicyOptions};
use muri::report::{Report, ReportFormat, RunFigures};
use muri::runinfo::{self, InputFile, RunInfo};
use muri::simulate::simulate_logged;
use muri::trace::Trace;
use muri::tracegen::{self, TraceGenConfig};
use signal_hook::consts::SIGINT;
use signal_hook::iterator::Signals;

/// `println!` that returns the write error instead of panicking, so that a closed pipe
/// (`muri … | head -1`) reaches [`main`], which ends quietly (see [`is_broken_pipe`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod cli_diff;
mod cli_eval;
mod cli_testbed;
mod cli_workloads;

/// The project's default trace and cluster, compiled in so `muri simulate` works anywhere.
const DEFAULT_TRACE: &str = include_str!("../../trace-data/default.csv");
const DEFAULT_CLUSTER: &str = runinfo::DEFAULT_CLUSTER_CSV;

#[derive(Parser)]
#[command(
    name = "muri",
    version,
    about = "Multi-resource interleaving scheduling for deep-learning clusters (simulator and tools)",
    long_about = "muri replays job traces through scheduling policies (Muri-S, Muri-L and their \
ablations, SRTF, SRSF, Tiresias, Themis, AntMan, FIFO) with a simulated clock, and runs the same \
policies on real processes (the testbed: `muri scheduler` + `muri worker`, see run.sh).\n\n\
Quick start:\n  muri simulate                      # default trace, every policy, comparison table\n  \
muri simulate --trace_file T.csv --cluster_spec cluster_spec/n8g8.csv \\\n      \
--schedule multi-resource-blossom-same-gpu --log_path results/muri-s\n  \
muri calc results/muri-s           # avg JCT, makespan, 99th JCT from job.csv\n  \
muri sweep experiments/fig9.toml   # a grid of runs in parallel, summary.csv/md\n  \
muri plot results/fig9             # normalised bars, JCT CDFs, timelines (PNG + SVG)\n  \
muri trace gen --jobs 1000 -o my.csv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace through one or more policies with a simulated clock.
    Simulate(SimulateArgs),
    /// Print avg JCT, makespan and 99th-percentile JCT of a run's job.csv.
    Calc(CalcArgs),
    /// Trace tools.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// List the policies `--schedule` accepts.
    Policies,
    /// Run a grid of simulations (traces × policies × clusters × flags) in parallel.
    Sweep(cli_eval::SweepArgs),
    /// Draw figures (normalised bars, JCT CDFs, cluster timelines) from a directory of runs.
    Plot(cli_eval::PlotArgs),
    /// Compare two decision logs (`--decisions`): exit 0 if identical, 1 if not, 2 on a
    /// read error.
    Diff(cli_diff::DiffArgs),
    /// Testbed: run the scheduler (policy loop, virtual clock, gRPC executor).
    Scheduler(cli_testbed::SchedulerArgs),
    /// Testbed: run a worker daemon that launches job groups on its GPUs.
    Worker(cli_testbed::WorkerArgs),
    /// Testbed: queue a job on a running scheduler and print its id.
    Submit(cli_testbed::SubmitArgs),
    /// Testbed: list a running scheduler's jobs.
    Status(cli_testbed::StatusArgs),
    /// Testbed: cancel a job.
    Cancel(cli_testbed::CancelArgs),
    /// Testbed: TLS certificates for a test run.
    Tls {
        #[command(subcommand)]
        command: cli_testbed::TlsCommand,
    },
    /// Synthetic data sets for the real (tch) workloads.
    Data {
        #[command(subcommand)]
        command: cli_workloads::DataCommand,
    },
    /// Measure a job's stage times alone (trace units), optionally next to an interleaved
    /// pair; needs muri-trainer built with `--features torch`.
    ///
    /// Example: `muri profile --model resnet18 --batch 32 --with gpt2:8 --append`
    Profile(cli_workloads::ProfileArgs),
}

#[derive(Args)]
struct SimulateArgs {
    /// Trace CSV (reference format, times in ms). Default: the project's trace-data/default.csv.
    #[arg(long = "trace_file", alias = "trace-file", value_name = "CSV")]
    trace_file: Option<PathBuf>,
    /// Cluster spec CSV (num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node).
    /// Default: cluster_spec/n8g8.csv (8 nodes × 8 GPUs).
    #[arg(long = "cluster_spec", alias = "cluster-spec", value_name = "CSV")]
    cluster_spec: Option<PathBuf>,
    /// Policy name, a comma-separated list, or `all`: reference names (`shortest`) or paper
    /// names (`SRTF`, `Muri-S`), in any case. See `muri policies`.
    #[arg(long, default_value = "all", value_name = "POLICY[,POLICY..]")]
    schedule: String,
    /// Write job.csv, cluster.csv and run.json here (one sub-directory per policy when
    /// several run). Checked for writability before the run starts.
    #[arg(long = "log_path", alias = "log-path", value_name = "DIR")]
    log_path: Option<PathBuf>,
    /// Overwrite runs already in --log_path.
    #[arg(long)]
    force: bool,
    /// How the results are printed: a table, CSV or JSON.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// Most jobs interleaved in one group (2, 3 or 4).
    #[arg(long = "packing_num", alias = "packing-num", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=4))]
    packing_num: u8,
    /// Number of pipeline stages M in the interleaving model.
    #[arg(long = "multi_resource", alias = "multi-resource", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    multi_resource: u8,
    /// Edge threshold factor λ: pairs with used ratio ≤ λ·jobs/M are not grouped.
    #[arg(long = "weight_lbd", alias = "weight-lbd", default_value_t = 0.0)]
    weight_lbd: f64,
    /// Split groups that run slower than their members back to back (default on).
    #[arg(long, overrides_with = "noautopack")]
    autopack: bool,
    /// Turn autopack off.
    #[arg(long, overrides_with = "autopack")]
    noautopack: bool,
    /// Match at most this many candidate groups exactly (blossom); longer lists are matched
    /// greedily by profile class. Default: 256 (always exact on the paper's 64-GPU cluster),
    /// or 32 on clusters of more than 256 GPUs, where exact matching per event is too slow.
    #[arg(long = "match_block", alias = "match-block",
          value_parser = clap::value_parser!(u32).range(2..))]
    match_block: Option<u32>,
    /// Placement scheme; only `yarn` (the paper's) is implemented.
    #[arg(long, default_value = "yarn")]
    scheme: String,
    /// Accepted for compatibility with the reference's scripts; has no effect.
    #[arg(long, hide = true)]
    print: bool,
    /// Write the decision log (one line per job start, stop, regroup and finish) here; needs
    /// a single --schedule policy. Compare logs with `muri diff`.
    #[arg(long, value_name = "CSV")]
    decisions: Option<PathBuf>,
}

#[derive(Args)]
struct CalcArgs {
    /// A run directory holding job.csv (or the job.csv itself), or a directory of runs (as
    /// `muri simulate --log_path` writes for several policies), which are then compared.
    #[arg(required_unless_present = "compare")]
    path: Option<PathBuf>,
    /// Compare several run directories in one table, with ratios to the baseline (Muri-S when
    /// present, else Muri-L, else the first).
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with = "path")]
    compare: Vec<PathBuf>,
    /// Compare runs even when their run.json files show different traces or clusters.
    #[arg(long = "allow_mixed", alias = "allow-mixed")]
    allow_mixed: bool,
    /// How the results are printed: a table, CSV or JSON.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Generate a synthetic trace in the reference format from the model catalogue.
    Gen(GenArgs),
}

#[derive(Args)]
struct GenArgs {
    /// Number of jobs.
    #[arg(long, default_value_t = 800)]
    jobs: usize,
    /// Random seed (same seed, same trace).
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Mean seconds between arrivals (Poisson); 0 puts every job at t = 0.
    #[arg(
        long = "interarrival",
        default_value_t = 7200.0,
        value_name = "SECONDS"
    )]
    interarrival: f64,
    /// GPU-count mix as GPUS:WEIGHT pairs (default: the paper's trace1 mix).
    #[arg(long = "gpu-mix", alias = "gpu_mix", default_value = tracegen::DEFAULT_GPU_MIX)]
    gpu_mix: String,
    /// Models to draw from (comma list; default all eight of the paper).
    #[arg(long)]
    models: Option<String>,
    /// Extra profiles (CSV with model,num_gpu,batch_size,iteration_time,resource_time_0..2,
    /// e.g. written by `muri profile --append`); they override built-in ones.
    #[arg(long, value_name = "CSV")]
    catalogue: Option<PathBuf>,
    /// Median job duration in hours (log-normal).
    #[arg(long = "median-hours", alias = "median_hours", default_value_t = 4.0)]
    median_hours: f64,
    /// σ of the log-normal duration (trace1's is about 3.3).
    #[arg(
        long = "duration-sigma",
        alias = "duration_sigma",
        default_value_t = 3.2
    )]
    duration_sigma: f64,
    /// Output file (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour escapes only for a terminal, not in logs redirected to a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Diff(args) => return cli_diff::run_diff(&args),
        Command::Simulate(args) => run_simulate(args),
        Command::Calc(args) => run_calc_command(args),
        Command::Sweep(args) => cli_eval::run_sweep(args),
        Command::Plot(args) => cli_eval::run_plot(args),
        Command::Trace {
            command: TraceCommand::Gen(args),
        } => run_trace_gen(args),
        Command::Scheduler(args) => cli_testbed::run_scheduler(args),
        Command::Worker(args) => cli_testbed::run_worker(args),
        Command::Submit(args) => cli_testbed::run_submit(args),
        Command::Status(args) => cli_testbed::run_status(args),
        Command::Cancel(args) => cli_testbed::run_cancel(args),
        Command::Tls { command } => cli_testbed::run_tls(command),
        Command::Data { command } => cli_workloads::run_data(command),
        Command::Profile(args) => cli_workloads::run_profile(args),
        Command::Policies => PolicyKind::ALL
            .iter()
            .try_for_each(|kind| {
                outln!(
                    "{:<55} {:<17} {}",
                    kind.name(),
                    kind.paper_name(),
                    kind.description()
                )
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a closed pipe: the reader (`head`) has what it wanted,
/// so the command ends quietly with success.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        // The csv writer wraps the write error without exposing it as a `source`.
        let from_csv = cause
            .downcast_ref::<csv::Error>()
            .and_then(|c| match c.kind() {
                csv::ErrorKind::Io(io) => Some(io),
                _ => None,
            });
        cause
            .downcast_ref::<std::io::Error>()
            .or(from_csv)
            .is_some_and(broken)
    })
}

/// Runs announced on Ctrl-C: the finished policies' rows, kept where the signal thread can
/// print them.
type Finished = Arc<Mutex<Vec<RunFigures>>>;

/// On SIGINT (Ctrl-C), prints the rows of the policies already finished and exits 130, so
/// an interrupted `muri simulate` of every policy still shows what it computed.
fn print_finished_on_interrupt(finished: Finished, total: usize, format: ReportFormat) {
    let Ok(mut signals) = Signals::new([SIGINT]) else {
        tracing::warn!("cannot watch for Ctrl-C; an interrupted run prints nothing");
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let done = finished.lock().map(|mut f| std::mem::take(&mut *f));
            let done = done.unwrap_or_default();
            eprintln!("\ninterrupted: {} of {total} policies finished", done.len());
            if !done.is_empty() {
                let _ = write!(
                    std::io::stdout().lock(),
                    "{}",
                    Report::new(done).render(format)
                );
            }
            let _ = std::io::stdout().flush();
            std::process::exit(130);
        }
    });
}

/// Where each policy's logs go: DIR itself for one policy, DIR/<policy> for several.
fn log_dirs(log_path: Option<&Path>, kinds: &[PolicyKind]) -> Vec<Option<PathBuf>> {
    kinds
        .iter()
        .map(|k| {
            log_path.map(|dir| {
                if kinds.len() == 1 {
                    dir.to_path_buf()
                } else {
                    dir.join(k.name())
                }
            })
        })
        .collect()
}

/// Fails before any simulation when a log directory cannot be created or written, or
/// already holds a run (unless `force`).
fn check_log_dirs(dirs: &[PathBuf], force: bool) -> anyhow::Result<()> {
    runinfo::refuse_overwrite(dirs, force)?;
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--log_path: creating {}", dir.display()))?;
        let probe = dir.join(".muri-write-check");
        std::fs::write(&probe, b"")
            .with_context(|| format!("--log_path: {} is not writable", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if args.scheme != "yarn" {
        bail!(
            "--scheme {}: only `yarn` placement is implemented (the paper uses yarn)",
            args.scheme
        );
    }
    let kinds = PolicyKind::parse_list(&args.schedule).context("--schedule")?;
    let (trace, trace_file) = match &args.trace_file {
        Some(p) => (Trace::from_path(p)?, InputFile::of_path(p)?),
        None => (
            Trace::parse(
                DEFAULT_TRACE,
                Path::new("trace-data/default.csv"),
                "default".into(),
            )?,
            InputFile::of_bytes("trace-data/default.csv", DEFAULT_TRACE.as_bytes()),
        ),
    };
    let (spec, cluster_file) = match &args.cluster_spec {
        Some(p) => (ClusterSpec::from_path(p)?, InputFile::of_path(p)?),
        None => (
            ClusterSpec::parse(DEFAULT_CLUSTER, Path::new("cluster_spec/n8g8.csv"))?,
            runinfo::default_cluster_file(),
        ),
    };
    if args.decisions.is_some() && kinds.len() != 1 {
        bail!("--decisions needs a single --schedule policy");
    }
    let opts = PolicyOptions {
        packing_num: args.packing_num as usize,
        multi_resource: args.multi_resource as usize,
        weight_lbd: args.weight_lbd,
        autopack: !args.noautopack,
        match_block: args
            .match_block
            .map(|b| b as usize)
            .unwrap_or(if spec.num_gpus() > 256 { 32 } else { 256 }),
    };
    let dirs = log_dirs(args.log_path.as_deref(), &kinds);
    check_log_dirs(
        &dirs.iter().flatten().cloned().collect::<Vec<_>>(),
        args.force,
    )?;
    eprintln!(
        "trace {} ({} jobs) on {} GPUs ({} nodes × {})",
        trace.name,
        trace.jobs.len(),
        spec.num_gpus(),
        spec.num_nodes(),
        spec.num_gpu_p_node
    );
    let finished: Finished = Arc::default();
    print_finished_on_interrupt(finished.clone(), kinds.len(), args.format);
    let mut single = None;
    for (&kind, dir) in kinds.iter().zip(&dirs) {
        let mut info = RunInfo::new(
            trace_file.clone(),
            trace.jobs.len(),
            cluster_file.clone(),
            kind.name(),
            run_options(&args, &opts),
        );
        let result = simulate_with_progress(&trace, spec, kind, opts, args.decisions.is_some())?;
        if let (Some(path), Some(log)) = (&args.decisions, &result.decisions) {
            log.write(path)?;
        }
        if let Some(dir) = dir {
            output::write_logs(dir, &result)?;
            info.wall_seconds = result.wall_seconds;
            info.write(dir)?;
        }
        if result.unfinished > 0 {
            eprintln!(
                "warning: {}: {} jobs never finished (the cluster cannot run them)",
                kind.paper_name(),
                result.unfinished
            );
        }
        let Some(summary) = Summary::from_records(&result.jobs) else {
            eprintln!("warning: {}: no job finished", kind.paper_name());
            continue;
        };
        finished
            .lock()
            .map_err(|_| anyhow::anyhow!("result list poisoned"))?
            .push(RunFigures {
                label: kind.paper_name().to_string(),
                policy: Some(kind),
                summary,
                gpu_utilisation: output::gpu_utilisation(&result.cluster),
                wall_s: Some(result.wall_seconds),
            });
        single = Some(result);
    }
    let rows = std::mem::take(
        &mut *finished
            .lock()
            .map_err(|_| anyhow::anyhow!("result list poisoned"))?,
    );
    match (kinds.len(), args.format, single) {
        (1, ReportFormat::Table, Some(result)) => {
            let s = rows.first().context("no job finished")?.summary;
            outln!("{}", s.calc_line())?;
            print_extra(&s, &result)?;
        }
        (1, ReportFormat::Table, None) => bail!("no job finished"),
        _ => write!(
            std::io::stdout().lock(),
            "{}",
            Report::new(rows).render(args.format)
        )?,
    }
    Ok(())
}

/// Every option of a simulate run after defaults, by flag name, for run.json.
fn run_options(args: &SimulateArgs, opts: &PolicyOptions) -> BTreeMap<String, String> {
    let path_or_default = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("(default)".to_string(), |p| p.display().to_string())
    };
    [
        ("trace_file", path_or_default(&args.trace_file)),
        ("cluster_spec", path_or_default(&args.cluster_spec)),
        ("schedule", args.schedule.clone()),
        ("log_path", path_or_default(&args.log_path)),
        ("packing_num", opts.packing_num.to_string()),
        ("multi_resource", opts.multi_resource.to_string()),
        ("weight_lbd", opts.weight_lbd.to_string()),
        ("autopack", opts.autopack.to_string()),
        ("match_block", opts.match_block.to_string()),
        ("scheme", args.scheme.clone()),
        ("force", args.force.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn simulate_with_progress(
    trace: &Trace,
    spec: ClusterSpec,
    kind: PolicyKind,
    opts: PolicyOptions,
    decisions: bool,
) -> anyhow::Result<SimResult> {
    let bar =
        ProgressBar::with_draw_target(Some(trace.jobs.len() as u64), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>18} [{bar:30}] {pos}/{len} jobs done, {elapsed} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(kind.paper_name().to_string());
    let started = Instant::now();
    let mut shown = false;
    let interactive = std::io::stderr().is_terminal();
    let mut progress = |done: usize, _total: usize| {
        if !shown && interactive && started.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_position(done as u64);
    };
    let result = simulate_logged(
        trace,
        spec,
        kind.name(),
        opts,
        Some(&mut progress),
        decisions,
    )?;
    bar.finish_and_clear();
    Ok(result)
}

fn print_extra(s: &Summary, r: &SimResult) -> std::io::Result<()> {
    outln!(
        "p50 JCT: {:.1} s, p90 JCT: {:.1} s, p99.9 JCT: {:.1} s, mean queueing delay: {:.1} s, preemptions: {}",
        s.p50_jct, s.p90_jct, s.p999_jct, s.avg_queueing_delay, s.preemptions
    )?;
    if let Some(u) = output::gpu_utilisation(&r.cluster) {
        outln!("GPU utilisation: {:.1} %", u * 100.0)?;
    }
    outln!("events: {}, wall time: {:.3} s", r.events, r.wall_seconds)
}

/// `muri calc PATH`: one run's figures, or, on a directory of runs, their comparison.
fn run_calc_command(args: CalcArgs) -> anyhow::Result<()> {
    let Some(path) = args.path else {
        return cli_eval::run_compare(&args.compare, args.allow_mixed, args.format);
    };
    if path.is_dir() && !path.join("job.csv").exists() {
        let runs = cli_eval::run_subdirs(&path)?;
        if runs.is_empty() {
            bail!(
                "{}: no job.csv here or in its sub-directories (give a run directory, or \
                 compare runs with `muri calc --compare DIR...`)",
                path.display()
            );
        }
        return cli_eval::run_compare(&runs, args.allow_mixed, args.format);
    }
    run_calc(&path, args.format)
}

fn run_calc(path: &Path, format: ReportFormat) -> anyhow::Result<()> {
    let (job_csv, dir) = if path.is_dir() {
        (path.join("job.csv"), path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let records = output::read_job_csv(&job_csv)?;
    let s = Summary::from_records(&records)
        .with_context(|| format!("{}: no job rows (did the run finish?)", job_csv.display()))?;
    let cluster_csv = dir.join("cluster.csv");
    let utilisation = if cluster_csv.exists() {
        output::gpu_utilisation(&output::read_cluster_csv(&cluster_csv)?)
    } else {
        None
    };
    if format != ReportFormat::Table {
        let figures = cli_eval::run_figures(&dir, &job_csv, s, utilisation)?;
        write!(
            std::io::stdout().lock(),
            "{}",
            Report::new(vec![figures]).render(format)
        )?;
        return Ok(());
    }
    outln!("{}", s.calc_line())?;
    outln!(
        "p50 JCT: {:.1} s, p90 JCT: {:.1} s, p99.9 JCT: {:.1} s, mean queueing delay: {:.1} s, preemptions: {}",
        s.p50_jct, s.p90_jct, s.p999_jct, s.avg_queueing_delay, s.preemptions
    )?;
    if let Some(u) = utilisation {
        outln!("GPU utilisation: {:.1} %", u * 100.0)?;
    }
    Ok(())
}

fn run_trace_gen(args: GenArgs) -> anyhow::Result<()> {
    let mut cfg = TraceGenConfig {
        jobs: args.jobs,
        seed: args.seed,
        mean_interarrival_s: args.interarrival,
        gpu_mix: tracegen::parse_mix(&args.gpu_mix).context("--gpu-mix")?,
        median_duration_s: args.median_hours * 3600.0,
        duration_sigma: args.duration_sigma,
        catalogue: match &args.catalogue {
            Some(path) => models::Catalogue::with_file(path)?,
            None => models::Catalogue::default(),
        },
        ..TraceGenConfig::default()
    };
    if let Some(models) = &args.models {
        cfg.model_mix = models
            .split(',')
            .map(|m| (m.trim().to_string(), 1.0))
            .collect();
    }
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let name = args
        .output
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "generated".into());
    let trace = tracegen::generate(&cfg, &name)?;
    match &args.output {
        Some(p) => {
            let f =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            trace.write_csv(std::io::BufWriter::new(f))?;
            eprintln!("wrote {} jobs to {}", trace.jobs.len(), p.display());
        }
        None => trace.write_csv(std::io::stdout().lock())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag of every subcommand, with the subcommand's path.
    fn all_flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_has_help_and_both_spellings() {
        let cmd = Cli::command();
        let mut flags = Vec::new();
        all_flags(&cmd, "muri", &mut flags);
        let mut problems = Vec::new();
        for (path, arg) in &flags {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() {
                problems.push(format!("{path}: `{id}` has no help text"));
            }
            let Some(long) = arg.get_long() else { continue };
            let names: Vec<&str> = arg
                .get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .chain([long])
                .collect();
            for name in &names {
                for other in [name.replace('_', "-"), name.replace('-', "_")] {
                    if !names.contains(&other.as_str()) {
                        problems.push(format!("{path}: --{name} has no --{other}"));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn no_flag_name_means_two_things() {
        // `--jobs` is a job count (trace gen); a sweep's thread count is `--threads`.
        let cmd = Cli::command();
        let sweep = cmd.find_subcommand("sweep").unwrap();
        assert!(sweep.get_arguments().all(|a| a.get_long() != Some("jobs")));
        assert!(sweep
            .get_arguments()
            .any(|a| a.get_long() == Some("threads")));
    }
}
