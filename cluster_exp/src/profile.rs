//! `muri profile`: measure a job's stage times by running it alone in `muri-trainer`, and
//! check the interleaving model against a measured pair.
//!
//! The trainer does the work (it links libtorch; `muri` does not): a solo job in slot 0 of
//! the rotation runs its stages back to back, so its mean stage times are the trace's
//! `resource_time_0..2` (data, compute, all-reduce + step) and its period is the solo
//! iteration time. A group of two to four jobs runs in the slot order the testbed would
//! pick ([`InterleaveModel::period_in_order`]), so the measured period can be compared with
//! the model's prediction from the solo profiles. On a GPU machine (`--device auto|cuda`,
//! a trainer built with the `cuda` feature) these are the GPU stage times, as the paper's
//! profiles were made.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::interleave::{InterleaveModel, StageProfile};
use crate::models::MeasuredProfile;

/// How to launch the trainer for a measurement.
#[derive(Debug, Clone)]
pub struct TrainerSetup {
    pub trainer: PathBuf,
    pub data_dir: PathBuf,
    pub torch_threads: u32,
    /// The trainer's `--model-scale`: a width factor for the small models, or `paper`.
    pub model_scale: String,
    /// The trainer's `--device`: `auto`, `cpu` or `cuda`.
    pub device: String,
    /// Ranks (GPUs); above 1 the trainer runs under `mpirun -n gpus`.
    pub gpus: u32,
    pub iterations: u64,
    pub warmup: u64,
}

/// A job to profile: model name (as in traces) and batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChoice {
    pub model: String,
    pub batch: u32,
}

impl std::str::FromStr for JobChoice {
    type Err = anyhow::Error;
    /// `MODEL:BATCH`, e.g. `gpt2:8`.
    fn from_str(s: &str) -> anyhow::Result<JobChoice> {
        let (model, batch) = s
            .split_once(':')
            .with_context(|| format!("`{s}`: expected MODEL:BATCH, e.g. gpt2:8"))?;
        let batch = batch
            .parse()
            .ok()
            .filter(|&b: &u32| b > 0)
            .with_context(|| format!("`{s}`: batch size must be a positive integer"))?;
        anyhow::ensure!(!model.is_empty(), "`{s}`: model name is empty");
        Ok(JobChoice {
            model: model.to_string(),
            batch,
        })
    }
}

/// What the trainer's `measurement …` line reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds per group iteration, per phase (all members alive first).
    pub phase_iter_s: Vec<f64>,
    /// Mean seconds of the data, compute and all-reduce stages over all jobs.
    pub stage_s: [f64; 3],
    pub wall_s: f64,
}

/// Parses `measurement phase_iter_s=A,B stage_s=D,C,S passes=N wall_s=W iterations=I,J`.
pub fn parse_measurement(stdout: &str) -> anyhow::Result<Measured> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("measurement "))
        .context("the trainer printed no `measurement` line")?;
    let field = |key: &str| -> anyhow::Result<Vec<f64>> {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("`{line}`: no {key}"))?;
        value
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<f64>()
                    .with_context(|| format!("`{line}`: {key}: `{v}` is not a number"))
            })
            .collect()
    };
    let stage = field("stage_s")?;
    let [d, c, s] = stage[..] else {
        bail!("`{line}`: stage_s must have 3 values");
    };
    Ok(Measured {
        phase_iter_s: field("phase_iter_s")?,
        stage_s: [d, c, s],
        wall_s: field("wall_s")?.first().copied().unwrap_or(0.0),
    })
}

