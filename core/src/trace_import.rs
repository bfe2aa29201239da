//! Public cluster traces in: `muri trace import`, the minimal trace format and `muri trace stats`.
//!
//! Published job logs record what a scheduler saw (GPU count, submission, run time, final
//! status) but not what Muri needs besides (per-iteration stage times). Each job is therefore
//! mapped to the trace format like this:
//!
//! - **GPUs, submission, run time** come from the record; submissions are rebased so that
//!   the first job kept arrives at 0, and jobs are renumbered `0..n` in arrival order.
//! - **Model**: the record's model name where the format has one (PAI's `workload` tag),
//!   mapped to a catalogue model by name ([`catalogue_model`]); otherwise a draw, uniform
//!   over the catalogue's models, from a generator seeded with `seed` and taken in arrival
//!   order, so the same input and seed always give the same trace.
//! - **Stage times** are the catalogue profile of that model on the largest catalogue GPU
//!   count not above the job's (1, 2, 4, 8, 16, 32; the rule the restart overheads use);
//!   the job keeps its own GPU count. `iterations` is the run time over the iteration
//!   time (at least 1), and `duration` is `iterations × iteration_time`, as `trace gen` does.
//! - **Status**: completed jobs are kept; failed and killed jobs only with `keep_failed`
//!   (their run time is the time they held GPUs); jobs without an end (still running or
//!   queued when the log was cut) are always dropped, as are jobs with no GPU or no run time.
//!
//! Formats (the column names of each data set's own documentation):
//! - `philly`: Microsoft Philly `cluster_job_log`, a JSON array of jobs with `jobid`,
//!   `status` (`Pass`, `Killed`, `Failed`), `submitted_time` and `attempts`, each attempt
//!   with `start_time`, `end_time` and `detail` (`ip`, `gpus`). GPUs are the last attempt's;
//!   run time is the sum over attempts that have both times.
//! - `helios`: SenseTime Helios `cluster_log.csv` (`job_id`, `gpu_num`, `state`,
//!   `submit_time`, `duration` in seconds; `COMPLETED`, `CANCELLED`, `FAILED`, `TIMEOUT`,
//!   `NODE_FAIL`).
//! - `acme`: Shanghai AI Lab Acme `trace_seren.csv` / `trace_kalos.csv` (the Helios
//!   columns, and states such as `OUT_OF_MEMORY`).
//! - `pai`: Alibaba PAI 2020 `pai_job_table.csv` (`job_name`, `inst_id`, `user`, `status`,
//!   `start_time`, `end_time`) with `pai_task_table.csv` (`job_name`, `task_name`,
//!   `inst_num`, `status`, `start_time`, `end_time`, `plan_cpu`, `plan_mem`, `plan_gpu`,
//!   `gpu_type`) and optionally `pai_group_tag_table.csv` (`inst_id`, `user`,
//!   `gpu_type_spec`, `group`, `workload`). The published files have no header line; each
//!   file is recognised by its header if it has one, else by its number of columns. GPUs
//!   are `Σ inst_num × plan_gpu / 100` over the job's tasks, rounded up (`plan_gpu` is a
//!   percentage of one GPU); the job's `start_time` is its submission and its run time
//!   spans its tasks. Times are seconds.
//!
//! Date-times (`2020-04-01 00:00:05`, optionally with fractional seconds or a UTC offset)
//! are read as UTC; plain numbers as seconds.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDateTime};
use rand::{Rng, SeedableRng};

use crate::error::{data_rows, read_input, CsvReader, InputError};
use crate::models::{Catalogue, MeasuredProfile, GPU_SIZES};
use crate::trace::{JobSpec, Trace};

/// The published trace formats `muri trace import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    Philly,
    Helios,
    Pai,
    Acme,
}

/// How a job ended, as far as the import cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Completed,
    /// Failed, timed out, out of memory or lost with its node.
    Failed,
    /// Cancelled or killed by its user.
    Killed,
    /// Still running or queued when the log ends (no run time).
    Unfinished,
}

impl Status {
    fn from_label(label: &str) -> Status {
        match label.trim().to_ascii_lowercase().as_str() {
            "pass" | "completed" | "terminated" | "succeeded" | "success" => Status::Completed,
            "killed" | "cancelled" | "canceled" => Status::Killed,
            "running" | "waiting" | "pending" | "queued" | "" => Status::Unfinished,
            _ => Status::Failed,
        }
    }
}

