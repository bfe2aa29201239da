//! The data stage's host-to-device copies on a CUDA stream of their own (feature `cuda`;
//! cudarc, loaded at run time, so this builds without CUDA).
//!
//! Why not libtorch's `to(device, non_blocking)`: it copies on libtorch's current stream,
//! the one every job's kernels are queued on, so a batch copy would wait behind the other
//! job's compute instead of overlapping it. tch exposes no stream API, so the copy is done
//! here with the driver API on a per-job non-blocking stream, into device memory the job
//! owns: a tensor from libtorch's caching allocator could be a block another job freed
//! while its kernels (queued on libtorch's stream) still read it.
//!
//! Each upload packs the batch's tensors into one pinned host buffer, issues one async copy
//! per tensor into the next of two device buffers (double buffering: the previous batch may
//! still be referenced until its compute stage is over), records an event and waits for it,
//! so the data stage ends when the batch is on the GPU. Untested on a GPU in this
//! repository's CI: `scripts/gpu-check.sh` exercises it.

use std::sync::Arc;

use anyhow::{anyhow, ensure, Context};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};
use tch::{Device, Tensor};

/// Offsets are rounded up to this many bytes (alignment for any element type).
const ALIGN: usize = 256;

/// One job's copy engine on one GPU.
pub struct Uploader {
    ordinal: usize,
    stream: Arc<CudaStream>,
    pinned: Option<PinnedHostSlice<u8>>,
    device: [Option<CudaSlice<u8>>; 2],
    /// Buffers replaced by bigger ones, kept until the uploader is dropped: a tensor of an
    /// earlier batch may still point into them.
    retired: Vec<CudaSlice<u8>>,
    next: usize,
}

// SAFETY: the raw CUDA handles inside are usable from any thread once the context is bound
// (`upload` binds it); the job owning the uploader uses it from one thread at a time.
unsafe impl Send for Uploader {}

impl Uploader {
    /// A stream of its own on `device` (which must be `cuda:N`).
    pub fn new(device: Device) -> anyhow::Result<Uploader> {
        let Device::Cuda(ordinal) = device else {
            anyhow::bail!("the CUDA uploader needs a CUDA device, not {device:?}");
        };
        // SAFETY: only dlopens libcuda by name.
        ensure!(
            unsafe { cudarc::driver::sys::is_culib_present() },
            "libcuda could not be loaded"
        );
        let ctx = CudaContext::new(ordinal).context("creating the CUDA context")?;
        // SAFETY: every buffer here is used on this uploader's stream only, and each upload
        // waits for its copies; cudarc's cross-stream event bookkeeping is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .context("creating the data stage's stream")?;
        Ok(Uploader {
            ordinal,
            stream,
            pinned: None,
            device: [None, None],
            retired: Vec::new(),
            next: 0,
        })
    }

    /// Copies host tensors to the GPU and returns them there once the copies are complete.
    pub fn upload(&mut self, host: &[Tensor]) -> anyhow::Result<Vec<Tensor>> {
        self.stream.context().bind_to_thread()?;
        let host: Vec<Tensor> = host
            .iter()
            .map(|t| t.f_contiguous())
            .collect::<Result<_, _>>()?;
        let layout: Vec<(usize, usize)> = offsets(host.iter().map(bytes_of));
        let total = layout.last().map_or(0, |&(o, n)| o + n);
        self.reserve(total)?;
        let slot = self.next;
        self.next = 1 - self.next;
        let pinned = self.pinned.as_mut().context("no pinned buffer")?;
        let dst = self.device[slot].as_ref().context("no device buffer")?;
        let (dst_base, _guard) = dst.device_ptr(&self.stream);
        let staging = pinned.as_mut_slice()?;
        for (t, &(offset, n)) in host.iter().zip(&layout) {
            // SAFETY: `t` is contiguous with `n` bytes at data_ptr; the range fits `staging`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    t.data_ptr() as *const u8,
                    staging[offset..offset + n].as_mut_ptr(),
                    n,
                );
                cudarc::driver::result::memcpy_htod_async(
                    dst_base + offset as u64,
                    &staging[offset..offset + n],
                    self.stream.cu_stream(),
                )?;
            }
        }
        let done = self.stream.record_event(None)?;
        done.synchronize()
            .context("waiting for the batch copy to complete")?;
        host.iter()
            .zip(&layout)
            .map(|(t, &(offset, _))| {
                let dims = t.size();
                let strides = contiguous_strides(&dims);
                // SAFETY: the device buffer outlives the batch: it is overwritten two uploads
                // later, after this batch's compute stage has completed, and freed only when
                // the uploader is.
                unsafe {
                    Tensor::f_from_blob(
                        (dst_base + offset as u64) as usize as *const u8,
                        &dims,
                        &strides,
                        t.kind(),
                        Device::Cuda(self.ordinal),
                    )
                }
                .map_err(|e| anyhow!("wrapping the device batch: {e}"))
            })
            .collect()
    }

    /// Grows the pinned and device buffers to at least `bytes`.
    fn reserve(&mut self, bytes: usize) -> anyhow::Result<()> {
        let bytes = bytes.max(ALIGN);
        if self.pinned.as_ref().is_none_or(|p| p.len() < bytes) {
            // SAFETY: the buffer is only written before it is read by the copies.
            self.pinned = Some(unsafe { self.stream.context().alloc_pinned::<u8>(bytes) }?);
        }
        for slot in &mut self.device {
            if slot.as_ref().is_none_or(|d| d.len() < bytes) {
                // SAFETY: every byte a tensor reads is written by its upload first.
                let bigger = unsafe { self.stream.alloc::<u8>(bytes) }?;
                self.retired.extend(slot.replace(bigger));
            }
        }
        Ok(())
    }
}

fn bytes_of(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

/// (offset, length) of each piece packed at [`ALIGN`]-byte boundaries.
fn offsets(lengths: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut at = 0;
    lengths
        .map(|n| {
            let here = at;
            at = (at + n).div_ceil(ALIGN) * ALIGN;
            (here, n)
        })
        .collect()
}

fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1].max(1);
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_packed_at_aligned_offsets() {
        assert_eq!(
            offsets([10, 256, 1].into_iter()),
            vec![(0, 10), (256, 256), (512, 1)]
        );
    }

    #[test]
    fn strides_of_a_contiguous_tensor() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        let t = Tensor::zeros([2, 3, 4], (tch::Kind::Float, Device::Cpu));
        assert_eq!(t.stride(), contiguous_strides(&t.size()));
    }

    #[test]
    fn without_a_gpu_the_uploader_is_an_error() {
        if super::super::device::cuda_devices() > 0 {
            assert!(Uploader::new(Device::Cuda(0)).is_ok());
        } else {
            assert!(Uploader::new(Device::Cpu).is_err());
        }
    }
}
