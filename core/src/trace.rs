//! Reading and writing job traces in the reference CSV format.
//!
//! Header: `job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,
//! interval,iteration_time,resource_time_0,resource_time_1,resource_time_2,priority`.
//! Times in the file are milliseconds; everything inside muri is seconds.
//!
//! A minimal trace, `job_id,num_gpu,submit_time,duration[,model_name]` (also milliseconds),
//! is read too: [`crate::trace_import`] fills in the rest from the model catalogue.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{csv_with_header, data_rows, read_input, InputError};

/// Latest submit time and longest duration or solo run time a trace may give, in ms (about
/// 31.7 years; the shipped traces stay below 1.1e10). Beyond this the simulated clock would
/// lose the millisecond resolution the traces are written in.
pub const MAX_TIME_MS: f64 = 1e12;
/// Longest iteration or stage time a trace may give, in ms (about 11.6 days).
pub const MAX_ITERATION_MS: f64 = 1e9;

/// The columns a trace must have. `batch_size`, `interval` and `priority` are optional.
pub const REQUIRED_COLUMNS: [&str; 10] = [
    "job_id",
    "num_gpu",
    "submit_time",
    "iterations",
    "model_name",
    "duration",
    "iteration_time",
    "resource_time_0",
    "resource_time_1",
    "resource_time_2",
];

/// The full header written by `muri trace gen` (the reference's column order).
pub const HEADER: [&str; 13] = [
    "job_id",
    "num_gpu",
    "submit_time",
    "iterations",
    "model_name",
    "batch_size",
    "duration",
    "interval",
    "iteration_time",
    "resource_time_0",
    "resource_time_1",
    "resource_time_2",
    "priority",
];

/// One job as the trace describes it, converted to seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// `job_id` column (only echoed to logs).
    pub job_id: u64,
    pub num_gpu: u32,
    /// Arrival time in seconds (file value / 1000).
    pub submit_time: f64,
    pub iterations: u64,
    pub model_name: String,
    pub batch_size: u32,
    /// Trace duration in seconds: `int(ms) / 1000`, as the reference truncates it.
    pub duration: f64,
    /// Solo iteration time in milliseconds, as in the file (the ×1.015 is applied by [`crate::job`]).
    pub iteration_time_ms: f64,
    /// Per-iteration stage times in milliseconds: data loading (CPU/storage), compute (GPU),
    /// communication (network).
    pub resource_time_ms: [f64; 3],
    /// AntMan class: 0 = resource-guaranteed, 1 = opportunistic.
    pub priority: u8,
}

/// A parsed trace plus where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Short name for tables (the file stem).
    pub name: String,
    /// Where it was read from, for error messages.
    pub source: String,
    pub jobs: Vec<JobSpec>,
    /// The file line of each job in `jobs` (jobs are sorted by submit time, so errors found
    /// after parsing need this to point at the right line). Empty for generated traces.
    pub lines: Vec<usize>,
}

impl Trace {
    /// Reads a trace CSV from disk.
    pub fn from_path(path: &Path) -> Result<Trace, InputError> {
        let text = read_input(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "trace".into());
        Self::parse(&text, path, name)
    }