/// One job of a published trace, in the importer's common terms.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicJob {
    /// The trace's own id (for messages).
    pub id: String,
    pub num_gpu: u32,
    /// Submission, seconds on the trace's clock.
    pub submit_s: f64,
    /// Seconds the job held its GPUs.
    pub run_s: f64,
    pub status: Status,
    /// The trace's model or workload name, if it records one.
    pub model: Option<String>,
}

/// What to keep and how to fill in what the trace lacks.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Keep failed and killed jobs (completed jobs are always kept).
    pub keep_failed: bool,
    /// Keep jobs submitted at least this many seconds after the trace's first submission.
    pub from_s: Option<f64>,
    /// Keep jobs submitted before this many seconds after the trace's first submission.
    pub until_s: Option<f64>,
    /// Drop jobs that need more GPUs than this (e.g. the simulated cluster's size).
    pub max_gpu: Option<u32>,
    /// Seed of the model draw for jobs without a model name.
    pub seed: u64,
    pub catalogue: Catalogue,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            keep_failed: false,
            from_s: None,
            until_s: None,
            max_gpu: None,
            seed: 1,
            catalogue: Catalogue::default(),
        }
    }
}

/// How many jobs an import kept and why it dropped the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    pub read: usize,
    pub kept: usize,
    pub failed_or_killed: usize,
    pub unfinished: usize,
    pub no_gpu_or_run_time: usize,
    pub outside_window: usize,
    pub over_gpu_cap: usize,
    /// Kept jobs whose model came from the trace rather than the seeded draw.
    pub named_models: usize,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} jobs read, {} kept ({} with the trace's model name); dropped: {} failed or killed, \
             {} unfinished, {} without GPUs or run time, {} outside the time window, {} over the GPU cap",
            self.read,
            self.kept,
            self.named_models,
            self.failed_or_killed,
            self.unfinished,
            self.no_gpu_or_run_time,
            self.outside_window,
            self.over_gpu_cap
        )
    }
}

/// Reads the published records of `format` from `files`.
pub fn read_jobs(format: Format, files: &[PathBuf]) -> anyhow::Result<Vec<PublicJob>> {
    if files.is_empty() {
        bail!("no input file given");
    }
    match format {
        Format::Philly => {
            let mut jobs = Vec::new();
            for f in files {
                jobs.extend(read_philly(f)?);
            }
            Ok(jobs)
        }
        Format::Helios | Format::Acme => {
            let mut jobs = Vec::new();
            for f in files {
                jobs.extend(read_slurm_log(f)?);
            }
            Ok(jobs)
        }
        Format::Pai => read_pai(files),
    }
}

/// Reads and converts in one step; `name` becomes the trace's name.
pub fn import(
    format: Format,
    files: &[PathBuf],
    opts: &ImportOptions,
    name: &str,
) -> anyhow::Result<(Trace, ImportReport)> {
    let jobs = read_jobs(format, files)?;
    let source = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    to_trace(jobs, opts, name, &source)
}

/// Turns published records into a trace (see the module doc for the rules).
pub fn to_trace(
    mut jobs: Vec<PublicJob>,
    opts: &ImportOptions,
    name: &str,
    source: &str,
) -> anyhow::Result<(Trace, ImportReport)> {
    let mut report = ImportReport {
        read: jobs.len(),
        ..ImportReport::default()
    };
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    let origin = jobs.first().map_or(0.0, |j| j.submit_s);
    let mut kept = Vec::new();
    for job in jobs {
        let since = job.submit_s - origin;
        match job.status {
            Status::Unfinished => report.unfinished += 1,
            Status::Failed | Status::Killed if !opts.keep_failed => report.failed_or_killed += 1,
            _ if job.num_gpu == 0 || job.run_s.is_nan() || job.run_s <= 0.0 => {
                report.no_gpu_or_run_time += 1
            }
            _ if opts.from_s.is_some_and(|from| since < from)
                || opts.until_s.is_some_and(|until| since >= until) =>
            {
                report.outside_window += 1
            }
            _ if opts.max_gpu.is_some_and(|cap| job.num_gpu > cap) => report.over_gpu_cap += 1,
            _ => kept.push(job),
        }
    }
    if kept.is_empty() {
        bail!("{source}: no job left to import ({report})");
    }
    let mut draw = ModelDraw::new(&opts.catalogue, opts.seed);
    let start = kept[0].submit_s;
    let mut specs = Vec::with_capacity(kept.len());
    for (id, job) in kept.iter().enumerate() {
        let named = job.model.as_deref().and_then(catalogue_model);
        if named.is_some() {
            report.named_models += 1;
        }
        let model = named.map_or_else(|| draw.next(), str::to_string);
        let submit_ms = ((job.submit_s - start) * 1000.0).round();
        specs.push(job_spec(
            id as u64,
            job.num_gpu,
            submit_ms,
            job.run_s * 1000.0,
            &model,
            &opts.catalogue,
        )?);
    }
    report.kept = specs.len();
    Ok((
        Trace {
            name: name.to_string(),
            source: source.to_string(),
            jobs: specs,
            lines: Vec::new(),
        },
        report,
    ))
}

