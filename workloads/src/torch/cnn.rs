//! CV family: a small ResNet-style CNN trained on the image shards, or at `--model-scale
//! paper` the paper's networks ([`super::zoo`]: VGG16/19, ResNet-18, ShuffleNet v2) on
//! 224×224 crops.
//!
//! Stem conv-bn-relu (stride 1, or 2 for the ImageNet-style models), then three stages of residual blocks (conv-bn-relu-conv-bn plus an
//! identity or 1×1-conv shortcut, then relu), stride 2 at the start of stages 2 and 3,
//! global average pooling and a linear classifier: a scaled-down CIFAR ResNet.
//!
//! The model input is `input_size`² whatever the shard stores: a shard of exactly that size
//! gets the cheap crop-and-flip, a larger one the full decode/jitter/blur/resized-crop
//! pipeline of [`crate::data::Augment`] (what makes ResNet and ShuffleNet data-heavy).

use std::path::Path;

use anyhow::Context;
use tch::{Kind, Reduction, Tensor};

use super::device::Mover;
use super::params::{BatchNorm, Conv, Linear, ParamStore};
use super::state::{self, Loaded};
use super::zoo::{self, PaperCnn};
use super::Task;
use crate::data::{ImageReader, Rng};

/// Size of the CNN.
#[derive(Debug, Clone, PartialEq)]
pub struct CnnConfig {
    /// Channels of the three stages.
    pub widths: [i64; 3],
    /// Residual blocks per stage.
    pub blocks: usize,
    /// Height and width of the model input (the data stage resizes to it).
    pub input_size: usize,
    /// Stride of the stem convolution: 1 as a CIFAR ResNet, 2 to downsample early as the
    /// ImageNet ResNet and ShuffleNet stems do (a quarter of the compute after the stem).
    pub stem_stride: i64,
}

/// Which network: the small CNN, or a paper-size one.
#[derive(Debug, Clone, PartialEq)]
pub enum CvArch {
    Small(CnnConfig),
    Paper(PaperCnn),
}

impl CvArch {
    /// Height and width of the model input.
    pub fn input_size(&self) -> usize {
        match self {
            CvArch::Small(cfg) => cfg.input_size,
            CvArch::Paper(_) => zoo::PAPER_INPUT_SIZE,
        }
    }

    /// The network with its parameters in `s`, for `channels`-channel images of `classes`.
    pub(crate) fn build(
        &self,
        s: &mut ParamStore,
        channels: i64,
        classes: i64,
    ) -> anyhow::Result<Box<dyn zoo::Net>> {
        Ok(match self {
            CvArch::Small(cfg) => Box::new(Cnn::new(s, cfg, channels, classes)?),
            CvArch::Paper(arch) => arch.build(s, channels, classes)?,
        })
    }
}

/// A residual basic block (ResNet-18's, and the small CNN's).
pub(crate) struct Block {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    shortcut: Option<(Conv, BatchNorm)>,
}

impl Block {
    pub(crate) fn new(
        s: &mut ParamStore,
        name: &str,
        inp: i64,
        out: i64,
        stride: i64,
    ) -> anyhow::Result<Block> {
        let shortcut = if stride != 1 || inp != out {
            Some((
                Conv::new(s, &format!("{name}.down"), (inp, out, 1), stride)?,
                BatchNorm::new(s, &format!("{name}.down_bn"), out)?,
            ))
        } else {
            None
        };
        Ok(Block {
            conv1: Conv::new(s, &format!("{name}.conv1"), (inp, out, 3), stride)?,
            bn1: BatchNorm::new(s, &format!("{name}.bn1"), out)?,
            conv2: Conv::new(s, &format!("{name}.conv2"), (out, out, 3), 1)?,
            bn2: BatchNorm::new(s, &format!("{name}.bn2"), out)?,
            shortcut,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.f_relu()?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?;
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?)?,
            None => x.shallow_clone(),
        };
        Ok(h.f_add(&skip)?.f_relu()?)
    }
}

struct Cnn {
    stem: Conv,
    stem_bn: BatchNorm,
    blocks: Vec<Block>,
    head: Linear,
}