    /// Parses trace text; `file` is only used to label errors.
    pub fn parse(text: &str, file: &Path, name: String) -> Result<Trace, InputError> {
        let (mut reader, headers) = csv_with_header(text, file)?;
        if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
            return Err(InputError::Empty {
                file: file.to_path_buf(),
            });
        }
        if crate::trace_import::is_minimal(&headers) {
            let mut jobs = crate::trace_import::parse_minimal(&mut reader, &headers, file)?;
            if jobs.is_empty() {
                return Err(InputError::Empty {
                    file: file.to_path_buf(),
                });
            }
            jobs.sort_by(|a, b| a.1.submit_time.total_cmp(&b.1.submit_time));
            let (lines, jobs) = jobs.into_iter().unzip();
            return Ok(Trace {
                name,
                source: file.display().to_string(),
                jobs,
                lines,
            });
        }
        let cols = Columns::locate(&headers, file)?;
        let mut jobs: Vec<(usize, JobSpec)> = Vec::new();
        let mut first_line_of_id: HashMap<u64, usize> = HashMap::new();
        for row in data_rows(&mut reader, &headers, file) {
            let (line, record) = row?;
            let job = cols.job(&record, file, line)?;
            if let Some(first) = first_line_of_id.insert(job.job_id, line) {
                return Err(InputError::BadField {
                    file: file.to_path_buf(),
                    line,
                    field: "job_id".into(),
                    value: job.job_id.to_string(),
                    message: format!("duplicate: line {first} has the same job id"),
                });
            }
            jobs.push((line, job));
        }
        if jobs.is_empty() {
            return Err(InputError::Empty {
                file: file.to_path_buf(),
            });
        }
        // The reference stably sorts by submit time; shipped traces are already sorted.
        jobs.sort_by(|a, b| a.1.submit_time.total_cmp(&b.1.submit_time));
        let (lines, jobs) = jobs.into_iter().unzip();
        Ok(Trace {
            name,
            source: file.display().to_string(),
            jobs,
            lines,
        })
    }

    /// The file line of the `row`-th job (in submit order), for error messages.
    pub fn line_of(&self, row: usize) -> usize {
        self.lines.get(row).copied().unwrap_or(row + 2)
    }

    /// Writes the trace in the reference format (times back in milliseconds).
    pub fn write_csv<W: std::io::Write>(&self, out: W) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(HEADER)?;
        let mut prev_submit = 0.0;
        for j in &self.jobs {
            let interval = ((j.submit_time - prev_submit) * 1000.0).round();
            prev_submit = j.submit_time;
            w.write_record([
                j.job_id.to_string(),
                j.num_gpu.to_string(),
                ms_reading_back_as(j.submit_time, |ms| ms / 1000.0),
                j.iterations.to_string(),
                j.model_name.clone(),
                j.batch_size.to_string(),
                ms_reading_back_as(j.duration, |ms| ms.trunc() / 1000.0),
                fmt_ms(interval),
                fmt_ms(j.iteration_time_ms),
                fmt_ms(j.resource_time_ms[0]),
                fmt_ms(j.resource_time_ms[1]),
                fmt_ms(j.resource_time_ms[2]),
                j.priority.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    }
}

/// The shortest millisecond value that [`Trace::parse`] (through `read`) turns back into
/// exactly `seconds`: `seconds × 1000` itself carries float noise (`258995.99999999997`
/// for 258.996 s, which reads back 1 ms short after truncation).
fn ms_reading_back_as(seconds: f64, read: impl Fn(f64) -> f64) -> String {
    let ms = seconds * 1000.0;
    for decimals in 0..=6 {
        let scale = 10f64.powi(decimals);
        let rounded = (ms * scale).round() / scale;
        if read(rounded) == seconds {
            return fmt_ms(rounded);
        }
    }
    fmt_ms(ms)
}

/// Integral values print without a decimal point, as in the reference traces.
fn fmt_ms(v: f64) -> String {
    if v == v.round() && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Column positions, found once from the header.
struct Columns {
    idx: [usize; 10],
    batch_size: Option<usize>,
    /// Checked but not used: the simulator takes arrivals from `submit_time`.
    interval: Option<usize>,
    priority: Option<usize>,
}

impl Columns {
    fn locate(headers: &csv::StringRecord, file: &Path) -> Result<Columns, InputError> {
        let find = |name: &str| headers.iter().position(|h| h == name);
        let mut idx = [0; 10];
        for (slot, name) in idx.iter_mut().zip(REQUIRED_COLUMNS) {
            *slot = find(name).ok_or_else(|| InputError::MissingColumn {
                file: file.to_path_buf(),
                column: name.to_string(),
                expected: REQUIRED_COLUMNS.join(","),
            })?;
        }
        Ok(Columns {
            idx,
            batch_size: find("batch_size"),
            interval: find("interval"),
            priority: find("priority"),
        })
    }

    fn job(&self, r: &csv::StringRecord, file: &Path, line: usize) -> Result<JobSpec, InputError> {
        let field = |i: usize| -> Field<'_> {
            Field {
                name: REQUIRED_COLUMNS[i],
                value: r.get(self.idx[i]).unwrap_or(""),
                file,
                line,
            }
        };
        let optional = |col: Option<usize>, name: &'static str| {
            col.and_then(|c| r.get(c))
                .filter(|v| !v.is_empty())
                .map(|value| Field {
                    name,
                    value,
                    file,
                    line,
                })
        };
        let num_gpu = field(1).integer_in(1, u32::MAX as u64)? as u32;
        let iterations = field(3).integer_in(1, u64::MAX)?;
        let iteration_time_ms = field(6).time_ms(MAX_ITERATION_MS)?;
        if iteration_time_ms == 0.0 {
            return Err(field(6).error("must be positive"));
        }
        if iterations as f64 * iteration_time_ms > MAX_TIME_MS {
            return Err(field(3).error(&format!(
                "the job would run longer than {MAX_TIME_MS:e} ms alone (iterations × iteration_time)"
            )));
        }
        let resource_time_ms = [
            field(7).time_ms(MAX_ITERATION_MS)?,
            field(8).time_ms(MAX_ITERATION_MS)?,
            field(9).time_ms(MAX_ITERATION_MS)?,
        ];
        if resource_time_ms.iter().all(|&t| t == 0.0) {
            return Err(field(7).error(
                "resource_time_0, resource_time_1 and resource_time_2 are all zero (the job has no stage to interleave)",
            ));
        }
        let priority = match optional(self.priority, "priority") {
            Some(f) => f
                .integer_in(0, 1)
                .map_err(|_| f.error("must be 0 (guaranteed) or 1 (opportunistic)"))?
                as u8,
            None => 0,
        };
        if let Some(f) = optional(self.interval, "interval") {
            f.time_ms(MAX_TIME_MS)?;
        }
        let batch_size = match optional(self.batch_size, "batch_size") {
            Some(f) => f.integer_in(0, u32::MAX as u64)? as u32,
            None => 0,
        };
        Ok(JobSpec {
            job_id: field(0).integer_in(0, u64::MAX)?,
            num_gpu,
            submit_time: field(2).time_ms(MAX_TIME_MS)? / 1000.0,
            iterations,
            model_name: field(4).name()?,
            batch_size,
            duration: field(5).time_ms(MAX_TIME_MS)?.trunc() / 1000.0,
            iteration_time_ms,
            resource_time_ms,
            priority,
        })
    }
}

