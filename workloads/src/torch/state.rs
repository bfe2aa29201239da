//! Checkpoint plumbing: scalars as tensors, and strict look-ups in a loaded checkpoint.
//!
//! A checkpoint is one `Tensor::save_multi` file of named tensors. Integers (counters, RNG
//! states, f64 bit patterns) are stored as i64 tensors holding the u64 bits, so they round
//! trip exactly.

use std::collections::HashMap;

use anyhow::{ensure, Context};
use tch::{Kind, Tensor};

/// Named tensors of a loaded checkpoint.
pub type Loaded = HashMap<String, Tensor>;

/// A 1-D i64 tensor holding the bit patterns of `values`.
pub fn u64_tensor(values: &[u64]) -> anyhow::Result<Tensor> {
    let bits: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Ok(Tensor::f_from_slice(&bits)?)
}

/// The tensor called `name`, or an error naming it.
pub fn get<'a>(loaded: &'a Loaded, name: &str) -> anyhow::Result<&'a Tensor> {
    loaded
        .get(name)
        .with_context(|| format!("checkpoint has no tensor {name:?}"))
}

/// Reads the u64s [`u64_tensor`] stored under `name`, checking there are `n` of them.
pub fn get_u64s(loaded: &Loaded, name: &str, n: usize) -> anyhow::Result<Vec<u64>> {
    let t = get(loaded, name)?;
    ensure!(
        t.kind() == Kind::Int64 && t.numel() == n,
        "checkpoint tensor {name:?} should be {n} i64s, is {:?} {:?}",
        t.kind(),
        t.size()
    );
    let mut bits = vec![0i64; n];
    t.f_contiguous()?.f_copy_data(&mut bits, n)?;
    Ok(bits.into_iter().map(|v| v as u64).collect())
}

/// Reads an f32 tensor stored under `name` as a flat vector.
pub fn get_f32s(loaded: &Loaded, name: &str) -> anyhow::Result<Vec<f32>> {
    let t = get(loaded, name)?;
    ensure!(
        t.kind() == Kind::Float,
        "checkpoint tensor {name:?} should be f32, is {:?}",
        t.kind()
    );
    super::params::to_vec_f32(t)
}

/// The tensor under `name`, checked to have `like`'s shape and kind (for copying into it).
pub fn get_like<'a>(loaded: &'a Loaded, name: &str, like: &Tensor) -> anyhow::Result<&'a Tensor> {
    let t = get(loaded, name)?;
    ensure!(
        t.size() == like.size() && t.kind() == like.kind(),
        "checkpoint tensor {name:?} is {:?} {:?}, the model has {:?} {:?}",
        t.kind(),
        t.size(),
        like.kind(),
        like.size()
    );
    Ok(t)
}

/// Copies `src` into `dst` in place without recording autograd history.
pub fn copy_into(dst: &Tensor, src: &Tensor) -> anyhow::Result<()> {
    let _guard = tch::no_grad_guard();
    let mut dst = dst.shallow_clone();
    dst.f_copy_(src)?;
    Ok(())
}

/// A data reader's checkpointable state: its position and its RNG (CNN and LM tasks).
pub fn reader_state(
    position: u64,
    rng: &crate::data::Rng,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    Ok(vec![("data".into(), u64_tensor(&[position, rng.state()])?)])
}

/// What [`reader_state`] saved: (position, RNG).
pub fn restore_reader_state(loaded: &Loaded) -> anyhow::Result<(u64, crate::data::Rng)> {
    let v = get_u64s(loaded, "task.data", 2)?;
    Ok((v[0], crate::data::Rng::new(v[1])))
}
