//! Real training jobs on libtorch (feature `torch`): the same [`JobWorkload`] stages as the
//! emulated jobs, doing real work.
//!
//! - data stage ([`JobWorkload::load_data`]): storage reads, decode and augmentation of the
//!   next batch (CV, NLP), or environment interaction with the current weights (RL). This is
//!   CPU / storage work, which the rotation overlaps with another job's compute.
//! - compute: zero the gradients, forward, backward.
//! - all-reduce and step: flatten every gradient into one buffer, sum it over the ranks,
//!   divide by the world size, then apply our own optimizer (whose state is checkpointable).
//!
//! Model names map to three families ([`family_of`]). By default each is a scaled-down
//! version of what the trace runs so that one iteration takes milliseconds on one CPU
//! thread; [`ModelScale::Paper`] gives the paper's sizes instead (see [`zoo`], [`lm`],
//! [`param_count_at`]). The small models:
//! `vgg*`/`resnet*`/`shufflenet*` → a ResNet-style CNN ([`cnn`]); `bert`/`gpt2` → a
//! decoder-only transformer LM ([`lm`]; BERT is trained causally too); `dqn`/`a2c` → DQN on
//! CartPole ([`dqn`]; A2C is approximated by a bigger DQN that plays more steps per iteration).
//!
//! Data: the CV and NLP jobs read the default shards of [`crate::data`] in
//! `RealJobSpec::data_dir`: ResNet and ShuffleNet the 128×128 images, resized to their 32×32
//! input through the full augmentation pipeline (data-heavy, as in the Muri profiles), VGG
//! the 32×32 images with a cheap crop and flip ([`image_data_for`]), BERT and GPT-2 the
//! tokens (compute-heavy). Missing shards are generated there on first use (deterministic,
//! atomically renamed into place, shared by all jobs), so a fresh machine just works.
//!
//! Devices ([`device`]): a job's parameters, buffers and optimizer state live on
//! [`RealJobSpec::device`]; batches are copied there in the data stage. Checkpoints hold CPU
//! tensors only, so a job saved on a GPU resumes on the CPU and vice versa.

pub mod cnn;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod dqn;
pub mod lm;
pub mod optim;
pub mod params;
pub mod state;
pub mod zoo;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use tch::{Device, Tensor};

use crate::collective::Local;
use crate::data::{self, DataKind, DataOptions};
use crate::stage::{Collective, JobWorkload};
use optim::{Optimizer, OptimizerKind};
use params::ParamStore;
use state::Loaded;

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub struct RealJobSpec {
    pub job_id: u64,
    /// Trace model name, e.g. `resnet18`, `gpt2`, `dqn`.
    pub model: String,
    pub batch_size: usize,
    /// Where the data shards are (generated there if missing).
    pub data_dir: PathBuf,
    /// Seeds parameters, data order, augmentation and exploration.
    pub seed: u64,
    /// Model size: the small models (times a width factor) or the paper's.
    pub scale: ModelScale,
    /// Where parameters, buffers, optimizer state and batches live.
    pub device: Device,
}

impl RealJobSpec {
    /// A spec at the default scale on the CPU, seeded with the job id.
    pub fn new(job_id: u64, model: &str, batch_size: usize, data_dir: &Path) -> RealJobSpec {
        RealJobSpec {
            job_id,
            model: model.to_string(),
            batch_size,
            data_dir: data_dir.to_path_buf(),
            seed: job_id,
            scale: ModelScale::default(),
            device: Device::Cpu,
        }
    }
}

/// `--model-scale`: a width multiplier for the small models, or `paper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelScale {
    /// The small test-size models; multiplies model width (and the LM's sequence length).
    Factor(f64),
    /// The paper's models (VGG16/19, ResNet-18, ShuffleNet v2, BERT-base, GPT-2 small).
    Paper,
}

impl Default for ModelScale {
    fn default() -> Self {
        ModelScale::Factor(1.0)
    }
}

