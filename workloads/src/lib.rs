//! muri-workloads: what runs inside one rank of a dispatched group.
//!
//! - [`stage`]: the [`stage::JobWorkload`] trait (load_data / compute / allreduce_and_step,
//!   checkpoint / restore) and the [`stage::Collective`] the all-reduce goes through. Real
//!   tch models implement the same trait later without touching the rotation.
//! - [`emulated`]: workloads whose stages take their profiled times × `--time_scale`.
//! - [`rotation`]: the reference's 4-stage software pipeline (testbed-spec §3.3), with
//!   per-job iteration timestamps so the measured group period can be compared with
//!   `muri::interleave`.
//! - [`collective`]: the local (single-rank or direct-launch) and MPI collectives.
//! - [`data`]: synthetic image / token shards on disk and the readers the real models'
//!   data stage uses (positioned reads, decode, augmentation).
//! - [`cartpole`]: CartPole-v1 dynamics for the RL workloads.
//! - [`sampler`]: the trainer process's CPU, memory and I/O (from `/proc`) and GPU
//!   utilisation (NVML, when the driver's library loads) over a sample.
//! - [`launch`]: the `mpirun` flags a group's ranks are started with on one machine.
//! - `torch` (feature `torch`): real tch models (CNN, transformer LM, DQN) as
//!   [`stage::JobWorkload`]s.

pub mod cartpole;
pub mod collective;
pub mod data;
pub mod emulated;
pub mod launch;
pub mod rotation;
pub mod sampler;
pub mod stage;
#[cfg(feature = "torch")]
pub mod torch;