struct Field<'a> {
    name: &'static str,
    value: &'a str,
    file: &'a Path,
    line: usize,
}

impl Field<'_> {
    fn error(&self, message: &str) -> InputError {
        InputError::BadField {
            file: self.file.to_path_buf(),
            line: self.line,
            field: self.name.to_string(),
            value: self.value.to_string(),
            message: message.to_string(),
        }
    }

    /// An integer in `min..=max`, parsed in full (never truncated to a narrower type).
    fn integer_in(&self, min: u64, max: u64) -> Result<u64, InputError> {
        if self.value.starts_with('-') {
            return Err(self.error("must not be negative"));
        }
        let v = self
            .value
            .parse::<u64>()
            .map_err(|_| self.error("expected a non-negative integer"))?;
        if v < min {
            return Err(self.error(&if min == 1 {
                "must be positive".to_string()
            } else {
                format!("must be at least {min}")
            }));
        }
        if v > max {
            return Err(self.error(&format!("must be at most {max}")));
        }
        Ok(v)
    }

    /// A time in milliseconds: a finite number in `0..=max`.
    fn time_ms(&self, max: f64) -> Result<f64, InputError> {
        let v: f64 = self
            .value
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        if !v.is_finite() {
            return Err(self.error("must be finite"));
        }
        if v < 0.0 {
            return Err(self.error("must not be negative"));
        }
        if v > max {
            return Err(self.error(&format!("must be at most {max:e} ms")));
        }
        Ok(v)
    }

    /// A model name: not empty, no control characters (they would corrupt logs and tables).
    fn name(&self) -> Result<String, InputError> {
        if self.value.is_empty() {
            return Err(self.error("must not be empty"));
        }
        if self.value.chars().any(char::is_control) {
            return Err(self.error("must not contain control characters"));
        }
        Ok(self.value.to_string())
    }
}