/// Runs the trainer on `jobs` (slot order) and returns what it measured.
pub fn measure(setup: &TrainerSetup, jobs: &[&JobChoice]) -> anyhow::Result<Measured> {
    let mut cmd = if setup.gpus > 1 {
        let mut c = Command::new("mpirun");
        c.args(crate::testbed::worker::mpirun_local_args(setup.gpus))
            .arg(&setup.trainer)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        c
    } else {
        Command::new(&setup.trainer)
    };
    cmd.args(["--group-id", "0", "--workload", "real"])
        .arg("--data-dir")
        .arg(&setup.data_dir)
        .args(["--torch-threads", &setup.torch_threads.to_string()])
        .args(["--model-scale", &setup.model_scale])
        .args(["--device", &setup.device])
        .args(["--warmup", &setup.warmup.to_string()]);
    for (slot, job) in jobs.iter().enumerate() {
        cmd.arg("--job").arg(format!(
            "{slot}:{slot}:{}:{}:0:0:0:0:{}",
            job.model, setup.iterations, job.batch
        ));
    }
    let out = cmd
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .output()
        .with_context(|| format!("starting {}", setup.trainer.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            setup.trainer.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_measurement(&String::from_utf8_lossy(&out.stdout))
}

/// A solo run as a catalogue row, in the trace's milliseconds.
pub fn solo_profile(job: &JobChoice, gpus: u32, m: &Measured) -> MeasuredProfile {
    let ms = m.stage_s.map(|s| s * 1000.0);
    MeasuredProfile {
        model: job.model.clone(),
        num_gpu: gpus,
        batch_size: job.batch,
        iteration_time: m.phase_iter_s.first().copied().unwrap_or(0.0) * 1000.0,
        resource_time_0: ms[0],
        resource_time_1: ms[1],
        resource_time_2: ms[2],
    }
}

fn stage_profile(p: &MeasuredProfile) -> StageProfile {
    StageProfile {
        stages: p.resource_time_ms().map(|ms| ms / 1000.0),
        solo_iteration_time: p.iteration_time / 1000.0,
    }
}

/// The slot order the testbed would dispatch (shortest modelled period; the first such
/// permutation in lexicographic order) as indices into `jobs`, and that period in seconds,
/// before the reference's empirical slowdown factor.
pub fn predicted_group(jobs: &[MeasuredProfile]) -> (Vec<usize>, f64) {
    let model = InterleaveModel::default();
    let stages: Vec<StageProfile> = jobs.iter().map(stage_profile).collect();
    let mut best: (Vec<usize>, f64) = (Vec::new(), f64::INFINITY);
    for order in permutations(jobs.len()) {
        let ordered: Vec<StageProfile> = order.iter().map(|&i| stages[i]).collect();
        let period = model.period_in_order(&ordered);
        if period < best.1 {
            best = (order, period);
        }
    }
    best
}

/// Every order of `0..n`, lexicographically (n ≤ 4 in a group: at most 24).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut order = vec![first];
            order.extend(rest.into_iter().map(|i| if i >= first { i + 1 } else { i }));
            out.push(order);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_trainer_line() {
        let m = parse_measurement(
            "job 1: loss 2.1\nmeasurement phase_iter_s=0.120000,0.080000 stage_s=0.010000,0.050000,0.002000 passes=5 wall_s=0.700000 iterations=5,5\n",
        )
        .unwrap();
        assert_eq!(m.phase_iter_s, vec![0.12, 0.08]);
        assert_eq!(m.stage_s, [0.01, 0.05, 0.002]);
        assert_eq!(m.wall_s, 0.7);
        assert!(parse_measurement("nothing here").is_err());
        assert!(parse_measurement("measurement phase_iter_s=1 stage_s=1,2 wall_s=1").is_err());
        assert!(parse_measurement("measurement phase_iter_s=x stage_s=1,2,3 wall_s=1").is_err());
    }

    #[test]
    fn job_choice_syntax() {
        let j: JobChoice = "gpt2:8".parse().unwrap();
        assert_eq!(
            j,
            JobChoice {
                model: "gpt2".into(),
                batch: 8
            }
        );
        assert!("gpt2".parse::<JobChoice>().is_err());
        assert!("gpt2:0".parse::<JobChoice>().is_err());
        assert!(":4".parse::<JobChoice>().is_err());
    }

    #[test]
    fn complementary_pair_is_predicted_faster_than_back_to_back() {
        // Data-heavy and compute-heavy: the model overlaps one's loading with the other's compute.
        let m = |model: &str, rt: [f64; 3]| MeasuredProfile {
            model: model.into(),
            num_gpu: 1,
            batch_size: 1,
            iteration_time: rt.iter().sum(),
            resource_time_0: rt[0],
            resource_time_1: rt[1],
            resource_time_2: rt[2],
        };
        let (cv, nlp) = (m("cv", [60.0, 10.0, 1.0]), m("nlp", [2.0, 50.0, 1.0]));
        let (order, period) = predicted_group(&[cv.clone(), nlp.clone()]);
        assert_eq!(order.len(), 2);
        let solo_sum = (cv.iteration_time + nlp.iteration_time) / 1000.0;
        assert!(period < solo_sum, "{period} vs {solo_sum}");
        assert!(
            period >= 0.060,
            "cannot beat the longest single resource: {period}"
        );
        // Four jobs: no faster than the busiest resource's total, and the chosen order is
        // the fastest of all 24.
        let four = [cv.clone(), nlp.clone(), cv, nlp];
        let (order, period) = predicted_group(&four);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert!(period >= 0.120 - 1e-9, "two 60 ms data stages: {period}");
        let model = InterleaveModel::default();
        for p in permutations(4) {
            let jobs: Vec<StageProfile> = p.iter().map(|&i| stage_profile(&four[i])).collect();
            assert!(model.period_in_order(&jobs) >= period - 1e-12);
        }
    }

    #[test]
    fn permutations_are_all_orders() {
        assert_eq!(permutations(1), vec![vec![0]]);
        assert_eq!(permutations(2), vec![vec![0, 1], vec![1, 0]]);
        let all = permutations(4);
        assert_eq!(all.len(), 24);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 24);
    }
}