impl std::str::FromStr for ModelScale {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<ModelScale> {
        if s.eq_ignore_ascii_case("paper") {
            return Ok(ModelScale::Paper);
        }
        let factor: f64 = s
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite() && *f > 0.0)
            .with_context(|| format!("model scale `{s}`: expected `paper` or a number > 0"))?;
        Ok(ModelScale::Factor(factor))
    }
}

impl std::fmt::Display for ModelScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelScale::Factor(x) => write!(f, "{x}"),
            ModelScale::Paper => f.write_str("paper"),
        }
    }
}

/// The three model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Cv,
    Nlp,
    Rl,
}

/// The family a trace model name belongs to; unknown names are an error naming the model.
pub fn family_of(model: &str) -> anyhow::Result<Family> {
    let m = model.to_ascii_lowercase();
    if ["vgg", "resnet", "shufflenet"]
        .iter()
        .any(|p| m.starts_with(p))
    {
        Ok(Family::Cv)
    } else if m == "bert" || m == "gpt2" {
        Ok(Family::Nlp)
    } else if m == "dqn" || m == "a2c" {
        Ok(Family::Rl)
    } else {
        bail!(
            "unknown model {model:?}: expected vgg*, resnet*, shufflenet*, bert, gpt2, dqn or a2c"
        )
    }
}

/// A family's model-specific part, driven by [`TorchJob`].
pub(crate) trait Task: Send {
    /// Model, configuration and data shape; a checkpoint restores only into an equal one.
    fn signature(&self) -> String;
    /// The data stage: prepare the next batch.
    fn load_batch(&mut self) -> anyhow::Result<()>;
    /// Forward pass on the prepared batch (consuming it), returning the scalar loss.
    fn loss(&mut self) -> anyhow::Result<Tensor>;
    /// Called after each optimizer step with the new iteration count.
    fn after_step(&mut self, _iterations: u64) -> anyhow::Result<()> {
        Ok(())
    }
    /// Forget a prepared batch (restore replaces the state it came from).
    fn discard_batch(&mut self);
    /// Data position, RNG and other non-tensor state, saved as `task.<name>`.
    fn state(&self) -> anyhow::Result<Vec<(String, Tensor)>>;
    /// Loads what [`Task::state`] saved, from the whole checkpoint.
    fn set_state(&mut self, loaded: &Loaded) -> anyhow::Result<()>;
}

static INTEROP: Once = Once::new();
static THREADS_SET: AtomicBool = AtomicBool::new(false);

/// Sets libtorch's intra-op threads (every call) and inter-op threads (first call only:
/// libtorch refuses to change them later). One thread per op is the default, so on a
/// 2-core machine compute uses one core and the data stage the other.
pub fn configure_threads(n: i32) {
    let n = n.max(1);
    tch::set_num_threads(n);
    INTEROP.call_once(|| {
        // Panics (inside tch) only if inter-op work already started; keep going then.
        let _ = std::panic::catch_unwind(|| tch::set_num_interop_threads(n));
    });
    THREADS_SET.store(true, Ordering::SeqCst);
}

/// Applies the one-thread default unless [`configure_threads`] was called.
fn default_threads() {
    if !THREADS_SET.load(Ordering::SeqCst) {
        configure_threads(1);
    }
}

/// Height and width of every CNN's input.
pub const CNN_INPUT_SIZE: usize = 32;

/// Whether a CV model reads the large stored images (data-heavy, as ResNet and ShuffleNet
/// are in the Muri profiles) rather than the input-sized ones (VGG: balanced).
fn reads_large_images(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("resnet") || m.starts_with("shufflenet")
}

/// The image set a CV model reads: [`DataOptions::large_images`] for ResNet and ShuffleNet
/// (their data stage runs the full [`data::Augment`] pipeline), else the 32×32 default set.
pub fn image_data_for(model: &str) -> DataOptions {
    if reads_large_images(model) {
        DataOptions::large_images()
    } else {
        DataOptions::default()
    }
}

