//! What a testbed run measures each round, after Muri's testbed (its `cluster.csv` feeds the
//! paper's Figure 8): the queue length, the blocking index and the utilisation of each
//! resource, written as trailing columns of the testbed's `cluster.csv` (the simulator's
//! columns stay first and unchanged, and every reader looks columns up by name).
//!
//! Columns (`utilisation` = a share of the cluster's capacity, in [0, 1]):
//! - `queue_length`: jobs that have arrived and are not running (Muri: PENDING jobs).
//! - `blocking_index`: mean over those jobs of pending time ÷ (remaining iterations × solo
//!   iteration time), as Muri's testbed defines it; 0 with an empty queue.
//! - `storage_util`, `gpu_util`, `network_util`: the share of the cluster's GPUs whose data
//!   loading, compute and all-reduce resources are busy: per running group, the members'
//!   measured stage seconds per group iteration ÷ the measured group iteration time, weighted
//!   by the group's GPUs. These are the three resources the interleaving model pipelines.
//! - `cpu_util`: measured CPU of the trainers (`/proc`, all threads) × ranks ÷ the cluster's
//!   CPUs (`num_cpu_p_node` × nodes).
//! - `mem_util`: peak resident memory × ranks ÷ the cluster's memory (`mem_p_node` GiB × nodes).
//! - `read_mbps`, `write_mbps`: storage I/O of the trainers (`/proc/<pid>/io`) × ranks, MB/s.
//! - `nvml_gpu_util`: NVML's GPU utilisation × GPUs ÷ cluster GPUs.
//!
//! Rank 0 measures; the other ranks of a group are assumed alike (as Muri multiplies rank 0's
//! figures by the GPU count). A group that is kept without a relaunch keeps its last
//! measurement. A column is empty in a round where some running group has no measurement
//! of it (the model executor measures nothing; without NVML there is no `nvml_gpu_util`).

use std::collections::HashMap;
use std::fmt::Write as _;

use muri_runtime::pb;

use crate::cluster::ClusterSpec;
use crate::engine::ClusterRecord;
use crate::job::{Job, JobIdx, Status};
use crate::output::{cluster_csv_fields, CLUSTER_HEADER};

/// The testbed's trailing `cluster.csv` columns, in order.
pub const MEASURE_HEADER: &str = "queue_length,blocking_index,storage_util,gpu_util,network_util,cpu_util,mem_util,read_mbps,write_mbps,nvml_gpu_util";

/// One group's last measurement, per rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupUsage {
    /// Busy share of the group iteration of data loading, compute and all-reduce, in [0, 1].
    pub stage_busy: [f64; 3],
    /// What rank 0's process used (absent when the trainer sent no usage).
    pub process: Option<ProcessUsage>,
}

/// One rank's process usage, as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    pub read_bps: f64,
    pub write_bps: f64,
    pub gpu_util: Option<f64>,
}

impl GroupUsage {
    /// From a trainer's report: `members` jobs each ran one iteration per group iteration of
    /// `iter_s` seconds, spending on average `stage_s` (data, compute, all-reduce) per
    /// iteration. Non-finite or negative figures count as 0.
    pub fn from_report(
        members: usize,
        iter_s: f64,
        stage_s: &[f64],
        usage: Option<&pb::ResourceUsage>,
    ) -> GroupUsage {
        let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let mut stage_busy = [0.0; 3];
        if clean(iter_s) > 0.0 {
            for (busy, &s) in stage_busy.iter_mut().zip(stage_s) {
                *busy = (members as f64 * clean(s) / iter_s).min(1.0);
            }
        }
        GroupUsage {
            stage_busy,
            process: usage.map(|u| ProcessUsage {
                cpu_cores: clean(u.cpu_cores),
                rss_bytes: u.rss_bytes,
                read_bps: clean(u.read_bps),
                write_bps: clean(u.write_bps),
                gpu_util: u.gpu_util.map(|g| clean(g).min(1.0)),
            }),
        }
    }
}

/// One round's measurements (`None` = not measured for some running group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundMeasures {
    pub queue_length: usize,
    pub blocking_index: f64,
    pub stage_util: Option<[f64; 3]>,
    pub cpu_util: Option<f64>,
    pub mem_util: Option<f64>,
    pub read_mbps: Option<f64>,
    pub write_mbps: Option<f64>,
    pub nvml_gpu_util: Option<f64>,
}

