//! NLP family: a small decoder-only transformer language model on the token shards.
//!
//! Token + learned position embeddings, `layers` pre-norm blocks of causal multi-head
//! self-attention and a GELU MLP (4× width), a final layer norm and a separate output head;
//! next-token cross-entropy. A scaled-down GPT-2; at `--model-scale paper` a GPT-2-small-
//! or BERT-base-size one (12 layers of width 768, the published vocabularies and position
//! tables, output head tied to the token embedding as in GPT-2).

use std::path::Path;

use anyhow::{ensure, Context};
use tch::{Kind, Reduction, Tensor};

use super::device::Mover;
use super::params::{Embedding, LayerNorm, Linear, ParamStore};
use super::state::{self, Loaded};
use super::Task;
use crate::data::{Rng, TokenReader};

/// Size of the language model.
#[derive(Debug, Clone, PartialEq)]
pub struct LmConfig {
    pub d_model: i64,
    pub heads: i64,
    pub layers: usize,
    pub seq_len: usize,
    /// Rows of the position table (at least `seq_len`).
    pub max_positions: usize,
    /// Vocabulary of the embedding and head; `None`: the token shard's.
    pub vocab: Option<usize>,
    /// Logits from the token embedding (GPT-2, BERT) instead of a separate head.
    pub tied_head: bool,
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(s: &mut ParamStore, name: &str, d: i64) -> anyhow::Result<Block> {
        Ok(Block {
            ln1: LayerNorm::new(s, &format!("{name}.ln1"), d)?,
            qkv: Linear::new(s, &format!("{name}.qkv"), d, 3 * d)?,
            proj: Linear::new(s, &format!("{name}.proj"), d, d)?,
            ln2: LayerNorm::new(s, &format!("{name}.ln2"), d)?,
            fc1: Linear::new(s, &format!("{name}.fc1"), d, 4 * d)?,
            fc2: Linear::new(s, &format!("{name}.fc2"), 4 * d, d)?,
        })
    }