/// The CV network for a model name: the paper's, or the small CNN at a width factor.
fn cv_arch(model: &str, scale: ModelScale) -> anyhow::Result<cnn::CvArch> {
    Ok(match scale {
        ModelScale::Paper => cnn::CvArch::Paper(zoo::PaperCnn::for_model(model)?),
        ModelScale::Factor(f) => cnn::CvArch::Small(cnn_config(model, f)),
    })
}

/// The image set a CV model reads at `scale`: paper-size networks crop 224×224 out of
/// [`DataOptions::paper_images`].
fn cv_data(model: &str, scale: ModelScale) -> DataOptions {
    match scale {
        ModelScale::Paper => DataOptions::paper_images(),
        ModelScale::Factor(_) => image_data_for(model),
    }
}

/// Per-family sizes and optimizers for a model name at `scale`. The CNN widths are chosen so
/// that at batch 32 on one thread ResNet's and ShuffleNet's compute is a fraction of their
/// data stage, while VGG's compute dominates its cheap data stage.
fn cnn_config(model: &str, scale: f64) -> cnn::CnnConfig {
    let m = model.to_ascii_lowercase();
    // (widths, blocks per stage, stem stride): the ImageNet-style models downsample in the
    // stem, which with their narrow widths keeps their compute well below their data stage.
    let (widths, blocks, stem_stride) = if m.starts_with("vgg") {
        ([24, 48, 96], 1, 1)
    } else if m.starts_with("shufflenet") {
        ([6, 12, 24], 1, 2)
    } else {
        ([8, 16, 32], 1, 2)
    };
    cnn::CnnConfig {
        widths: widths.map(|w| scaled(w, scale, 4)),
        blocks,
        input_size: CNN_INPUT_SIZE,
        stem_stride,
    }
}

/// The LMs are compute-heavy (their data stage is a token read): at batch 8 on one thread
/// their compute takes about as long as ResNet-18's data stage at batch 32, so the two pair
/// up well in the rotation. At paper scale: BERT-base (vocabulary 30522, 512 positions,
/// sequences of 128) and GPT-2 small (50257, 1024, 1024), 12 layers of width 768, 12 heads.
fn lm_config(model: &str, scale: ModelScale) -> lm::LmConfig {
    let bert = model.eq_ignore_ascii_case("bert");
    let ModelScale::Factor(scale) = scale else {
        let (vocab, positions, seq_len) = if bert {
            (30522, 512, 128)
        } else {
            (50257, 1024, 1024)
        };
        return lm::LmConfig {
            d_model: 768,
            heads: 12,
            layers: 12,
            seq_len,
            max_positions: positions,
            vocab: Some(vocab),
            tied_head: true,
        };
    };
    let heads = 4;
    let (d, layers, seq) = if bert { (128, 3, 32) } else { (128, 2, 48) };
    let seq_len = scaled(seq, scale, 8) as usize;
    lm::LmConfig {
        d_model: scaled(d / heads, scale, 4) * heads,
        heads,
        layers,
        seq_len,
        max_positions: seq_len,
        vocab: None,
        tied_head: false,
    }
}

/// RL at paper scale keeps CartPole (the environment bounds what the network sees) with a
/// 512-wide Q-network, A2C's playing more steps per iteration as at the small scale.
fn dqn_config(model: &str, scale: ModelScale) -> dqn::DqnConfig {
    let a2c = model.eq_ignore_ascii_case("a2c");
    let hidden = match scale {
        ModelScale::Paper => 512,
        ModelScale::Factor(f) => scaled(if a2c { 128 } else { 64 }, f, 8),
    };
    dqn::DqnConfig {
        hidden,
        steps_per_iter: if a2c { 32 } else { 16 },
        replay_capacity: 20_000,
        warmup_steps: 500,
        gamma: 0.99,
        eps_start: 1.0,
        eps_end: 0.05,
        eps_decay_steps: 5_000,
        target_sync: 250,
    }
}

