//! Named parameters and buffers, initialised from the job's own seeded [`Rng`], and the
//! small layers the models are built from.
//!
//! tch's `nn` layers initialise from libtorch's process-global generator, which packed jobs
//! on other threads share; initialising here from the job's seed keeps every job (and every
//! rank of a job) bit-reproducible. The store also fixes one order of all tensors, which the
//! gradient all-reduce, the optimizer state and the checkpoint rely on.
//!
//! Values are drawn on the host and then moved to the store's device, so a model holds the
//! same initial weights on the CPU and on a GPU.

use anyhow::Context;
use tch::{Device, Kind, Tensor};

use crate::data::Rng;

/// Every tensor of one model, in creation order.
pub struct ParamStore {
    /// Trained by the optimizer (`requires_grad`).
    pub params: Vec<(String, Tensor)>,
    /// Updated otherwise (batch-norm running statistics, DQN target network).
    pub buffers: Vec<(String, Tensor)>,
    rng: Rng,
    device: Device,
    /// Shapes only: tensors are left uninitialised on the CPU (counting a paper-size model's
    /// parameters without drawing 100 M random numbers).
    shapes_only: bool,
}

impl ParamStore {
    /// An empty store whose tensors will live on `device`.
    pub fn new(seed: u64, device: Device) -> ParamStore {
        ParamStore {
            params: Vec::new(),
            buffers: Vec::new(),
            rng: Rng::derive(seed, 10),
            device,
            shapes_only: false,
        }
    }

    /// A store that records shapes only (uninitialised CPU tensors): for parameter counts.
    pub fn shapes_only() -> ParamStore {
        ParamStore {
            shapes_only: true,
            ..ParamStore::new(0, Device::Cpu)
        }
    }

    /// Where the model's tensors live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// A trainable tensor with values uniform in `±bound`.
    pub fn uniform(&mut self, name: &str, dims: &[i64], bound: f64) -> anyhow::Result<Tensor> {
        let t = if self.shapes_only {
            uninitialised(dims)?
        } else {
            let n: i64 = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| self.rng.range(-bound, bound) as f32)
                .collect();
            self.placed(&values, dims)?
        };
        self.add_param(name, t)
    }

    /// A trainable tensor filled with `value` (norm gains and biases).
    pub fn constant(&mut self, name: &str, dims: &[i64], value: f32) -> anyhow::Result<Tensor> {
        let t = self.filled(dims, value)?;
        self.add_param(name, t)
    }

    /// A non-trainable tensor filled with `value`.
    pub fn buffer(&mut self, name: &str, dims: &[i64], value: f32) -> anyhow::Result<Tensor> {
        let t = self.filled(dims, value)?;
        self.buffers.push((name.to_string(), t.shallow_clone()));
        Ok(t)
    }

    fn filled(&self, dims: &[i64], value: f32) -> anyhow::Result<Tensor> {
        if self.shapes_only {
            return uninitialised(dims);
        }
        let n: i64 = dims.iter().product();
        self.placed(&vec![value; n as usize], dims)
    }

    /// `values` shaped as `dims` on the store's device.
    fn placed(&self, values: &[f32], dims: &[i64]) -> anyhow::Result<Tensor> {
        let t = from_values(values, dims)?;
        Ok(if self.device == Device::Cpu {
            t
        } else {
            t.f_to_device(self.device)?
        })
    }

    /// A non-trainable copy of `src` (the DQN target network starts as the online one).
    pub fn buffer_copy(&mut self, name: &str, src: &Tensor) -> anyhow::Result<Tensor> {
        let t = src.f_detach_copy()?;
        self.buffers.push((name.to_string(), t.shallow_clone()));
        Ok(t)
    }

    fn add_param(&mut self, name: &str, t: Tensor) -> anyhow::Result<Tensor> {
        let t = t.f_set_requires_grad(true)?;
        self.params.push((name.to_string(), t.shallow_clone()));
        Ok(t)
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|(_, t)| t.numel()).sum()
    }

    /// All parameters, then all buffers, flattened in store order.
    pub fn flat_values(&self) -> anyhow::Result<Vec<f32>> {
        let mut out = Vec::new();
        for (name, t) in self.params.iter().chain(&self.buffers) {
            out.extend(to_vec_f32(t).with_context(|| format!("reading {name}"))?);
        }
        Ok(out)
    }
}

fn from_values(values: &[f32], dims: &[i64]) -> anyhow::Result<Tensor> {
    Ok(Tensor::f_from_slice(values)?.f_view(dims)?)
}

fn uninitialised(dims: &[i64]) -> anyhow::Result<Tensor> {
    Ok(Tensor::f_empty(dims, (Kind::Float, Device::Cpu))?)
}

/// Copies a tensor's values out as f32.
pub fn to_vec_f32(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    let flat = t
        .f_detach()?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_view([-1])?;
    let mut out = vec![0f32; flat.numel()];
    flat.f_copy_data(&mut out, flat.numel())?;
    Ok(out)
}

