//! Real-workload commands: `muri data gen` (synthetic data sets on disk) and `muri profile`
//! (stage times of a job run alone; the interleaving check on a pair).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use muri::models::{self, MeasuredProfile};
use muri::profile::{self, JobChoice, TrainerSetup};
use muri::testbed::worker;
use muri_workloads::data::{self, DataKind, DataOptions};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write the synthetic data sets the real models read: image records (CV) and token
    /// shards (NLP) in binary formats. The RL models need none (CartPole runs in-process).
    ///
    /// Without size options it writes the three default sets (~65 MB, a few seconds): 32×32
    /// images (vgg*), 128×128 images (resnet*, shufflenet*: their data stage decodes, jitters,
    /// blurs and crops the whole image, which makes them data-heavy) and 1 Mi tokens.
    /// Example: `muri data gen --dir data`.
    Gen(DataGenArgs),
}

#[derive(Args)]
pub struct DataGenArgs {
    /// Output directory (trainers read `--data-dir`, default `data`).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Number of images.
    #[arg(long)]
    images: Option<usize>,
    /// Image height and width in pixels.
    #[arg(long = "image-size", alias = "image_size")]
    image_size: Option<usize>,
    /// Number of image classes.
    #[arg(long)]
    classes: Option<usize>,
    /// Number of tokens.
    #[arg(long)]
    tokens: Option<usize>,
    /// Vocabulary size.
    #[arg(long)]
    vocab: Option<usize>,
    /// Random seed (same seed, same data).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run_data(cmd: DataCommand) -> anyhow::Result<()> {
    let DataCommand::Gen(args) = cmd;
    let custom = args.images.is_some()
        || args.image_size.is_some()
        || args.classes.is_some()
        || args.tokens.is_some()
        || args.vocab.is_some()
        || args.seed.is_some();
    let paths = if custom {
        let d = DataOptions::default();
        let opts = DataOptions {
            images: args.images.unwrap_or(d.images),
            image_size: args.image_size.unwrap_or(d.image_size),
            channels: d.channels,
            classes: args.classes.unwrap_or(d.classes),
            tokens: args.tokens.unwrap_or(d.tokens),
            vocab: args.vocab.unwrap_or(d.vocab),
            seed: args.seed.unwrap_or(d.seed),
        };
        eprintln!("note: trainers read the default sets; custom sizes are for your own use");
        vec![
            data::generate(&args.dir, DataKind::Images, &opts)?,
            data::generate(&args.dir, DataKind::Tokens, &opts)?,
        ]
    } else {
        let d = data::generate_default(&args.dir)?;
        vec![d.images, d.large_images, d.tokens]
    };
    for path in paths {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        outln!("{} ({:.1} MB)", path.display(), bytes as f64 / 1e6)?;
    }
    Ok(())
}

#[derive(Args)]
pub struct ProfileArgs {
    /// Model name as in traces (vgg16, vgg19, resnet18, shufflenet_v2_x1_0 → CNN; bert,
    /// gpt2 → transformer LM; dqn, a2c → DQN on CartPole).
    #[arg(long)]
    model: String,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch: u32,
    /// Ranks (GPUs); above 1 the job runs under `mpirun -n GPUS` (trainer built with `mpi`).
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// Measured iterations (after the warm-up).
    #[arg(long, default_value_t = 20)]
    iterations: u64,
    /// Warm-up iterations before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Also profile this job (MODEL:BATCH; repeat for up to 3) and then run all of them as
    /// one interleaved group: prints the measured group period next to the sum of solo
    /// times and the model's prediction.
    #[arg(long, value_name = "MODEL:BATCH")]
    with: Vec<JobChoice>,
    /// Append the solo profile(s) to this catalogue CSV (use with `muri trace gen --catalogue`).
    #[arg(long, value_name = "CSV", num_args = 0..=1,
          default_missing_value = "workloads/catalogue.csv")]
    append: Option<PathBuf>,
    /// Data sets of real workloads (made by `muri data gen`; missing ones are generated).
    #[arg(long = "data-dir", alias = "data_dir", default_value = "data")]
    data_dir: PathBuf,
    /// libtorch threads for compute (1 leaves the second core to the data stage).
    #[arg(long = "torch-threads", alias = "torch_threads", default_value_t = 1)]
    torch_threads: u32,
    /// Model size: a width factor for the small models, or `paper` for the paper's models.
    #[arg(long = "model-scale", alias = "model_scale", default_value = "1", value_parser = parse_model_scale)]
    model_scale: String,
    /// Where the trainer runs the model: `auto` (the GPU when libtorch sees one), `cpu`,
    /// `cuda` (an error without a GPU).
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    device: String,
    /// The trainer (default: muri-trainer next to muri, built with `--features torch`).
    #[arg(long)]
    trainer: Option<PathBuf>,
}