/// A full trace row from the four facts a published record gives (times in ms).
fn job_spec(
    job_id: u64,
    num_gpu: u32,
    submit_ms: f64,
    run_ms: f64,
    model: &str,
    catalogue: &Catalogue,
) -> anyhow::Result<JobSpec> {
    let p = profile_for(catalogue, model, num_gpu)?;
    let iterations = ((run_ms / p.iteration_time).round() as u64).max(1);
    let duration_ms = iterations as f64 * p.iteration_time;
    Ok(JobSpec {
        job_id,
        num_gpu,
        submit_time: submit_ms / 1000.0,
        iterations,
        model_name: p.model.clone(),
        batch_size: p.batch_size,
        duration: duration_ms.trunc() / 1000.0,
        iteration_time_ms: p.iteration_time,
        resource_time_ms: p.resource_time_ms(),
        priority: 0,
    })
}

/// The catalogue profile used for `model` on `num_gpu` GPUs: the largest profiled GPU
/// count not above the job's (the smallest for a job below every profiled count).
fn profile_for(
    catalogue: &Catalogue,
    model: &str,
    num_gpu: u32,
) -> anyhow::Result<MeasuredProfile> {
    let size = GPU_SIZES
        .iter()
        .rev()
        .find(|&&g| g <= num_gpu)
        .copied()
        .unwrap_or(GPU_SIZES[0]);
    catalogue.lookup(model, size).with_context(|| {
        format!(
            "no profile for model `{model}` on {size} GPUs in the catalogue (models: {})",
            catalogue.models().join(", ")
        )
    })
}

/// Maps a trace's model or workload name to one of the paper's models: an exact name, or
/// the family it names (`resnet50` → `resnet18`, `bert-large` → `bert`, `gpt-3` → `gpt2`,
/// `vgg19` → `vgg19`, …). Names of other families give `None` (then the seeded draw decides).
pub fn catalogue_model(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase();
    const FAMILIES: [(&str, &str); 8] = [
        ("vgg19", "vgg19"),
        ("vgg", "vgg16"),
        ("resnet", "resnet18"),
        ("shufflenet", "shufflenet_v2_x1_0"),
        ("bert", "bert"),
        ("gpt", "gpt2"),
        ("a2c", "a2c"),
        ("dqn", "dqn"),
    ];
    FAMILIES
        .iter()
        .find(|(family, _)| n.contains(family))
        .map(|&(_, model)| model)
}

/// The seeded, uniform model draw for jobs whose trace names no model.
struct ModelDraw {
    models: Vec<String>,
    rng: rand::rngs::StdRng,
}

