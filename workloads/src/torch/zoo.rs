//! The paper's CNNs at full size (`--model-scale paper`), laid out as torchvision builds
//! them so that their parameter counts match the published figures: VGG16/19 (138.4 M /
//! 143.7 M), ResNet-18 (11.7 M), ShuffleNet v2 ×1.0 (2.3 M). VGG's dropout is left out (the
//! stage times do not depend on it; training stays deterministic).

use anyhow::bail;
use tch::{Kind, Tensor};

use super::cnn::Block;
use super::params::{BatchNorm, Conv, Linear, ParamStore};

/// Height and width of a paper-size CNN's input (ImageNet crops).
pub const PAPER_INPUT_SIZE: usize = 224;
/// Classes of a paper-size CNN's head.
pub const IMAGENET_CLASSES: i64 = 1000;

/// A network the CV task can train: images `[batch, channels, h, w]` to logits.
pub(crate) trait Net: Send {
    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor>;
}

/// Which paper CNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaperCnn {
    Vgg16,
    Vgg19,
    ResNet18,
    ShuffleNetV2,
}

impl PaperCnn {
    /// The network a trace model name stands for.
    pub fn for_model(model: &str) -> anyhow::Result<PaperCnn> {
        let m = model.to_ascii_lowercase();
        Ok(if m.starts_with("vgg19") {
            PaperCnn::Vgg19
        } else if m.starts_with("vgg") {
            PaperCnn::Vgg16
        } else if m.starts_with("resnet") {
            PaperCnn::ResNet18
        } else if m.starts_with("shufflenet") {
            PaperCnn::ShuffleNetV2
        } else {
            bail!("no paper-size CNN for model {model:?}")
        })
    }

    pub(crate) fn build(
        self,
        s: &mut ParamStore,
        channels: i64,
        classes: i64,
    ) -> anyhow::Result<Box<dyn Net>> {
        Ok(match self {
            PaperCnn::Vgg16 => Box::new(Vgg::new(s, &VGG16, channels, classes)?),
            PaperCnn::Vgg19 => Box::new(Vgg::new(s, &VGG19, channels, classes)?),
            PaperCnn::ResNet18 => Box::new(ResNet18::new(s, channels, classes)?),
            PaperCnn::ShuffleNetV2 => Box::new(ShuffleNetV2::new(s, channels, classes)?),
        })
    }
}

/// Output channels of each 3×3 convolution; 0 is a 2×2 max pool.
const VGG16: [i64; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];
const VGG19: [i64; 21] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

struct Vgg {
    /// `None` is a max pool.
    features: Vec<Option<Conv>>,
    classifier: [Linear; 3],
}

impl Vgg {
    fn new(s: &mut ParamStore, layout: &[i64], channels: i64, classes: i64) -> anyhow::Result<Vgg> {
        let mut inp = channels;
        let mut features = Vec::with_capacity(layout.len());
        for (i, &out) in layout.iter().enumerate() {
            if out == 0 {
                features.push(None);
            } else {
                features.push(Some(Conv::with_bias(
                    s,
                    &format!("features.{i}"),
                    (inp, out, 3),
                    1,
                )?));
                inp = out;
            }
        }
        Ok(Vgg {
            features,
            classifier: [
                Linear::new(s, "classifier.0", inp * 7 * 7, 4096)?,
                Linear::new(s, "classifier.3", 4096, 4096)?,
                Linear::new(s, "classifier.6", 4096, classes)?,
            ],
        })
    }
}

impl Net for Vgg {
    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let mut h = x.shallow_clone();
        for layer in &self.features {
            h = match layer {
                Some(conv) => conv.forward(&h)?.f_relu()?,
                None => h.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?,
            };
        }
        let h = h.f_adaptive_avg_pool2d([7, 7])?.f_flatten(1, -1)?;
        let h = self.classifier[0].forward(&h)?.f_relu()?;
        let h = self.classifier[1].forward(&h)?.f_relu()?;
        self.classifier[2].forward(&h)
    }
}

struct ResNet18 {
    stem: Conv,
    stem_bn: BatchNorm,
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet18 {
    fn new(s: &mut ParamStore, channels: i64, classes: i64) -> anyhow::Result<ResNet18> {
        let stem = Conv::new(s, "conv1", (channels, 64, 7), 2)?;
        let stem_bn = BatchNorm::new(s, "bn1", 64)?;
        let mut blocks = Vec::new();
        let mut inp = 64;
        for (stage, out) in [64, 128, 256, 512].into_iter().enumerate() {
            for b in 0..2 {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let name = format!("layer{}.{b}", stage + 1);
                blocks.push(Block::new(s, &name, inp, out, stride)?);
                inp = out;
            }
        }
        Ok(ResNet18 {
            stem,
            stem_bn,
            blocks,
            fc: Linear::new(s, "fc", 512, classes)?,
        })
    }
}

impl Net for ResNet18 {
    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let mut h = self.stem_bn.forward(&self.stem.forward(x)?)?.f_relu()?;
        h = h.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let pooled = h.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?;
        self.fc.forward(&pooled)
    }
}

/// conv → batch norm, optionally → ReLU.
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
    relu: bool,
}

impl ConvBn {
    fn pointwise(s: &mut ParamStore, name: &str, inp: i64, out: i64) -> anyhow::Result<ConvBn> {
        Ok(ConvBn {
            conv: Conv::new(s, &format!("{name}.conv"), (inp, out, 1), 1)?,
            bn: BatchNorm::new(s, &format!("{name}.bn"), out)?,
            relu: true,
        })
    }