impl Cnn {
    fn new(
        s: &mut ParamStore,
        cfg: &CnnConfig,
        channels: i64,
        classes: i64,
    ) -> anyhow::Result<Cnn> {
        let stem = Conv::new(s, "stem", (channels, cfg.widths[0], 3), cfg.stem_stride)?;
        let stem_bn = BatchNorm::new(s, "stem_bn", cfg.widths[0])?;
        let mut blocks = Vec::new();
        let mut inp = cfg.widths[0];
        for (stage, &out) in cfg.widths.iter().enumerate() {
            for b in 0..cfg.blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block::new(s, &format!("s{stage}b{b}"), inp, out, stride)?);
                inp = out;
            }
        }
        let head = Linear::new(s, "fc", inp, classes)?;
        Ok(Cnn {
            stem,
            stem_bn,
            blocks,
            head,
        })
    }
}

impl zoo::Net for Cnn {
    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let mut h = self.stem_bn.forward(&self.stem.forward(x)?)?.f_relu()?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let pooled = h.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?;
        self.head.forward(&pooled)
    }
}

/// A CNN job: the data stage reads, decodes and augments a batch of the image shard.
pub struct CvTask {
    model: Box<dyn zoo::Net>,
    mover: Mover,
    reader: ImageReader,
    rng: Rng,
    batch_size: usize,
    input_size: usize,
    signature: String,
    pending: Option<(Tensor, Tensor)>,
}

/// Builds the network for the shard at `images` on `mover`'s device, with parameters from
/// `seed`. Paper-size networks get the ImageNet head (1000 classes) whatever the shard has.
pub fn build(
    name: &str,
    arch: &CvArch,
    images: &Path,
    batch_size: usize,
    seed: u64,
    mover: Mover,
) -> anyhow::Result<(CvTask, ParamStore)> {
    let mut reader = ImageReader::open(images)?;
    let h = reader.header();
    let input_size = arch.input_size();
    anyhow::ensure!(
        input_size > 0 && h.height as usize >= input_size && h.width as usize >= input_size,
        "{name}: the {}x{} images of {} are smaller than the {input_size}x{input_size} model input",
        h.height,
        h.width,
        images.display(),
    );
    let classes = match arch {
        CvArch::Small(_) => h.classes as i64,
        CvArch::Paper(_) => zoo::IMAGENET_CLASSES.max(h.classes as i64),
    };
    let mut rng = Rng::derive(seed, 20);
    // Jobs sharing the shard start at different records.
    reader.set_position(rng.below(h.count))?;
    let mut store = ParamStore::new(seed, mover.device());
    let model = arch.build(&mut store, h.channels as i64, classes)?;
    let signature = format!(
        "cv {name}: {arch:?}, images {}x{}x{} (input {input_size}x{input_size}), {classes} classes",
        h.height, h.width, h.channels,
    );
    let task = CvTask {
        model,
        mover,
        reader,
        rng,
        batch_size,
        input_size,
        signature,
        pending: None,
    };
    Ok((task, store))
}

impl Task for CvTask {
    fn signature(&self) -> String {
        self.signature.clone()
    }

    fn load_batch(&mut self) -> anyhow::Result<()> {
        let b = self
            .reader
            .next_batch(self.batch_size, self.input_size, &mut self.rng)?;
        let shape = b.shape.map(|d| d as i64);
        let x = Tensor::f_from_slice(&b.pixels)?.f_view(shape)?;
        let y = Tensor::f_from_slice(&b.labels)?;
        let [x, y] = self.mover.to_device([x, y])?;
        self.pending = Some((x, y));
        Ok(())
    }

    fn loss(&mut self) -> anyhow::Result<Tensor> {
        let (x, y) = self
            .pending
            .take()
            .context("compute without a loaded batch")?;
        let logits = self.model.forward(&x)?;
        Ok(logits.f_cross_entropy_loss(&y, None::<Tensor>, Reduction::Mean, -100, 0.0)?)
    }

    fn discard_batch(&mut self) {
        self.pending = None;
    }

    fn state(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        state::reader_state(self.reader.position(), &self.rng)
    }

    fn set_state(&mut self, loaded: &Loaded) -> anyhow::Result<()> {
        let (position, rng) = state::restore_reader_state(loaded)?;
        self.reader.set_position(position)?;
        self.rng = rng;
        Ok(())
    }
}