impl ModelDraw {
    fn new(catalogue: &Catalogue, seed: u64) -> ModelDraw {
        ModelDraw {
            models: catalogue.models(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    fn next(&mut self) -> String {
        let i = self.rng.random_range(0..self.models.len());
        self.models[i].clone()
    }
}

// ---------------------------------------------------------------------------------------
// Time stamps

/// Seconds since the Unix epoch of a date-time (`2020-04-01 00:00:05`, `…T…`, fractional
/// seconds, an optional UTC offset) or of a plain number of seconds.
pub fn parse_time(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Ok(v) = t.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.timestamp_millis() as f64 / 1000.0);
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(dt.and_utc().timestamp_millis() as f64 / 1000.0);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Philly

#[derive(serde::Deserialize)]
struct PhillyJob {
    jobid: String,
    status: String,
    submitted_time: Option<String>,
    #[serde(default)]
    attempts: Vec<PhillyAttempt>,
}

#[derive(serde::Deserialize)]
struct PhillyAttempt {
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    detail: Vec<PhillyMachine>,
}

#[derive(serde::Deserialize)]
struct PhillyMachine {
    #[serde(default)]
    gpus: Vec<String>,
}

fn read_philly(file: &Path) -> anyhow::Result<Vec<PublicJob>> {
    let text = read_input(file)?;
    let records: Vec<PhillyJob> = serde_json::from_str(&text).map_err(|e| InputError::BadRow {
        file: file.to_path_buf(),
        line: e.line(),
        message: format!("not a Philly cluster_job_log (a JSON array of jobs): {e}"),
    })?;
    let mut jobs = Vec::with_capacity(records.len());
    for r in records {
        // Philly writes missing times as null or "None".
        let time = |t: &Option<String>| t.as_deref().and_then(parse_time);
        let Some(submit_s) = time(&r.submitted_time) else {
            bail!(
                "{}: job {}: field `submitted_time`: expected a date-time (got {:?})",
                file.display(),
                r.jobid,
                r.submitted_time
            );
        };
        let run_s: f64 = r
            .attempts
            .iter()
            .filter_map(|a| Some(time(&a.end_time)? - time(&a.start_time)?))
            .sum();
        let num_gpu = r
            .attempts
            .last()
            .map_or(0, |a| a.detail.iter().map(|m| m.gpus.len() as u32).sum());
        let mut status = Status::from_label(&r.status);
        if r.attempts.is_empty() || time(&r.attempts[r.attempts.len() - 1].end_time).is_none() {
            status = Status::Unfinished;
        }
        jobs.push(PublicJob {
            id: r.jobid,
            num_gpu,
            submit_s,
            run_s,
            status,
            model: None,
        });
    }
    Ok(jobs)
}

// ---------------------------------------------------------------------------------------
// Helios and Acme (Slurm accounting logs)

/// A CSV file read as rows of named fields, so that errors name file, line and column.
struct Table {
    file: PathBuf,
    columns: Vec<String>,
    /// (line number, fields).
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    /// Reads `file`; `columns` names the fields when the file has no header line (it has
    /// one when its first field equals the first of `columns`).
    fn read(file: &Path, columns: &[&str], has_header: bool) -> anyhow::Result<Table> {
        let text = read_input(file)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut table = Table {
            file: file.to_path_buf(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        };
        for (i, record) in reader.records().enumerate() {
            let line = i + 1;
            let record = record.map_err(|e| InputError::BadRow {
                file: file.to_path_buf(),
                line,
                message: e.to_string(),
            })?;
            if line == 1 && has_header {
                table.columns = record.iter().map(str::to_string).collect();
                continue;
            }
            if record.iter().all(str::is_empty) {
                continue;
            }
            table
                .rows
                .push((line, record.iter().map(str::to_string).collect()));
        }
        if table.rows.is_empty() {
            return Err(InputError::Empty {
                file: file.to_path_buf(),
            }
            .into());
        }
        Ok(table)
    }

    fn column(&self, name: &str) -> anyhow::Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            InputError::MissingColumn {
                file: self.file.clone(),
                column: name.to_string(),
                expected: self.columns.join(","),
            }
            .into()
        })
    }

    fn bad(&self, line: usize, column: usize, value: &str, message: &str) -> anyhow::Error {
        InputError::BadField {
            file: self.file.clone(),
            line,
            field: self.columns[column].clone(),
            value: value.to_string(),
            message: message.to_string(),
        }
        .into()
    }

    fn get<'a>(&self, row: &'a [String], column: usize) -> &'a str {
        row.get(column).map_or("", String::as_str)
    }

    fn number(&self, line: usize, row: &[String], column: usize) -> anyhow::Result<f64> {
        let v = self.get(row, column);
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| self.bad(line, column, v, "expected a non-negative number"))
    }

    /// A time stamp; `None` for an empty field (an unfinished job's end).
    fn time(&self, line: usize, row: &[String], column: usize) -> anyhow::Result<Option<f64>> {
        let v = self.get(row, column);
        if v.is_empty() || v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("nan") {
            return Ok(None);
        }
        parse_time(v)
            .map(Some)
            .ok_or_else(|| self.bad(line, column, v, "expected a date-time or seconds"))
    }
}

/// Helios `cluster_log.csv` and Acme `trace_*.csv`: one row per job, with a header.
fn read_slurm_log(file: &Path) -> anyhow::Result<Vec<PublicJob>> {
    let t = Table::read(file, &[], true)?;
    let [id, gpus, state, submit, duration] =
        ["job_id", "gpu_num", "state", "submit_time", "duration"].map(|c| t.column(c));
    let (id, gpus, state, submit, duration) = (id?, gpus?, state?, submit?, duration?);
    let mut jobs = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let Some(submit_s) = t.time(*line, row, submit)? else {
            return Err(t.bad(*line, submit, "", "a job needs its submission time"));
        };
        let status = Status::from_label(t.get(row, state));
        let run_s = if t.get(row, duration).is_empty() {
            f64::NAN
        } else {
            t.number(*line, row, duration)?
        };
        jobs.push(PublicJob {
            id: t.get(row, id).to_string(),
            num_gpu: t.number(*line, row, gpus)? as u32,
            submit_s,
            run_s,
            status,
            model: None,
        });
    }
    Ok(jobs)
}

