//! `job.csv` and `cluster.csv` in the reference's layout, so its `calc.py` and plotting
//! scripts read our logs unchanged.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use crate::engine::{ClusterRecord, JobRecord, SimResult};
use crate::error::{csv_with_header, read_input, InputError};
use crate::float::py_repr;

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
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
        )?;
    }
    w.flush()?;
    Ok(())
}

pub fn write_cluster_csv(path: &Path, rows: &[ClusterRecord]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{CLUSTER_HEADER}")?;
    for r in rows {
        writeln!(
            w,
            "{},0,0,0,{},{},{},{},{}",
            py_repr(r.time),
            r.idle_gpu,
            r.busy_gpu,
            r.pending_job,
            r.running_job,
            r.completed_job
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Reads a `job.csv` (ours or the reference's) back into records.
pub fn read_job_csv(path: &Path) -> Result<Vec<JobRecord>, InputError> {
    let text = read_input(path)?;
    let (mut reader, headers) = csv_with_header(&text, path)?;
    let col = |name: &str| -> Result<usize, InputError> {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| InputError::MissingColumn {
                file: path.to_path_buf(),
                column: name.into(),
                expected: JOB_HEADER.into(),
            })
    };
    let names = [
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
    let mut idx = [0usize; 11];
    for (slot, name) in idx.iter_mut().zip(names) {
        *slot = col(name)?;
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| InputError::BadRow {
            file: path.to_path_buf(),
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            message: e.to_string(),
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let num = |k: usize| -> Result<f64, InputError> {
            let raw = record.get(idx[k]).unwrap_or("");
            raw.parse::<f64>().map_err(|_| InputError::BadField {
                file: path.to_path_buf(),
                line,
                field: names[k].into(),
                value: raw.into(),
                message: "expected a number".into(),
            })
        };
        out.push(JobRecord {
            job_id: num(0)? as u64,
            num_gpu: num(1)? as u32,
            submit_time: num(2)?,
            start_time: num(3)?,
            end_time: num(4)?,
            executed_time: num(5)?,
            real_executed_time: num(6)?,
            jct: num(7)?,
            duration: num(8)?,
            pending_time: num(9)?,
            preempt: num(10)? as u32,
            promote: 0,
        });
    }
    Ok(out)
}

/// Average GPU utilisation over a run, weighted by time, from `cluster.csv` rows.
pub fn gpu_utilisation(rows: &[ClusterRecord]) -> Option<f64> {
    let mut busy = 0.0;
    let mut total = 0.0;
    for pair in rows.windows(2) {
        let dt = pair[1].time - pair[0].time;
        let gpus = (pair[0].busy_gpu + pair[0].idle_gpu) as f64;
        busy += dt * pair[0].busy_gpu as f64;
        total += dt * gpus;
    }
    (total > 0.0).then(|| busy / total)
}

/// Reads `cluster.csv` rows (ours; the reference writes zeros in the GPU columns).
pub fn read_cluster_csv(path: &Path) -> Result<Vec<ClusterRecord>, InputError> {
    let text = read_input(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = |field: &str, value: &str| InputError::BadField {
            file: path.to_path_buf(),
            line: i + 1,
            field: field.into(),
            value: value.into(),
            message: "expected a number".into(),
        };
        if f.len() < 9 {
            return Err(InputError::BadRow {
                file: path.to_path_buf(),
                line: i + 1,
                message: format!("expected 9 fields, found {}", f.len()),
            });
        }
        let int = |k: usize, name: &str| f[k].parse::<f64>().map_err(|_| bad(name, f[k]));
        out.push(ClusterRecord {
            time: int(0, "time")?,
            idle_gpu: int(4, "idle_gpu")? as u32,
            busy_gpu: int(5, "busy_gpu")? as u32,
            pending_job: int(6, "pending_job")? as usize,
            running_job: int(7, "running_job")? as usize,
            completed_job: int(8, "completed_job")? as usize,
        });
    }
    Ok(out)
}