/// The round's measurements over `running` groups (members, sorted as the usage keys).
pub fn round_measures(
    jobs: &[Job],
    runnable: &[JobIdx],
    running: &[&[JobIdx]],
    usage: &HashMap<Vec<JobIdx>, GroupUsage>,
    spec: &ClusterSpec,
) -> RoundMeasures {
    let (queue_length, blocking_index) = queue(jobs, runnable);
    let gpus = f64::from(spec.num_gpus().max(1));
    let cpus = f64::from((spec.num_cpu_p_node * spec.num_nodes()).max(1));
    let mem = f64::from((spec.mem_p_node * spec.num_nodes()).max(1)) * (1u64 << 30) as f64;
    let mut stage = Some([0.0; 3]);
    let mut process = Some((0.0, 0.0, 0.0, 0.0));
    let mut nvml = Some(0.0);
    for members in running {
        let ranks = members
            .first()
            .map_or(0.0, |&m| f64::from(jobs[m].num_gpu()));
        let Some(u) = usage.get(*members) else {
            (stage, process, nvml) = (None, None, None);
            continue;
        };
        if let Some(s) = stage.as_mut() {
            for (acc, busy) in s.iter_mut().zip(u.stage_busy) {
                *acc += busy * ranks;
            }
        }
        match u.process {
            Some(p) => {
                if let Some((cpu, rss, read, write)) = process.as_mut() {
                    *cpu += p.cpu_cores * ranks;
                    *rss += p.rss_bytes as f64 * ranks;
                    *read += p.read_bps * ranks;
                    *write += p.write_bps * ranks;
                }
                nvml = nvml.zip(p.gpu_util).map(|(acc, g)| acc + g * ranks);
            }
            None => (process, nvml) = (None, None),
        }
    }
    let share = |v: f64, of: f64| (v / of).clamp(0.0, 1.0);
    RoundMeasures {
        queue_length,
        blocking_index,
        stage_util: stage.map(|s| s.map(|v| share(v, gpus))),
        cpu_util: process.map(|p| share(p.0, cpus)),
        mem_util: process.map(|p| share(p.1, mem)),
        read_mbps: process.map(|p| p.2 / 1e6),
        write_mbps: process.map(|p| p.3 / 1e6),
        nvml_gpu_util: nvml.map(|v| share(v, gpus)),
    }
}

/// Queue length and blocking index of the jobs that have arrived and are not running.
fn queue(jobs: &[Job], runnable: &[JobIdx]) -> (usize, f64) {
    let mut waiting = 0;
    let mut blocking = 0.0;
    for &j in runnable {
        let job = &jobs[j];
        if job.status == Status::Running {
            continue;
        }
        waiting += 1;
        let remaining = job.remaining_iteration * job.iteration_time;
        if remaining > 0.0 {
            blocking += job.pending_time / remaining;
        }
    }
    let index = if waiting > 0 {
        blocking / waiting as f64
    } else {
        0.0
    };
    (waiting, index)
}

/// The measurement columns of one row, comma-first (appended to the reference's fields).
fn measure_fields(m: &RoundMeasures) -> String {
    fn opt(out: &mut String, v: Option<f64>) {
        out.push(',');
        if let Some(v) = v {
            let _ = write!(out, "{v:.6}");
        }
    }
    let mut out = format!(",{},{:.6}", m.queue_length, m.blocking_index);
    for k in 0..3 {
        opt(&mut out, m.stage_util.map(|s| s[k]));
    }
    for v in [
        m.cpu_util,
        m.mem_util,
        m.read_mbps,
        m.write_mbps,
        m.nvml_gpu_util,
    ] {
        opt(&mut out, v);
    }
    out
}

/// The header of the testbed's `cluster.csv`: the reference's columns, then [`MEASURE_HEADER`].
pub fn cluster_csv_header() -> String {
    format!("{CLUSTER_HEADER},{MEASURE_HEADER}")
}