// ---------------------------------------------------------------------------------------
// Alibaba PAI 2020

const PAI_JOB: [&str; 6] = [
    "job_name",
    "inst_id",
    "user",
    "status",
    "start_time",
    "end_time",
];
const PAI_TASK: [&str; 10] = [
    "job_name",
    "task_name",
    "inst_num",
    "status",
    "start_time",
    "end_time",
    "plan_cpu",
    "plan_mem",
    "plan_gpu",
    "gpu_type",
];
const PAI_TAG: [&str; 5] = ["inst_id", "user", "gpu_type_spec", "group", "workload"];

/// Which PAI table a file holds, from its header or else its column count.
fn pai_table(file: &Path) -> anyhow::Result<Table> {
    let text = read_input(file)?;
    let first = text.lines().next().unwrap_or("");
    let fields: Vec<&str> = first.split(',').map(str::trim).collect();
    let has_header = fields
        .first()
        .is_some_and(|f| *f == "job_name" || *f == "inst_id");
    let columns: &[&str] = if has_header {
        &[]
    } else {
        match fields.len() {
            6 => &PAI_JOB,
            10 => &PAI_TASK,
            5 => &PAI_TAG,
            n => bail!(
                "{}: line 1: {n} columns, which is none of the PAI tables \
                 (pai_job_table: 6, pai_task_table: 10, pai_group_tag_table: 5)",
                file.display()
            ),
        }
    };
    Table::read(file, columns, has_header)
}

fn read_pai(files: &[PathBuf]) -> anyhow::Result<Vec<PublicJob>> {
    let (mut job_table, mut task_table, mut tag_table) = (None, None, None);
    for f in files {
        let t = pai_table(f)?;
        let slot = if t.columns.iter().any(|c| c == "task_name") {
            &mut task_table
        } else if t.columns.iter().any(|c| c == "workload") {
            &mut tag_table
        } else {
            &mut job_table
        };
        if slot.is_some() {
            bail!("{}: a second file of the same PAI table", f.display());
        }
        *slot = Some(t);
    }
    let jobs = job_table.context("PAI import needs pai_job_table.csv among the files")?;
    let tasks = task_table.context("PAI import needs pai_task_table.csv among the files")?;
    let workloads = match &tag_table {
        Some(t) => pai_workloads(t)?,
        None => HashMap::new(),
    };

    // Per job: GPUs (in percent of one), first task start, last task end.
    let [tj, inst_num, plan_gpu, ts, te] =
        ["job_name", "inst_num", "plan_gpu", "start_time", "end_time"].map(|c| tasks.column(c));
    let (tj, inst_num, plan_gpu, ts, te) = (tj?, inst_num?, plan_gpu?, ts?, te?);
    let mut per_job: HashMap<&str, (f64, Option<f64>, Option<f64>)> = HashMap::new();
    for (line, row) in &tasks.rows {
        let gpu_pct = if tasks.get(row, plan_gpu).is_empty() {
            0.0
        } else {
            tasks.number(*line, row, plan_gpu)?
        };
        let n = tasks.number(*line, row, inst_num)?;
        let entry = per_job
            .entry(tasks.get(row, tj))
            .or_insert((0.0, None, None));
        entry.0 += n * gpu_pct;
        if let Some(s) = tasks.time(*line, row, ts)? {
            entry.1 = Some(entry.1.map_or(s, |x: f64| x.min(s)));
        }
        if let Some(e) = tasks.time(*line, row, te)? {
            entry.2 = Some(entry.2.map_or(e, |x: f64| x.max(e)));
        }
    }

    let [name, inst, status, start, end] =
        ["job_name", "inst_id", "status", "start_time", "end_time"].map(|c| jobs.column(c));
    let (name, inst, status, start, end) = (name?, inst?, status?, start?, end?);
    let mut out = Vec::with_capacity(jobs.rows.len());
    for (line, row) in &jobs.rows {
        let job_name = jobs.get(row, name);
        let Some(submit_s) = jobs.time(*line, row, start)? else {
            return Err(jobs.bad(*line, start, "", "a job needs its start (submission) time"));
        };
        let (gpu_pct, task_start, task_end) = per_job.get(job_name).copied().unwrap_or_default();
        let job_end = jobs.time(*line, row, end)?;
        let run_s = match (task_start, task_end.or(job_end)) {
            (Some(s), Some(e)) => e - s,
            (None, Some(e)) => e - submit_s,
            _ => f64::NAN,
        };
        let mut status = Status::from_label(jobs.get(row, status));
        if job_end.is_none() && task_end.is_none() {
            status = Status::Unfinished;
        }
        out.push(PublicJob {
            id: job_name.to_string(),
            num_gpu: (gpu_pct / 100.0).ceil() as u32,
            submit_s,
            run_s,
            status,
            model: workloads.get(jobs.get(row, inst)).cloned(),
        });
    }
    Ok(out)
}

