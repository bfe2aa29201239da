//! SGD with momentum and AdamW, written out on tensors so that their whole state (momentum
//! buffers, moment estimates, step count) is visible and goes into the checkpoint; tch's
//! `nn::Optimizer` keeps its state inside libtorch where it cannot be saved.

use tch::Tensor;

/// Which update rule, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// `buf = μ·buf + g + wd·p; p -= lr·buf` (PyTorch's SGD).
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (PyTorch's AdamW).
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Updates applied so far (Adam's bias correction needs it).
    pub step: u64,
    /// Per parameter: `[momentum]` for SGD, `[m, v]` for AdamW; same order as the params.
    pub state: Vec<Vec<Tensor>>,
}

impl Optimizer {
    /// Zero state for `params`.
    pub fn new(kind: OptimizerKind, params: &[(String, Tensor)]) -> anyhow::Result<Optimizer> {
        let slots = match kind {
            OptimizerKind::Sgd { .. } => 1,
            OptimizerKind::AdamW { .. } => 2,
        };
        let state = params
            .iter()
            .map(|(_, p)| (0..slots).map(|_| p.f_zeros_like()).collect())
            .collect::<Result<Vec<Vec<Tensor>>, _>>()?;
        Ok(Optimizer {
            kind,
            step: 0,
            state,
        })
    }

    /// Names of the state tensors, for the checkpoint: `opt.<param>.<slot>`.
    pub fn named_state<'a>(
        &'a self,
        params: &'a [(String, Tensor)],
    ) -> impl Iterator<Item = (String, &'a Tensor)> + 'a {
        params
            .iter()
            .zip(&self.state)
            .flat_map(|((name, _), slots)| {
                slots
                    .iter()
                    .enumerate()
                    .map(move |(i, t)| (format!("opt.{name}.{i}"), t))
            })
    }

    /// Applies one update with the gradients currently in `params` (already averaged).
    pub fn apply(&mut self, params: &[(String, Tensor)]) -> anyhow::Result<()> {
        self.step += 1;
        let _guard = tch::no_grad_guard();
        for ((_, p), slots) in params.iter().zip(self.state.iter_mut()) {
            let g = p.f_grad()?;
            if !g.defined() {
                continue;
            }
            match self.kind {
                OptimizerKind::Sgd {
                    lr,
                    momentum,
                    weight_decay,
                } => sgd(p, &g, &mut slots[0], lr, momentum, weight_decay)?,
                OptimizerKind::AdamW { .. } => self.kind.adamw(p, &g, slots, self.step)?,
            }
        }
        Ok(())
    }
}

fn sgd(
    p: &Tensor,
    g: &Tensor,
    buf: &mut Tensor,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) -> anyhow::Result<()> {
    let d = g.f_add(&p.f_mul_scalar(weight_decay)?)?;
    let _ = buf.f_mul_scalar_(momentum)?;
    let _ = buf.f_add_(&d)?;
    let mut p = p.shallow_clone();
    let _ = p.f_sub_(&buf.f_mul_scalar(lr)?)?;
    Ok(())
}

impl OptimizerKind {
    fn adamw(&self, p: &Tensor, g: &Tensor, slots: &mut [Tensor], step: u64) -> anyhow::Result<()> {
        let OptimizerKind::AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = *self
        else {
            anyhow::bail!("adamw called for {self:?}");
        };
        let [m, v] = slots else {
            anyhow::bail!("AdamW needs two state tensors per parameter");
        };
        let _ = m.f_mul_scalar_(beta1)?;
        let _ = m.f_add_(&g.f_mul_scalar(1.0 - beta1)?)?;
        let _ = v.f_mul_scalar_(beta2)?;
        let _ = v.f_add_(&g.f_mul(g)?.f_mul_scalar(1.0 - beta2)?)?;
        let c1 = 1.0 - beta1.powf(step as f64);
        let c2 = 1.0 - beta2.powf(step as f64);
        let denom = v.f_div_scalar(c2)?.f_sqrt()?.f_add_scalar(eps)?;
        let update = m.f_div_scalar(c1)?.f_div(&denom)?;
        let mut p = p.shallow_clone();
        let _ = p.f_mul_scalar_(1.0 - lr * weight_decay)?;
        let _ = p.f_sub_(&update.f_mul_scalar(lr)?)?;
        Ok(())
    }
}