fn scaled(base: i64, scale: f64, min: i64) -> i64 {
    ((base as f64 * scale).round() as i64).max(min)
}

fn optimizer_for(family: Family) -> OptimizerKind {
    match family {
        Family::Cv => OptimizerKind::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
        },
        Family::Nlp | Family::Rl => OptimizerKind::AdamW {
            lr: if family == Family::Nlp { 2e-3 } else { 1e-3 },
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if family == Family::Nlp { 0.01 } else { 0.0 },
        },
    }
}

/// Builds the job `spec` describes (generating missing data shards in `spec.data_dir`).
pub fn build_job(spec: &RealJobSpec) -> anyhow::Result<Box<dyn JobWorkload>> {
    Ok(Box::new(TorchJob::new(spec)?))
}

/// A real model, its optimizer and its data pipeline.
pub struct TorchJob {
    job_id: u64,
    device: Device,
    task: Box<dyn Task>,
    store: ParamStore,
    opt: Optimizer,
    iterations: u64,
    last_loss: Option<f64>,
    grads_ready: bool,
}

impl TorchJob {
    /// Builds the model for `spec`; see [`build_job`].
    pub fn new(spec: &RealJobSpec) -> anyhow::Result<TorchJob> {
        ensure!(
            spec.batch_size > 0,
            "job {}: batch size must be positive",
            spec.job_id
        );
        if let ModelScale::Factor(f) = spec.scale {
            ensure!(
                f.is_finite() && f > 0.0,
                "job {}: scale {f} must be positive",
                spec.job_id,
            );
        }
        let family = family_of(&spec.model)?;
        default_threads();
        let (task, store) = build_task(spec, family)
            .with_context(|| format!("building job {} ({})", spec.job_id, spec.model))?;
        let opt = Optimizer::new(optimizer_for(family), &store.params)?;
        Ok(TorchJob {
            job_id: spec.job_id,
            device: spec.device,
            task,
            store,
            opt,
            iterations: 0,
            last_loss: None,
            grads_ready: false,
        })
    }

    /// Loss of the latest compute stage.
    pub fn last_loss(&self) -> Option<f64> {
        self.last_loss
    }

    /// Optimizer steps taken over the job's life (restores included).
    pub fn iterations_done(&self) -> u64 {
        self.iterations
    }

    /// Every parameter then every buffer, flattened in a fixed order (a snapshot for
    /// comparisons; empty only if libtorch fails to copy a tensor out, which
    /// [`JobWorkload::param_checksum`] reports as `None`).
    pub fn flat_params(&self) -> Vec<f32> {
        self.store.flat_values().unwrap_or_default()
    }

    /// Trainable scalars in the model.
    pub fn param_count(&self) -> usize {
        self.store.param_count()
    }

    /// The model/config description a checkpoint must match.
    pub fn signature(&self) -> String {
        self.task.signature()
    }

    /// Where the job's tensors live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Every parameter, buffer and optimizer state tensor and the device it is on.
    pub fn tensor_devices(&self) -> Vec<(String, Device)> {
        let params = self.store.params.iter().chain(&self.store.buffers);
        params
            .map(|(n, t)| (n.clone(), t.device()))
            .chain(
                self.opt
                    .named_state(&self.store.params)
                    .map(|(n, t)| (n, t.device())),
            )
            .collect()
    }