/// One line of the testbed's `cluster.csv` (newline included): the reference's columns,
/// then the round's measurements.
pub fn cluster_csv_line(row: &ClusterRecord, m: &RoundMeasures) -> String {
    format!("{}{}\n", cluster_csv_fields(row), measure_fields(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::JobSpec;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            num_switch: 1,
            num_node_p_switch: 2,
            num_gpu_p_node: 4,
            num_cpu_p_node: 32,
            mem_p_node: 350,
        }
    }

    fn job(idx: JobIdx, num_gpu: u32, iterations: u64, iteration_ms: f64) -> Job {
        let spec = JobSpec {
            job_id: idx as u64,
            num_gpu,
            submit_time: 0.0,
            iterations,
            model_name: "resnet50".into(),
            batch_size: 32,
            duration: iterations as f64 * iteration_ms / 1000.0,
            iteration_time_ms: iteration_ms,
            resource_time_ms: [10.0, 80.0, 10.0],
            priority: 0,
        };
        Job::new(idx, spec)
    }

    #[test]
    fn blocking_index_is_pending_time_over_remaining_solo_time() {
        let mut jobs = vec![job(0, 1, 100, 1000.0), job(1, 2, 50, 2000.0)];
        jobs[0].status = Status::Running;
        jobs[1].pending_time = 50.0;
        let m = round_measures(&jobs, &[0, 1], &[], &HashMap::new(), &spec());
        assert_eq!(m.queue_length, 1);
        // Job 1: 50 s pending ÷ (50 iterations × 2.03 s).
        assert!((m.blocking_index - 50.0 / (50.0 * 2.03)).abs() < 1e-9);
        // Nothing running: every utilisation is a measured 0, not unknown.
        assert_eq!(m.stage_util, Some([0.0; 3]));
        assert_eq!(m.cpu_util, Some(0.0));
        assert_eq!(m.nvml_gpu_util, Some(0.0));
    }

    #[test]
    fn utilisation_is_weighted_by_gpus_and_bounded() {
        let mut jobs = vec![job(0, 4, 100, 100.0), job(1, 4, 100, 100.0)];
        for j in &mut jobs {
            j.status = Status::Running;
        }
        let usage = pb::ResourceUsage {
            cpu_cores: 2.0,
            rss_bytes: 1 << 30,
            read_bps: 1e6,
            write_bps: 0.0,
            gpu_util: None,
        };
        // Two jobs interleaved on 4 GPUs: 2 × 0.04 s compute per 0.1 s group iteration.
        let group = GroupUsage::from_report(2, 0.1, &[0.01, 0.04, 0.2], Some(&usage));
        assert!((group.stage_busy[1] - 0.8).abs() < 1e-12);
        assert_eq!(group.stage_busy[2], 1.0, "a busy share is capped at 1");
        let members = vec![0, 1];
        let map = HashMap::from([(members.clone(), group)]);
        let m = round_measures(&jobs, &[0, 1], &[&members], &map, &spec());
        assert_eq!(m.queue_length, 0);
        let [storage, gpu, net] = m.stage_util.unwrap();
        assert!((gpu - 0.8 * 4.0 / 8.0).abs() < 1e-12);
        assert!((storage - 0.2 * 4.0 / 8.0).abs() < 1e-12);
        assert!((net - 0.5).abs() < 1e-12);
        assert!((m.cpu_util.unwrap() - 8.0 / 64.0).abs() < 1e-12);
        assert!((m.mem_util.unwrap() - 4.0 / 700.0).abs() < 1e-12);
        assert!((m.read_mbps.unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(m.nvml_gpu_util, None, "no NVML: unknown, not 0");
    }

    #[test]
    fn a_running_group_without_a_measurement_leaves_the_columns_empty() {
        let mut jobs = vec![job(0, 1, 100, 100.0)];
        jobs[0].status = Status::Running;
        let members = vec![0];
        let m = round_measures(&jobs, &[0], &[&members], &HashMap::new(), &spec());
        assert_eq!(m.stage_util, None);
        let fields = measure_fields(&m);
        assert_eq!(fields, ",0,0.000000,,,,,,,,");
        assert_eq!(
            fields.split(',').count() - 1,
            MEASURE_HEADER.split(',').count()
        );
    }
}
