//! `job.csv` and `cluster.csv` in the reference's layout, so its `calc.py` and plotting
//! scripts read our logs unchanged.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use crate::error::{column_indices, csv_with_header, data_rows, read_input, InputError};
use crate::float::py_repr;
use crate::record::{ClusterRecord, JobRecord, SimResult};

pub const JOB_HEADER: &str = "time,job_id,num_gpu,submit_time,start_time,end_time,executed_time,real_executed_time,JCT,duration,pending_time,preempt,promote";
pub const CLUSTER_HEADER: &str =
    "time,idle_node,busy_node,full_node,idle_gpu,busy_gpu,pending_job,running_job,completed_job";

/// Writes `job.csv` and `cluster.csv` under `dir` (created if missing).
pub fn write_logs(dir: &Path, result: &SimResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_job_csv(&dir.join("job.csv"), &result.jobs)?;
    write_cluster_csv(&dir.join("cluster.csv"), &result.cluster)?;
    Ok(())
}

pub fn write_job_csv(path: &Path, records: &[JobRecord]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{JOB_HEADER}")?;
    for r in records {
        w.write_all(job_csv_line(r).as_bytes())?;
    }
    w.flush()?;
    Ok(())
}

/// One `job.csv` row, newline included.
pub fn job_csv_line(r: &JobRecord) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        py_repr(r.end_time),
        r.job_id,
        r.num_gpu,
        py_repr(r.submit_time),
        py_repr(r.start_time),
        py_repr(r.end_time),
        py_repr(r.executed_time),
        py_repr(r.real_executed_time),
        py_repr(r.jct),
        py_repr(r.duration),
        py_repr(r.pending_time),
        r.preempt,
        r.promote
    )
}

pub fn write_cluster_csv(path: &Path, rows: &[ClusterRecord]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{CLUSTER_HEADER}")?;
    for r in rows {
        writeln!(w, "{}", cluster_csv_fields(r))?;
    }
    w.flush()?;
    Ok(())
}

/// One `cluster.csv` row in the reference's layout (the node columns are always 0), without
/// the line end: the testbed appends its measurement columns to it.
pub fn cluster_csv_fields(r: &ClusterRecord) -> String {
    format!(
        "{},0,0,0,{},{},{},{},{}",
        py_repr(r.time),
        r.idle_gpu,
        r.busy_gpu,
        r.pending_job,
        r.running_job,
        r.completed_job
    )
}

/// Reads a `job.csv` (ours or the reference's) back into records. Rows must have one value
/// per header column; ids, GPU counts and preemption counts must be non-negative integers and
/// times finite and non-negative, so that the metrics never come out as NaN or infinite.
pub fn read_job_csv(path: &Path) -> Result<Vec<JobRecord>, InputError> {
    let text = read_input(path)?;
    let (mut reader, headers) = csv_with_header(&text, path)?;
    let idx = column_indices(&headers, &JOB_COLUMNS, JOB_HEADER, path)?;
    let mut out = Vec::new();
    for row in data_rows(&mut reader, &headers, path) {
        let (line, record) = row?;
        let field = |k: usize| LogField {
            file: path,
            line,
            name: JOB_COLUMNS[k],
            value: record.get(idx[k]).unwrap_or(""),
        };
        out.push(JobRecord {
            job_id: field(0).integer(u64::MAX)?,
            num_gpu: field(1).integer(u32::MAX.into())? as u32,
            submit_time: field(2).seconds()?,
            start_time: field(3).seconds()?,
            end_time: field(4).seconds()?,
            executed_time: field(5).seconds()?,
            real_executed_time: field(6).seconds()?,
            jct: field(7).seconds()?,
            duration: field(8).seconds()?,
            pending_time: field(9).seconds()?,
            preempt: field(10).integer(u32::MAX.into())? as u32,
            promote: 0,
        });
    }
    Ok(out)
}

/// The `job.csv` columns [`read_job_csv`] needs.
const JOB_COLUMNS: [&str; 11] = [
    "job_id",
    "num_gpu",
    "submit_time",
    "start_time",
    "end_time",
    "executed_time",
    "real_executed_time",
    "JCT",
    "duration",
    "pending_time",
    "preempt",
];

/// One value of a log row, with where it came from for errors.
struct LogField<'a> {
    file: &'a Path,
    line: usize,
    name: &'a str,
    value: &'a str,
}

impl LogField<'_> {
    fn error(&self, message: &str) -> InputError {
        InputError::BadField {
            file: self.file.to_path_buf(),
            line: self.line,
            field: self.name.into(),
            value: self.value.into(),
            message: message.into(),
        }
    }

    /// A whole number in `0..=max`. Python-written logs may spell it `3.0`, which is accepted;
    /// `-1` or `2.5` are not.
    fn integer(&self, max: u64) -> Result<u64, InputError> {
        if let Ok(v) = self.value.parse::<u64>() {
            return if v <= max {
                Ok(v)
            } else {
                Err(self.error(&format!("must be at most {max}")))
            };
        }
        let v: f64 = self
            .value
            .parse()
            .map_err(|_| self.error("expected a non-negative integer"))?;
        if !(v >= 0.0 && v.fract() == 0.0 && v <= max as f64) {
            return Err(self.error(&format!("expected an integer in 0..={max}")));
        }
        Ok(v as u64)
    }

    /// A time or duration in seconds: finite and non-negative.
    fn seconds(&self) -> Result<f64, InputError> {
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

/// Average GPU utilisation over a run, weighted by time, from `cluster.csv` rows (`None` when
/// no time passes or the sums overflow).
pub fn gpu_utilisation(rows: &[ClusterRecord]) -> Option<f64> {
    let mut busy = 0.0;
    let mut total = 0.0;
    for pair in rows.windows(2) {
        let dt = pair[1].time - pair[0].time;
        let gpus = (pair[0].busy_gpu + pair[0].idle_gpu) as f64;
        busy += dt * pair[0].busy_gpu as f64;
        total += dt * gpus;
    }
    // Absurd but finite times (1e308 s) overflow the sums: no figure rather than NaN.
    (total > 0.0 && total.is_finite() && busy.is_finite()).then(|| busy / total)
}

/// Reads `cluster.csv` rows (ours; the reference writes zeros in the GPU columns), with the
/// same strictness as [`read_job_csv`].
pub fn read_cluster_csv(path: &Path) -> Result<Vec<ClusterRecord>, InputError> {
    let text = read_input(path)?;
    let (mut reader, headers) = csv_with_header(&text, path)?;
    let columns: Vec<&str> = CLUSTER_HEADER.split(',').collect();
    let idx = column_indices(&headers, &columns, CLUSTER_HEADER, path)?;
    let mut out = Vec::new();
    for row in data_rows(&mut reader, &headers, path) {
        let (line, record) = row?;
        let field = |k: usize| LogField {
            file: path,
            line,
            name: columns[k],
            value: record.get(idx[k]).unwrap_or(""),
        };
        let count = |k: usize| field(k).integer(u32::MAX.into());
        out.push(ClusterRecord {
            time: field(0).seconds()?,
            idle_gpu: count(4)? as u32,
            busy_gpu: count(5)? as u32,
            pending_job: count(6)? as usize,
            running_job: count(7)? as usize,
            completed_job: count(8)? as usize,
        });
    }
    Ok(out)
}