    fn depthwise(
        s: &mut ParamStore,
        name: &str,
        channels: i64,
        stride: i64,
    ) -> anyhow::Result<ConvBn> {
        Ok(ConvBn {
            conv: Conv::depthwise(s, &format!("{name}.conv"), (channels, 3), stride)?,
            bn: BatchNorm::new(s, &format!("{name}.bn"), channels)?,
            relu: false,
        })
    }

    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let h = self.bn.forward(&self.conv.forward(x)?)?;
        Ok(if self.relu { h.f_relu()? } else { h })
    }
}

fn chain(layers: &[ConvBn], x: &Tensor) -> anyhow::Result<Tensor> {
    let mut h = x.shallow_clone();
    for layer in layers {
        h = layer.forward(&h)?;
    }
    Ok(h)
}

/// ShuffleNet v2's unit: with stride 1 half the channels pass through untouched; with
/// stride 2 both halves are computed (branch 1 downsamples the input). Then the two halves
/// are concatenated and their channels shuffled.
struct ShuffleUnit {
    branch1: Vec<ConvBn>,
    branch2: Vec<ConvBn>,
}

impl ShuffleUnit {
    fn new(
        s: &mut ParamStore,
        name: &str,
        inp: i64,
        out: i64,
        stride: i64,
    ) -> anyhow::Result<ShuffleUnit> {
        let half = out / 2;
        let branch1 = if stride > 1 {
            vec![
                ConvBn::depthwise(s, &format!("{name}.branch1.0"), inp, stride)?,
                ConvBn::pointwise(s, &format!("{name}.branch1.2"), inp, half)?,
            ]
        } else {
            Vec::new()
        };
        let into_branch2 = if stride > 1 { inp } else { half };
        let branch2 = vec![
            ConvBn::pointwise(s, &format!("{name}.branch2.0"), into_branch2, half)?,
            ConvBn::depthwise(s, &format!("{name}.branch2.3"), half, stride)?,
            ConvBn::pointwise(s, &format!("{name}.branch2.5"), half, half)?,
        ];
        Ok(ShuffleUnit { branch1, branch2 })
    }

    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let joined = if self.branch1.is_empty() {
            let halves = x.f_chunk(2, 1)?;
            Tensor::f_cat(
                &[halves[0].shallow_clone(), chain(&self.branch2, &halves[1])?],
                1,
            )?
        } else {
            Tensor::f_cat(&[chain(&self.branch1, x)?, chain(&self.branch2, x)?], 1)?
        };
        channel_shuffle(&joined, 2)
    }
}

fn channel_shuffle(x: &Tensor, groups: i64) -> anyhow::Result<Tensor> {
    let (b, c, h, w) = x.size4()?;
    Ok(x.f_view([b, groups, c / groups, h, w])?
        .f_transpose(1, 2)?
        .f_contiguous()?
        .f_view([b, c, h, w])?)
}

struct ShuffleNetV2 {
    stem: ConvBn,
    units: Vec<ShuffleUnit>,
    last: ConvBn,
    fc: Linear,
}

impl ShuffleNetV2 {
    /// The ×1.0 width: stages of 116, 232, 464 channels repeated 4, 8, 4 times.
    fn new(s: &mut ParamStore, channels: i64, classes: i64) -> anyhow::Result<ShuffleNetV2> {
        let stem = ConvBn {
            conv: Conv::new(s, "conv1.conv", (channels, 24, 3), 2)?,
            bn: BatchNorm::new(s, "conv1.bn", 24)?,
            relu: true,
        };
        let mut units = Vec::new();
        let mut inp = 24;
        for (stage, (out, repeats)) in [(116, 4), (232, 8), (464, 4)].into_iter().enumerate() {
            for u in 0..repeats {
                let stride = if u == 0 { 2 } else { 1 };
                let name = format!("stage{}.{u}", stage + 2);
                units.push(ShuffleUnit::new(s, &name, inp, out, stride)?);
                inp = out;
            }
        }
        Ok(ShuffleNetV2 {
            stem,
            units,
            last: ConvBn::pointwise(s, "conv5", inp, 1024)?,
            fc: Linear::new(s, "fc", 1024, classes)?,
        })
    }
}

impl Net for ShuffleNetV2 {
    fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let mut h = self.stem.forward(x)?;
        h = h.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        for unit in &self.units {
            h = unit.forward(&h)?;
        }
        let h = self.last.forward(&h)?;
        let pooled = h.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?;
        self.fc.forward(&pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The light paper CNNs with real weights: one forward of two 224×224 images gives
    /// finite ImageNet logits (VGG's 15 GFLOPs per image are left to the GPU check).
    #[test]
    fn light_paper_cnns_run_a_forward() {
        for arch in [PaperCnn::ResNet18, PaperCnn::ShuffleNetV2] {
            let mut store = ParamStore::new(5, Device::Cpu);
            let net = arch.build(&mut store, 3, IMAGENET_CLASSES).unwrap();
            let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
            let logits = tch::no_grad(|| net.forward(&x)).unwrap();
            assert_eq!(logits.size(), [2, IMAGENET_CLASSES], "{arch:?}");
            let finite = logits.isfinite().all().int64_value(&[]);
            assert_eq!(finite, 1, "{arch:?}: non-finite logits");
        }
    }

    #[test]
    fn trace_names_map_to_networks() {
        assert_eq!(PaperCnn::for_model("vgg16").unwrap(), PaperCnn::Vgg16);
        assert_eq!(PaperCnn::for_model("VGG19").unwrap(), PaperCnn::Vgg19);
        assert_eq!(PaperCnn::for_model("resnet18").unwrap(), PaperCnn::ResNet18);
        assert_eq!(
            PaperCnn::for_model("shufflenet_v2_x1_0").unwrap(),
            PaperCnn::ShuffleNetV2
        );
        assert!(PaperCnn::for_model("gpt2").is_err());
    }
}
