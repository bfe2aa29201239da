//! Reading and writing job traces in the reference CSV format.
//!
//! Header: `job_id,num_gpu,submit_time,iterations,model_name,batch_size,duration,
//! interval,iteration_time,resource_time_0,resource_time_1,resource_time_2,priority`.
//! Times in the file are milliseconds; everything inside muri is seconds.
//!
//! A minimal trace, `job_id,num_gpu,submit_time,duration[,model_name]` (also milliseconds),
//! is read too: [`crate::trace_import`] fills in the rest from the model catalogue.

use std::path::Path;

use crate::error::{csv_with_header, read_input, InputError};

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
            jobs.sort_by(|a, b| a.submit_time.total_cmp(&b.submit_time));
            return Ok(Trace {
                name,
                source: file.display().to_string(),
                jobs,
            });
        }
        let cols = Columns::locate(&headers, file)?;
        let mut jobs = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                bad_row(file, line, e.to_string())
            })?;
            let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
            if record.iter().all(|f| f.is_empty()) {
                continue;
            }
            jobs.push(cols.job(&record, file, line)?);
        }
        if jobs.is_empty() {
            return Err(InputError::Empty {
                file: file.to_path_buf(),
            });
        }
        // The reference stably sorts by submit time; shipped traces are already sorted.
        jobs.sort_by(|a, b| a.submit_time.total_cmp(&b.submit_time));
        Ok(Trace {
            name,
            source: file.display().to_string(),
            jobs,
        })
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
                fmt_ms(j.submit_time * 1000.0),
                j.iterations.to_string(),
                j.model_name.clone(),
                j.batch_size.to_string(),
                fmt_ms(j.duration * 1000.0),
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

/// Integral values print without a decimal point, as in the reference traces.
fn fmt_ms(v: f64) -> String {
    if v == v.round() && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn bad_row(file: &Path, line: usize, message: String) -> InputError {
    InputError::BadRow {
        file: file.to_path_buf(),
        line,
        message,
    }
}

/// Column positions, found once from the header.
struct Columns {
    idx: [usize; 10],
    batch_size: Option<usize>,
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
            priority: find("priority"),
        })
    }

    fn job(&self, r: &csv::StringRecord, file: &Path, line: usize) -> Result<JobSpec, InputError> {
        let field = |i: usize| -> Field<'_> {
            let col = self.idx[i];
            Field {
                name: REQUIRED_COLUMNS[i],
                value: r.get(col).unwrap_or(""),
                file,
                line,
            }
        };
        let num_gpu = field(1).integer()?;
        if num_gpu == 0 {
            return Err(field(1).error("must be a positive number of GPUs"));
        }
        let num_gpu = u32::try_from(num_gpu).map_err(|_| field(1).error("too large"))?;
        let iteration_time_ms = field(6).non_negative()?;
        if iteration_time_ms <= 0.0 {
            return Err(field(6).error("must be positive"));
        }
        let model_name = field(4).value.to_string();
        if model_name.is_empty() {
            return Err(field(4).error("must not be empty"));
        }
        let optional = |col: Option<usize>, name: &'static str| -> Result<u64, InputError> {
            match col.and_then(|c| r.get(c)).filter(|v| !v.is_empty()) {
                None => Ok(0),
                Some(value) => Field {
                    name,
                    value,
                    file,
                    line,
                }
                .integer(),
            }
        };
        let priority = optional(self.priority, "priority")?;
        if priority > 1 {
            return Err(Field {
                name: "priority",
                value: r.get(self.priority.unwrap_or(0)).unwrap_or(""),
                file,
                line,
            }
            .error("must be 0 (guaranteed) or 1 (opportunistic)"));
        }
        Ok(JobSpec {
            job_id: field(0).integer()?,
            num_gpu,
            submit_time: field(2).non_negative()? / 1000.0,
            iterations: field(3).integer()?,
            model_name,
            batch_size: optional(self.batch_size, "batch_size")? as u32,
            duration: field(5).non_negative()?.trunc() / 1000.0,
            iteration_time_ms,
            resource_time_ms: [
                field(7).non_negative()?,
                field(8).non_negative()?,
                field(9).non_negative()?,
            ],
            priority: priority as u8,
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

    fn integer(&self) -> Result<u64, InputError> {
        if self.value.starts_with('-') {
            return Err(self.error("must not be negative"));
        }
        self.value
            .parse::<u64>()
            .map_err(|_| self.error("expected a non-negative integer"))
    }

    fn non_negative(&self) -> Result<f64, InputError> {
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
        Ok(v)
    }
}