    fn zero_grads(&self) -> anyhow::Result<()> {
        for (_, p) in &self.store.params {
            let mut g = p.f_grad()?;
            if g.defined() {
                let _ = g.f_detach_()?;
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }

    /// All gradients in store order as one buffer (zeros for a parameter without one).
    fn flat_grads(&self) -> anyhow::Result<Vec<f32>> {
        let mut buf = Vec::with_capacity(self.store.param_count());
        for (_, p) in &self.store.params {
            let g = p.f_grad()?;
            if g.defined() {
                buf.extend(params::to_vec_f32(&g)?);
            } else {
                buf.extend(std::iter::repeat_n(0.0, p.numel()));
            }
        }
        Ok(buf)
    }

    /// Writes `buf` (laid out as [`TorchJob::flat_grads`]) back into the gradients.
    fn set_grads(&self, buf: &[f32]) -> anyhow::Result<()> {
        let mut offset = 0;
        for (_, p) in &self.store.params {
            let n = p.numel();
            let g = p.f_grad()?;
            if g.defined() {
                let src =
                    Tensor::f_from_slice(&buf[offset..offset + n])?.f_view(p.size().as_slice())?;
                state::copy_into(&g, &src)?;
            }
            offset += n;
        }
        Ok(())
    }

    /// Replaces every gradient by its mean over the ranks: on the GPU with a collective that
    /// sums device memory (NCCL), in place; alone on a GPU, nothing to do; otherwise through
    /// one host buffer.
    fn average_grads(&self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        let on_gpu = self.device.is_cuda();
        if on_gpu && comm.size() == 1 {
            return Ok(());
        }
        if on_gpu && comm.reduces_device_memory() {
            return self.average_grads_on_device(comm, slot);
        }
        let mut buf = self.flat_grads()?;
        comm.allreduce_sum(slot, &mut buf)?;
        let inv = 1.0 / comm.size().max(1) as f32;
        buf.iter_mut().for_each(|v| *v *= inv);
        self.set_grads(&buf)
    }

    fn average_grads_on_device(&self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        let mut grads = Vec::with_capacity(self.store.params.len());
        for (name, p) in &self.store.params {
            let g = p.f_grad()?;
            ensure!(
                g.defined() && g.is_contiguous() && g.kind() == tch::Kind::Float,
                "job {}: gradient of {name} is not a contiguous f32 tensor",
                self.job_id
            );
            grads.push(g);
        }
        let buffers: Vec<(u64, usize)> = grads
            .iter()
            .map(|g| (g.data_ptr() as u64, g.numel()))
            .collect();
        // SAFETY: each gradient is `numel` contiguous f32s on this rank's GPU, written by the
        // compute stage, which ended when its work had completed; `grads` keeps them alive.
        unsafe { comm.allreduce_sum_device(slot, &buffers)? };
        let inv = 1.0 / comm.size() as f64;
        let _guard = tch::no_grad_guard();
        for mut g in grads {
            let _ = g.f_mul_scalar_(inv)?;
        }
        Ok(())
    }

    fn named_tensors(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut named = vec![
            (
                "meta.signature".to_string(),
                Tensor::f_from_slice(self.task.signature().as_bytes())?,
            ),
            (
                "meta.counters".to_string(),
                state::u64_tensor(&self.counters())?,
            ),
        ];
        for (name, t) in &self.store.params {
            named.push((format!("param.{name}"), device::to_cpu(&t.f_detach()?)?));
        }
        for (name, t) in &self.store.buffers {
            named.push((format!("buffer.{name}"), device::to_cpu(t)?));
        }
        for (name, t) in self.opt.named_state(&self.store.params) {
            named.push((name, device::to_cpu(t)?));
        }
        for (name, t) in self.task.state()? {
            named.push((format!("task.{name}"), t));
        }
        Ok(named)
    }

    /// Iterations, optimizer steps, and the last loss (presence flag and f64 bits).
    fn counters(&self) -> [u64; 4] {
        [
            self.iterations,
            self.opt.step,
            u64::from(self.last_loss.is_some()),
            self.last_loss.unwrap_or(0.0).to_bits(),
        ]
    }

    /// Checks that `loaded` fits this model exactly, before anything is overwritten.
    fn check_checkpoint(&self, loaded: &Loaded) -> anyhow::Result<()> {
        let sig = state::get(loaded, "meta.signature")?;
        let mut bytes = vec![0u8; sig.numel()];
        sig.f_copy_data(&mut bytes, sig.numel())?;
        let theirs = String::from_utf8_lossy(&bytes);
        let ours = self.task.signature();
        ensure!(
            theirs == ours,
            "checkpoint is for a different model:\n  checkpoint: {theirs}\n  this job:   {ours}"
        );
        for (name, t) in &self.store.params {
            state::get_like(loaded, &format!("param.{name}"), t)?;
        }
        for (name, t) in &self.store.buffers {
            state::get_like(loaded, &format!("buffer.{name}"), t)?;
        }
        for (name, t) in self.opt.named_state(&self.store.params) {
            state::get_like(loaded, &name, t)?;
        }
        Ok(())
    }

    fn apply_checkpoint(&mut self, loaded: &Loaded) -> anyhow::Result<()> {
        for (name, t) in self
            .store
            .params
            .iter()
            .map(|(n, t)| (format!("param.{n}"), t))
        {
            state::copy_into(t, state::get(loaded, &name)?)?;
        }
        for (name, t) in self
            .store
            .buffers
            .iter()
            .map(|(n, t)| (format!("buffer.{n}"), t))
        {
            state::copy_into(t, state::get(loaded, &name)?)?;
        }
        for (name, t) in self.opt.named_state(&self.store.params) {
            state::copy_into(t, state::get(loaded, &name)?)?;
        }
        self.task.set_state(loaded)?;
        let c = state::get_u64s(loaded, "meta.counters", 4)?;
        self.iterations = c[0];
        self.opt.step = c[1];
        self.last_loss = (c[2] == 1).then(|| f64::from_bits(c[3]));
        self.task.discard_batch();
        self.grads_ready = false;
        Ok(())
    }
}

fn build_task(spec: &RealJobSpec, family: Family) -> anyhow::Result<(Box<dyn Task>, ParamStore)> {
    let opts = DataOptions::default();
    let mover = device::Mover::new(spec.device)?;
    let (model, batch, seed) = (spec.model.as_str(), spec.batch_size, spec.seed);
    Ok(match family {
        Family::Cv => {
            let data = cv_data(model, spec.scale);
            let images = data::generate(&spec.data_dir, DataKind::Images, &data)?;
            let arch = cv_arch(model, spec.scale)?;
            let (task, store) = cnn::build(model, &arch, &images, batch, seed, mover)?;
            (Box::new(task), store)
        }
        Family::Nlp => {
            let tokens = data::generate(&spec.data_dir, DataKind::Tokens, &opts)?;
            let cfg = lm_config(model, spec.scale);
            let (task, store) = lm::build(model, &cfg, &tokens, batch, seed, mover)?;
            (Box::new(task), store)
        }
        Family::Rl => {
            let cfg = dqn_config(model, spec.scale);
            let (task, store) = dqn::build(model, &cfg, batch, seed, mover)?;
            (Box::new(task), store)
        }
    })
}

/// Trainable parameters of `model` at `scale` without building it for real (shapes only,
/// no data, no random draws): how the paper-size models are checked against the published
/// figures. The LMs count over their configured vocabulary (the small ones: the default
/// token shard's).
pub fn param_count_at(model: &str, scale: ModelScale) -> anyhow::Result<usize> {
    let defaults = DataOptions::default();
    match family_of(model)? {
        Family::Cv => {
            let classes = match scale {
                ModelScale::Paper => zoo::IMAGENET_CLASSES,
                ModelScale::Factor(_) => defaults.classes as i64,
            };
            let mut store = ParamStore::shapes_only();
            cv_arch(model, scale)?.build(&mut store, defaults.channels as i64, classes)?;
            Ok(store.param_count())
        }
        Family::Nlp => lm::param_count(&lm_config(model, scale), defaults.vocab),
        Family::Rl => dqn::param_count(&dqn_config(model, scale)),
    }
}

/// The batch size the paper's trace runs `model` at (its profiles' batch sizes).
pub fn paper_batch_size(model: &str) -> anyhow::Result<usize> {
    let m = model.to_ascii_lowercase();
    Ok(match family_of(model)? {
        Family::Cv if m.starts_with("vgg") => 16,
        Family::Cv => 128,
        Family::Nlp => 4,
        Family::Rl if m == "a2c" => 64,
        Family::Rl => 128,
    })
}

impl JobWorkload for TorchJob {
    fn job_id(&self) -> u64 {
        self.job_id
    }

    fn load_data(&mut self) -> anyhow::Result<()> {
        self.task.load_batch()
    }

    /// On a GPU the stage ends when its kernels have completed: reading the loss back is
    /// queued behind the backward pass on libtorch's stream.
    fn compute(&mut self) -> anyhow::Result<()> {
        self.zero_grads()?;
        let loss = self.task.loss()?;
        loss.f_backward()?;
        let value = loss.f_double_value(&[])?;
        ensure!(value.is_finite(), "job {}: loss is {value}", self.job_id);
        tracing::debug!(target: "muri_workloads::loss", job = self.job_id, iteration = self.iterations + 1, loss = value);
        self.last_loss = Some(value);
        self.grads_ready = true;
        Ok(())
    }

    fn allreduce_and_step(&mut self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()> {
        ensure!(
            self.grads_ready,
            "job {}: step without a computed gradient",
            self.job_id
        );
        self.average_grads(comm, slot)?;
        self.opt.apply(&self.store.params)?;
        self.iterations += 1;
        self.grads_ready = false;
        self.task.after_step(self.iterations)
    }

    /// One file, written to `<path>.tmp` and renamed. A batch loaded but not yet computed is
    /// not saved (checkpoints are taken between iterations).
    fn checkpoint(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let named = self.named_tensors()?;
        Tensor::save_multi(&named, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }

    fn restore(&mut self, path: &Path) -> anyhow::Result<()> {
        let loaded: Loaded = Tensor::load_multi(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?
            .into_iter()
            .collect();
        self.check_checkpoint(&loaded)
            .and_then(|()| self.apply_checkpoint(&loaded))
            .with_context(|| format!("restoring job {} from {}", self.job_id, path.display()))
    }

    fn last_loss(&self) -> Option<f64> {
        self.last_loss
    }

    fn iterations_done(&self) -> u64 {
        self.iterations
    }

    fn param_checksum(&self) -> Option<Vec<f32>> {
        self.store.flat_values().ok()
    }
}

/// Median per-stage times of one job run alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoloProfile {
    pub data_ms: f64,
    pub compute_ms: f64,
    pub step_ms: f64,
    pub iteration_ms: f64,
}

/// Runs `warmup` untimed then `iterations` timed iterations of `spec` alone on this thread
/// (load, compute, step in sequence, single-rank [`Local`] collective) and returns the
/// median time of each stage and of the whole iteration.
pub fn profile_solo(
    spec: &RealJobSpec,
    warmup: usize,
    iterations: usize,
) -> anyhow::Result<SoloProfile> {
    ensure!(
        iterations > 0,
        "profile_solo needs at least one timed iteration"
    );
    let mut job = TorchJob::new(spec)?;
    let comm = Local { rank: 0, size: 1 };
    let mut samples: [Vec<f64>; 4] = Default::default();
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        job.load_data()?;
        let t1 = Instant::now();
        job.compute()?;
        let t2 = Instant::now();
        job.allreduce_and_step(&comm, 0)?;
        let t3 = Instant::now();
        if i >= warmup {
            for (s, (a, b)) in samples
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t0, t3)])
            {
                s.push((b - a).as_secs_f64() * 1000.0);
            }
        }
    }
    let [data_ms, compute_ms, step_ms, iteration_ms] = samples.map(median);
    Ok(SoloProfile {
        data_ms,
        compute_ms,
        step_ms,
        iteration_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
