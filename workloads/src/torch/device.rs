//! Where a job's tensors live: `--device auto|cpu|cuda`, and moving batches onto the device.
//!
//! Each rank of a group trains on `cuda:<local rank mod visible GPUs>`: the worker sets
//! `CUDA_VISIBLE_DEVICES` to the group's GPUs, so rank *r* of a node sees its own GPU as
//! index *r*. Parameters, buffers and optimizer state are created on that device; batches
//! are decoded on the host and copied over in the data stage ([`Mover::to_device`]).
//!
//! With the `cuda` feature the copy goes through a pinned host buffer and an asynchronous
//! copy on a CUDA stream of the data stage's own (`torch::cuda::Uploader`), and the stage
//! ends when that copy has completed; without it, a plain (synchronous) `to_device`.

use std::str::FromStr;

use anyhow::{bail, Context};
use tch::{Device, Tensor};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<DeviceChoice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            _ => bail!("device `{s}`: expected auto, cpu or cuda"),
        }
    }
}

/// GPUs libtorch can use in this process (0 in a CPU-only libtorch, without a driver, or
/// without the `cuda` feature).
pub fn cuda_devices() -> usize {
    load_cuda_backend();
    if tch::Cuda::is_available() {
        usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
    } else {
        0
    }
}

/// Loads libtorch's CUDA backend once, before anything asks libtorch about CUDA (libtorch
/// caches the answer of its first query). tch links only `libtorch_cpu` (the linker drops
/// `libtorch_cuda`, which nothing references by symbol), so without this a CUDA libtorch
/// reports no GPU. Loading at run time rather than linking keeps one binary that also
/// starts where `libtorch_cuda.so` or its CUDA libraries are missing: there it stays on the
/// CPU. The library is found through the binary's rpath (`$LIBTORCH/lib`) or
/// `LD_LIBRARY_PATH`.
#[cfg(feature = "cuda")]
fn load_cuda_backend() {
    use std::sync::Once;
    static LOAD: Once = Once::new();
    LOAD.call_once(|| {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: loading runs libtorch_cuda's static initialisers, which register its
        // CUDA backend with the already loaded libtorch_cpu; nothing is called by name.
        match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
            // Stays loaded for the life of the process.
            Ok(lib) => std::mem::forget(lib),
            Err(e) => tracing::info!("libtorch's CUDA backend not loaded (CPU only): {e}"),
        }
    });
}

#[cfg(not(feature = "cuda"))]
fn load_cuda_backend() {}

/// The device of the rank with `local_rank` (its index among the ranks of its node).
/// `--device cuda` without a usable GPU is an error that says why.
pub fn resolve(choice: DeviceChoice, local_rank: usize) -> anyhow::Result<Device> {
    let gpus = cuda_devices();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if gpus == 0 => Ok(Device::Cpu),
        DeviceChoice::Cuda if gpus == 0 => bail!(
            "--device cuda: libtorch sees no CUDA device (CUDA_VISIBLE_DEVICES={}; a CPU-only \
             libtorch, no NVIDIA driver, or no GPU); use --device cpu or auto",
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
        ),
        DeviceChoice::Auto | DeviceChoice::Cuda => Ok(Device::Cuda(local_rank % gpus)),
    }
}

/// `device` as `cpu` or `cuda:N`, for signatures, logs and reports.
pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Moves the batches a job's data stage decoded on the host onto the job's device.
pub struct Mover {
    device: Device,
    #[cfg(feature = "cuda")]
    uploader: Option<super::cuda::Uploader>,
}

impl Mover {
    /// For a job on `device` (with the `cuda` feature and a GPU: its own copy stream).
    pub fn new(device: Device) -> anyhow::Result<Mover> {
        Ok(Mover {
            device,
            #[cfg(feature = "cuda")]
            uploader: match device {
                Device::Cuda(_) => Some(super::cuda::Uploader::new(device)?),
                _ => None,
            },
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The host tensors on the job's device, once they are there (the data stage ends when
    /// its copies have completed). On the CPU they are returned as they are.
    pub fn to_device<const N: usize>(&mut self, host: [Tensor; N]) -> anyhow::Result<[Tensor; N]> {
        if self.device == Device::Cpu {
            return Ok(host);
        }
        self.upload(host)
            .with_context(|| format!("copying a batch to {}", name(self.device)))
    }

    #[cfg(feature = "cuda")]
    fn upload<const N: usize>(&mut self, host: [Tensor; N]) -> anyhow::Result<[Tensor; N]> {
        let Some(uploader) = self.uploader.as_mut() else {
            anyhow::bail!("no CUDA uploader for {:?}", self.device);
        };
        let moved = uploader.upload(&host)?;
        moved
            .try_into()
            .map_err(|_| anyhow::anyhow!("the uploader returned a different number of tensors"))
    }

    #[cfg(not(feature = "cuda"))]
    fn upload<const N: usize>(&mut self, host: [Tensor; N]) -> anyhow::Result<[Tensor; N]> {
        let mut out = Vec::with_capacity(N);
        for t in host {
            out.push(t.f_to_device(self.device)?);
        }
        out.try_into()
            .map_err(|_| anyhow::anyhow!("lost a tensor on the way to the device"))
    }
}

/// The tensor on the CPU (checkpoints hold CPU tensors only, so any build can read them).
pub fn to_cpu(t: &Tensor) -> anyhow::Result<Tensor> {
    Ok(if t.device() == Device::Cpu {
        t.shallow_clone()
    } else {
        t.f_to_device(Device::Cpu)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_bad_ones_name_the_value() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        let e = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(
            e.contains("`tpu`") && e.contains("auto, cpu or cuda"),
            "{e}"
        );
    }

    #[test]
    fn cpu_is_always_the_cpu_and_auto_follows_libtorch() {
        assert_eq!(resolve(DeviceChoice::Cpu, 3).unwrap(), Device::Cpu);
        let auto = resolve(DeviceChoice::Auto, 0).unwrap();
        match cuda_devices() {
            0 => assert_eq!(auto, Device::Cpu),
            n => {
                assert_eq!(auto, Device::Cuda(0));
                assert_eq!(
                    resolve(DeviceChoice::Cuda, n + 1).unwrap(),
                    Device::Cuda(1 % n)
                );
            }
        }
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_panic() {
        if cuda_devices() > 0 {
            return; // a GPU machine: nothing to check here
        }
        let e = resolve(DeviceChoice::Cuda, 0).unwrap_err().to_string();
        assert!(e.contains("no CUDA device"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(name(Device::Cpu), "cpu");
        assert_eq!(name(Device::Cuda(2)), "cuda:2");
    }
}