/// `paper` or a number > 0 (what the trainer's `--model-scale` accepts).
fn parse_model_scale(s: &str) -> Result<String, String> {
    let factor_ok = s.parse::<f64>().is_ok_and(|f| f.is_finite() && f > 0.0);
    if factor_ok || s.eq_ignore_ascii_case("paper") {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}`: expected `paper` or a number > 0"))
    }
}

pub fn run_profile(args: ProfileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.with.len() <= 3,
        "--with: a group has at most 4 jobs (got {} more)",
        args.with.len()
    );
    let setup = TrainerSetup {
        trainer: args.trainer.clone().unwrap_or_else(worker::default_trainer),
        data_dir: args.data_dir.clone(),
        torch_threads: args.torch_threads,
        model_scale: args.model_scale.clone(),
        device: args.device.clone(),
        gpus: args.gpus.max(1),
        iterations: args.iterations.max(2),
        warmup: args.warmup,
    };
    let mut jobs = vec![JobChoice {
        model: args.model.clone(),
        batch: args.batch,
    }];
    jobs.extend(args.with.iter().cloned());
    let profiles = jobs
        .iter()
        .map(|job| profile_one(&setup, job))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if jobs.len() == 1 {
        return append(&args, &profiles);
    }
    let (order, predicted) = profile::predicted_group(&profiles);
    let slots: Vec<&JobChoice> = order.iter().map(|&i| &jobs[i]).collect();
    let group = profile::measure(&setup, &slots)?;
    let measured = group.phase_iter_s.first().copied().unwrap_or(f64::NAN);
    let solo_sum = profiles.iter().map(|p| p.iteration_time).sum::<f64>() / 1000.0;
    let names = |js: &[&JobChoice]| js.iter().map(|j| j.model.clone()).collect::<Vec<_>>();
    let all: Vec<&JobChoice> = jobs.iter().collect();
    outln!(
        "{} {} (slots: {}):",
        if jobs.len() == 2 { "pair" } else { "group" },
        names(&all).join(" + "),
        names(&slots).join(", ")
    )?;
    outln!("  sum of solo iterations  {:8.2} ms", solo_sum * 1000.0)?;
    outln!(
        "  model prediction        {:8.2} ms  (period_in_order, no slowdown factor)",
        predicted * 1000.0
    )?;
    outln!(
        "  measured group period   {:8.2} ms  ({:+.1} % vs prediction, {:.2}x faster than back to back)",
        measured * 1000.0,
        (measured / predicted - 1.0) * 100.0,
        solo_sum / measured
    )?;
    append(&args, &profiles)
}

fn profile_one(setup: &TrainerSetup, job: &JobChoice) -> anyhow::Result<MeasuredProfile> {
    let m = profile::measure(setup, &[job])
        .with_context(|| format!("profiling {}:{}", job.model, job.batch))?;
    let p = profile::solo_profile(job, setup.gpus, &m);
    outln!(
        "{} batch {} on {} GPU(s), {} iterations after {} warm-up:",
        job.model,
        job.batch,
        setup.gpus,
        setup.iterations,
        setup.warmup
    )?;
    outln!(
        "  resource_time_0 (data)        {:8.2} ms",
        p.resource_time_0
    )?;
    outln!(
        "  resource_time_1 (compute)     {:8.2} ms",
        p.resource_time_1
    )?;
    outln!(
        "  resource_time_2 (all-reduce)  {:8.2} ms",
        p.resource_time_2
    )?;
    outln!(
        "  iteration_time                {:8.2} ms",
        p.iteration_time
    )?;
    Ok(p)
}

fn append(args: &ProfileArgs, rows: &[MeasuredProfile]) -> anyhow::Result<()> {
    let Some(path) = &args.append else {
        return Ok(());
    };
    for row in rows {
        models::append_to_catalogue(path, row)?;
    }
    eprintln!("appended {} profile(s) to {}", rows.len(), path.display());
    Ok(())
}