/// `inst_id` → `workload` of the group tag table (empty workloads left out).
fn pai_workloads(t: &Table) -> anyhow::Result<HashMap<String, String>> {
    let inst = t.column("inst_id")?;
    let workload = t.column("workload")?;
    Ok(t.rows
        .iter()
        .filter(|(_, row)| !t.get(row, workload).is_empty())
        .map(|(_, row)| {
            (
                t.get(row, inst).to_string(),
                t.get(row, workload).to_string(),
            )
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// The minimal trace

/// Columns of the minimal trace that [`Trace::parse`] also accepts: times in milliseconds
/// like the full format; `model_name` optional.
pub const MINIMAL_COLUMNS: [&str; 4] = ["job_id", "num_gpu", "submit_time", "duration"];

/// Seed of the model draw for minimal-trace rows without a `model_name`.
pub const MINIMAL_TRACE_SEED: u64 = 1;

/// True when a header has the minimal trace's columns but not the full format's.
pub(crate) fn is_minimal(headers: &csv::StringRecord) -> bool {
    let has = |name: &str| headers.iter().any(|h| h == name);
    MINIMAL_COLUMNS.iter().all(|c| has(c)) && !has("iterations") && !has("iteration_time")
}

/// Expands a minimal trace's rows with the catalogue: a named model (exact or by family,
/// [`catalogue_model`]) or else the seeded draw ([`MINIMAL_TRACE_SEED`]).
/// Returns (file line, job) in file order.
pub(crate) fn parse_minimal(
    reader: &mut CsvReader<'_>,
    headers: &csv::StringRecord,
    file: &Path,
) -> Result<Vec<(usize, JobSpec)>, InputError> {
    let idx = |name: &str| headers.iter().position(|h| h == name);
    let cols = MINIMAL_COLUMNS.map(|c| idx(c).expect("checked by is_minimal"));
    let model_col = idx("model_name");
    let catalogue = Catalogue::default();
    let mut draw = ModelDraw::new(&catalogue, MINIMAL_TRACE_SEED);
    let mut jobs = Vec::new();
    for row in data_rows(reader, headers, file) {
        let (line, record) = row?;
        let field = |k: usize| record.get(cols[k]).unwrap_or("");
        let bad = |k: usize, message: &str| InputError::BadField {
            file: file.to_path_buf(),
            line,
            field: MINIMAL_COLUMNS[k].to_string(),
            value: field(k).to_string(),
            message: message.to_string(),
        };
        let job_id = field(0)
            .parse::<u64>()
            .map_err(|_| bad(0, "expected a non-negative integer"))?;
        let num_gpu = field(1)
            .parse::<u32>()
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| bad(1, "must be a positive number of GPUs"))?;
        let ms = |k: usize, positive: bool| {
            field(k)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0 && (!positive || *v > 0.0))
                .ok_or_else(|| {
                    bad(
                        k,
                        if positive {
                            "expected milliseconds > 0"
                        } else {
                            "expected milliseconds ≥ 0"
                        },
                    )
                })
        };
        let submit_ms = ms(2, false)?;
        let duration_ms = ms(3, true)?;
        let given = model_col
            .and_then(|c| record.get(c))
            .filter(|m| !m.is_empty());
        let model = match given {
            Some(m) if catalogue.lookup(m, 1).is_some() => m.to_string(),
            Some(m) => {
                catalogue_model(m)
                    .map(str::to_string)
                    .ok_or_else(|| InputError::BadField {
                        file: file.to_path_buf(),
                        line,
                        field: "model_name".into(),
                        value: m.to_string(),
                        message: format!(
                            "unknown model (catalogue: {})",
                            catalogue.models().join(", ")
                        ),
                    })?
            }
            None => draw.next(),
        };
        let spec =
            job_spec(job_id, num_gpu, submit_ms, duration_ms, &model, &catalogue).map_err(|e| {
                InputError::BadRow {
                    file: file.to_path_buf(),
                    line,
                    message: format!("{e:#}"),
                }
            })?;
        jobs.push((line, spec));
    }
    Ok(jobs)
}

// ---------------------------------------------------------------------------------------
// Stats

/// What `muri trace stats` prints about a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStats {
    pub jobs: usize,
    /// Seconds from the first to the last arrival.
    pub span_s: f64,
    /// (GPUs per job, number of jobs), ascending.
    pub gpu_mix: Vec<(u32, usize)>,
    /// Σ GPUs × duration, in GPU-hours.
    pub gpu_hours: f64,
    /// GPUs the trace keeps busy on average over its arrival span (GPU-seconds / span).
    pub offered_gpus: Option<f64>,
    /// Duration percentiles in seconds: p50, p90, p99, max (nearest rank).
    pub duration_percentiles_s: [f64; 4],
    /// (model, number of jobs), by count then name.
    pub models: Vec<(String, usize)>,
}

impl TraceStats {
    pub fn of(trace: &Trace) -> TraceStats {
        let jobs = &trace.jobs;
        let first = jobs
            .iter()
            .map(|j| j.submit_time)
            .fold(f64::INFINITY, f64::min);
        let last = jobs
            .iter()
            .map(|j| j.submit_time)
            .fold(f64::NEG_INFINITY, f64::max);
        let span_s = if jobs.is_empty() { 0.0 } else { last - first };
        let mut gpu_mix: Vec<(u32, usize)> = Vec::new();
        let mut models: Vec<(String, usize)> = Vec::new();
        for j in jobs {
            match gpu_mix.iter_mut().find(|(g, _)| *g == j.num_gpu) {
                Some(e) => e.1 += 1,
                None => gpu_mix.push((j.num_gpu, 1)),
            }
            match models.iter_mut().find(|(m, _)| *m == j.model_name) {
                Some(e) => e.1 += 1,
                None => models.push((j.model_name.clone(), 1)),
            }
        }
        gpu_mix.sort();
        models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let gpu_seconds: f64 = jobs.iter().map(|j| j.num_gpu as f64 * j.duration).sum();
        let mut durations: Vec<f64> = jobs.iter().map(|j| j.duration).collect();
        durations.sort_by(f64::total_cmp);
        let rank = |q: f64| -> f64 {
            if durations.is_empty() {
                return 0.0;
            }
            let i = ((q * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
            durations[i - 1]
        };
        TraceStats {
            jobs: jobs.len(),
            span_s,
            gpu_mix,
            gpu_hours: gpu_seconds / 3600.0,
            offered_gpus: (span_s > 0.0).then(|| gpu_seconds / span_s),
            duration_percentiles_s: [rank(0.5), rank(0.9), rank(0.99), rank(1.0)],
            models,
        }
    }

    /// The report, with the offered load as a share of `cluster_gpus` when given.
    pub fn render(&self, name: &str, cluster_gpus: Option<u32>) -> String {
        let h = |s: f64| s / 3600.0;
        let mut out = format!(
            "{name}: {} jobs arriving over {:.2} h\n",
            self.jobs,
            h(self.span_s)
        );
        let mix: Vec<String> = self
            .gpu_mix
            .iter()
            .map(|(g, n)| format!("{g}: {n} ({:.1} %)", 100.0 * *n as f64 / self.jobs as f64))
            .collect();
        out += &format!("GPUs per job: {}\n", mix.join(", "));
        out += &format!("GPU-hours: {:.1}\n", self.gpu_hours);
        match (self.offered_gpus, cluster_gpus) {
            (Some(g), Some(c)) => {
                out += &format!(
                    "offered load: {g:.2} GPUs busy on average over the arrival span, {:.2} × a {c}-GPU cluster\n",
                    g / c as f64
                )
            }
            (Some(g), None) => {
                out += &format!("offered load: {g:.2} GPUs busy on average over the arrival span\n")
            }
            (None, _) => out += "offered load: undefined (every job arrives at the same time)\n",
        }
        let [p50, p90, p99, max] = self.duration_percentiles_s.map(h);
        out += &format!("duration (h): p50 {p50:.3}, p90 {p90:.3}, p99 {p99:.3}, max {max:.3}\n");
        let models: Vec<String> = self
            .models
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        out += &format!("models: {}\n", models.join(", "));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_published_spelling() {
        assert_eq!(parse_time("1970-01-01 00:01:00"), Some(60.0));
        assert_eq!(parse_time("1970-01-01T00:01:00.5"), Some(60.5));
        assert_eq!(parse_time("1970-01-01 08:01:00+08:00"), Some(60.0));
        assert_eq!(parse_time("123.5"), Some(123.5));
        assert_eq!(parse_time("None"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn model_families_map_to_the_paper_models() {
        assert_eq!(catalogue_model("ResNet50"), Some("resnet18"));
        assert_eq!(catalogue_model("bert-large"), Some("bert"));
        assert_eq!(catalogue_model("vgg19"), Some("vgg19"));
        assert_eq!(catalogue_model("VGG11"), Some("vgg16"));
        assert_eq!(catalogue_model("gpt-3"), Some("gpt2"));
        assert_eq!(catalogue_model("graphlearn"), None);
    }

    fn job(id: &str, gpus: u32, submit_s: f64, run_s: f64, status: Status) -> PublicJob {
        PublicJob {
            id: id.into(),
            num_gpu: gpus,
            submit_s,
            run_s,
            status,
            model: None,
        }
    }

    #[test]
    fn filters_are_counted_and_the_first_kept_job_arrives_at_zero() {
        let jobs = vec![
            job("a", 1, 100.0, 600.0, Status::Completed),
            job("b", 2, 200.0, 600.0, Status::Failed),
            job("c", 64, 300.0, 600.0, Status::Completed),
            job("d", 0, 400.0, 600.0, Status::Completed),
            job("e", 4, 500.0, 600.0, Status::Unfinished),
            job("f", 8, 5000.0, 600.0, Status::Completed),
            job("g", 3, 150.0, 3600.0, Status::Killed),
        ];
        let opts = ImportOptions {
            max_gpu: Some(32),
            until_s: Some(3600.0),
            ..ImportOptions::default()
        };
        let (trace, report) = to_trace(jobs.clone(), &opts, "t", "test").unwrap();
        assert_eq!(trace.jobs.len(), 1);
        assert_eq!(trace.jobs[0].submit_time, 0.0);
        assert_eq!(
            report,
            ImportReport {
                read: 7,
                kept: 1,
                failed_or_killed: 2,
                unfinished: 1,
                no_gpu_or_run_time: 1,
                outside_window: 1,
                over_gpu_cap: 1,
                named_models: 0,
            }
        );
        let keep = ImportOptions {
            keep_failed: true,
            ..opts
        };
        let (trace, _) = to_trace(jobs, &keep, "t", "test").unwrap();
        let ids: Vec<u32> = trace.jobs.iter().map(|j| j.num_gpu).collect();
        assert_eq!(ids, [1, 3, 2], "arrival order, failed and killed kept");
        assert_eq!(trace.jobs[1].submit_time, 50.0);
    }

    #[test]
    fn stage_times_come_from_the_largest_profiled_size_not_above_the_job() {
        let c = Catalogue::default();
        let three = job_spec(0, 3, 0.0, 3_600_000.0, "bert", &c).unwrap();
        let two = crate::models::profile("bert", 2).unwrap();
        assert_eq!(three.num_gpu, 3);
        assert_eq!(three.iteration_time_ms, two.iteration_time_ms);
        assert_eq!(three.resource_time_ms, two.resource_time_ms);
        let iters = (3_600_000.0 / two.iteration_time_ms).round();
        assert_eq!(three.iterations, iters as u64);
        assert!((three.duration * 1000.0 - 3_600_000.0).abs() <= two.iteration_time_ms);
        let big = job_spec(1, 128, 0.0, 1000.0, "dqn", &c).unwrap();
        assert_eq!(
            big.iteration_time_ms,
            crate::models::profile("dqn", 32).unwrap().iteration_time_ms
        );
    }

    #[test]
    fn the_model_draw_is_seeded() {
        let jobs: Vec<PublicJob> = (0..20)
            .map(|i| job(&i.to_string(), 1, i as f64, 60.0, Status::Completed))
            .collect();
        let models = |seed| {
            let opts = ImportOptions {
                seed,
                ..ImportOptions::default()
            };
            let (t, _) = to_trace(jobs.clone(), &opts, "t", "test").unwrap();
            t.jobs.into_iter().map(|j| j.model_name).collect::<Vec<_>>()
        };
        assert_eq!(models(7), models(7));
        assert_ne!(models(7), models(8));
    }
}