/// `y = x Wᵀ + b`, PyTorch's default init bound `1/√fan_in`.
pub struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub fn new(s: &mut ParamStore, name: &str, inp: i64, out: i64) -> anyhow::Result<Linear> {
        let bound = 1.0 / (inp as f64).sqrt();
        Ok(Linear {
            w: s.uniform(&format!("{name}.weight"), &[out, inp], bound)?,
            b: s.uniform(&format!("{name}.bias"), &[out], bound)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        Ok(x.f_linear(&self.w, Some(&self.b))?)
    }

    /// The weight and bias, for copying into a target network.
    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.w, &self.b]
    }

    /// A non-trainable copy (the DQN target network).
    pub fn frozen_copy(&self, s: &mut ParamStore, name: &str) -> anyhow::Result<Linear> {
        Ok(Linear {
            w: s.buffer_copy(&format!("{name}.weight"), &self.w)?,
            b: s.buffer_copy(&format!("{name}.bias"), &self.b)?,
        })
    }
}

/// A 2-D convolution ("same" padding), Kaiming-uniform init for ReLU nets; bias-free
/// unless built [`Conv::with_bias`] (VGG), grouped when built [`Conv::depthwise`].
pub struct Conv {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    pad: i64,
    groups: i64,
}

impl Conv {
    pub fn new(
        s: &mut ParamStore,
        name: &str,
        (inp, out, k): (i64, i64, i64),
        stride: i64,
    ) -> anyhow::Result<Conv> {
        Conv::build(s, name, (inp, out, k), stride, 1, false)
    }

    /// With a bias, as VGG's convolutions (which have no batch norm after them).
    pub fn with_bias(
        s: &mut ParamStore,
        name: &str,
        (inp, out, k): (i64, i64, i64),
        stride: i64,
    ) -> anyhow::Result<Conv> {
        Conv::build(s, name, (inp, out, k), stride, 1, true)
    }

    /// One filter per channel (ShuffleNet's depthwise convolutions).
    pub fn depthwise(
        s: &mut ParamStore,
        name: &str,
        (channels, k): (i64, i64),
        stride: i64,
    ) -> anyhow::Result<Conv> {
        Conv::build(s, name, (channels, channels, k), stride, channels, false)
    }

    fn build(
        s: &mut ParamStore,
        name: &str,
        (inp, out, k): (i64, i64, i64),
        stride: i64,
        groups: i64,
        bias: bool,
    ) -> anyhow::Result<Conv> {
        let fan_in = inp / groups * k * k;
        let bound = (6.0 / fan_in as f64).sqrt();
        let w = s.uniform(&format!("{name}.weight"), &[out, inp / groups, k, k], bound)?;
        let b = if bias {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Some(s.uniform(&format!("{name}.bias"), &[out], bound)?)
        } else {
            None
        };
        Ok(Conv {
            w,
            b,
            stride,
            pad: k / 2,
            groups,
        })
    }

    pub fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        Ok(x.f_conv2d(
            &self.w,
            self.b.as_ref(),
            [self.stride, self.stride],
            [self.pad, self.pad],
            [1, 1],
            self.groups,
        )?)
    }
}

/// Training-mode batch norm with running statistics kept as buffers.
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl BatchNorm {
    pub fn new(s: &mut ParamStore, name: &str, channels: i64) -> anyhow::Result<BatchNorm> {
        Ok(BatchNorm {
            gamma: s.constant(&format!("{name}.weight"), &[channels], 1.0)?,
            beta: s.constant(&format!("{name}.bias"), &[channels], 0.0)?,
            mean: s.buffer(&format!("{name}.running_mean"), &[channels], 0.0)?,
            var: s.buffer(&format!("{name}.running_var"), &[channels], 1.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.gamma),
            Some(&self.beta),
            Some(&self.mean),
            Some(&self.var),
            true,
            0.1,
            1e-5,
            false,
        )?)
    }
}

/// Layer norm over the last dimension.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    dim: i64,
}

impl LayerNorm {
    pub fn new(s: &mut ParamStore, name: &str, dim: i64) -> anyhow::Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: s.constant(&format!("{name}.weight"), &[dim], 1.0)?,
            beta: s.constant(&format!("{name}.bias"), &[dim], 0.0)?,
            dim,
        })
    }

    pub fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        Ok(x.f_layer_norm([self.dim], Some(&self.gamma), Some(&self.beta), 1e-5, false)?)
    }
}

/// A lookup table, GPT-2-style small init (±0.05).
pub struct Embedding {
    w: Tensor,
}

impl Embedding {
    pub fn new(s: &mut ParamStore, name: &str, rows: i64, dim: i64) -> anyhow::Result<Embedding> {
        Ok(Embedding {
            w: s.uniform(&format!("{name}.weight"), &[rows, dim], 0.05)?,
        })
    }

    pub fn forward(&self, idx: &Tensor) -> anyhow::Result<Tensor> {
        Ok(Tensor::f_embedding(&self.w, idx, -1, false, false)?)
    }

    /// The table `[rows, dim]` (a tied output head multiplies by its transpose).
    pub fn weight(&self) -> &Tensor {
        &self.w
    }
}
