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

pub mod collective;
pub mod emulated;
pub mod rotation;
pub mod stage;