    fn forward(&self, x: &Tensor, heads: i64, mask: &Tensor) -> anyhow::Result<Tensor> {
        let x = x.f_add(&self.attention(&self.ln1.forward(x)?, heads, mask)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?.f_gelu("none")?;
        Ok(x.f_add(&self.fc2.forward(&h)?)?)
    }

    /// Causal multi-head self-attention over `[batch, time, d]`.
    fn attention(&self, x: &Tensor, heads: i64, mask: &Tensor) -> anyhow::Result<Tensor> {
        let (b, t, d) = x.size3()?;
        let dh = d / heads;
        let qkv = self.qkv.forward(x)?.f_split(d, 2)?;
        let split = |i: usize| -> anyhow::Result<Tensor> {
            Ok(qkv[i].f_view([b, t, heads, dh])?.f_transpose(1, 2)?)
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let att = q
            .f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul_scalar(1.0 / (dh as f64).sqrt())?
            .f_masked_fill(mask, f64::NEG_INFINITY)?
            .f_softmax(-1, Kind::Float)?;
        let y = att
            .f_matmul(&v)?
            .f_transpose(1, 2)?
            .f_contiguous()?
            .f_view([b, t, d])?;
        self.proj.forward(&y)
    }
}

struct Lm {
    tok: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `None`: tied to the token embedding.
    head: Option<Linear>,
    /// `[seq, seq]`, true above the diagonal (future positions a query must not see).
    mask: Tensor,
    heads: i64,
}

impl Lm {
    fn new(s: &mut ParamStore, cfg: &LmConfig, vocab: i64) -> anyhow::Result<Lm> {
        let seq = cfg.seq_len as i64;
        let tok = Embedding::new(s, "wte", vocab, cfg.d_model)?;
        let pos = Embedding::new(
            s,
            "wpe",
            cfg.max_positions.max(cfg.seq_len) as i64,
            cfg.d_model,
        )?;
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(s, &format!("h{i}"), cfg.d_model))
            .collect::<anyhow::Result<_>>()?;
        let ln_f = LayerNorm::new(s, "ln_f", cfg.d_model)?;
        let head = if cfg.tied_head {
            None
        } else {
            Some(Linear::new(s, "lm_head", cfg.d_model, vocab)?)
        };
        Ok(Lm {
            tok,
            pos,
            blocks,
            ln_f,
            head,
            mask: Tensor::f_ones([seq, seq], (Kind::Bool, s.device()))?.f_triu(1)?,
            heads: cfg.heads,
        })
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`.
    fn forward(&self, idx: &Tensor) -> anyhow::Result<Tensor> {
        let (_, t) = idx.size2()?;
        let positions = Tensor::f_arange(t, (Kind::Int64, idx.device()))?;
        let mut h = self
            .tok
            .forward(idx)?
            .f_add(&self.pos.forward(&positions)?)?;
        for block in &self.blocks {
            h = block.forward(&h, self.heads, &self.mask)?;
        }
        let h = self.ln_f.forward(&h)?;
        match &self.head {
            Some(head) => head.forward(&h),
            None => Ok(h.f_matmul(&self.tok.weight().f_tr()?)?),
        }
    }
}

/// A language-model job: the data stage reads `batch` windows of `seq_len + 1` tokens.
pub struct LmTask {
    model: Lm,
    mover: Mover,
    reader: TokenReader,
    rng: Rng,
    batch_size: usize,
    seq_len: usize,
    vocab: i64,
    signature: String,
    pending: Option<(Tensor, Tensor)>,
}

/// Builds the language model for the shard at `tokens` on `mover`'s device, with
/// parameters from `seed`.
pub fn build(
    name: &str,
    cfg: &LmConfig,
    tokens: &Path,
    batch_size: usize,
    seed: u64,
    mover: Mover,
) -> anyhow::Result<(LmTask, ParamStore)> {
    ensure!(
        cfg.heads > 0 && cfg.d_model % cfg.heads == 0 && cfg.seq_len > 0,
        "{name}: d_model {} must be a positive multiple of {} heads",
        cfg.d_model,
        cfg.heads
    );
    let mut reader = TokenReader::open(tokens)?;
    let h = reader.header();
    let mut rng = Rng::derive(seed, 21);
    reader.set_position(rng.below(h.count / 2))?;
    let vocab = cfg.vocab.unwrap_or(h.vocab as usize);
    ensure!(
        vocab >= h.vocab as usize,
        "{name}: the model's vocabulary ({vocab}) is smaller than {}'s ({})",
        tokens.display(),
        h.vocab
    );
    let mut store = ParamStore::new(seed, mover.device());
    let model = Lm::new(&mut store, cfg, vocab as i64)?;
    let signature = format!("nlp {name}: {cfg:?}, vocab {vocab}");
    let task = LmTask {
        model,
        mover,
        reader,
        rng,
        batch_size,
        seq_len: cfg.seq_len,
        vocab: vocab as i64,
        signature,
        pending: None,
    };
    Ok((task, store))
}

impl Task for LmTask {
    fn signature(&self) -> String {
        self.signature.clone()
    }

    fn load_batch(&mut self) -> anyhow::Result<()> {
        let b = self
            .reader
            .next_batch(self.batch_size, self.seq_len, &mut self.rng)?;
        let shape = [b.batch as i64, b.seq_len as i64];
        let x = Tensor::f_from_slice(&b.inputs)?.f_view(shape)?;
        let y = Tensor::f_from_slice(&b.targets)?.f_view(shape)?;
        let [x, y] = self.mover.to_device([x, y])?;
        self.pending = Some((x, y));
        Ok(())
    }

    fn loss(&mut self) -> anyhow::Result<Tensor> {
        let (x, y) = self
            .pending
            .take()
            .context("compute without a loaded batch")?;
        let logits = self.model.forward(&x)?.f_view([-1, self.vocab])?;
        Ok(logits.f_cross_entropy_loss(
            &y.f_view([-1])?,
            None::<Tensor>,
            Reduction::Mean,
            -100,
            0.0,
        )?)
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

/// The parameters of a language model of `cfg` over `vocab` tokens (shapes only: cheap).
pub fn param_count(cfg: &LmConfig, vocab: usize) -> anyhow::Result<usize> {
    let mut store = ParamStore::shapes_only();
    Lm::new(&mut store, cfg, cfg.vocab.unwrap_or(vocab) as i64)?;
    Ok(store.param_count())
}
