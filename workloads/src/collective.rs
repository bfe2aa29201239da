//! Collectives: [`Local`] (no communication: one rank, or direct launch without MPI); with
//! the `mpi` feature, `mpi_impl::MpiCollective` (one duplicated communicator per slot); with
//! the `nccl` feature, `nccl_impl::NcclCollective` (one NCCL communicator per slot on the
//! rank's GPU, its unique id broadcast over MPI).

use crate::stage::Collective;

/// No real communication (direct launch without MPI). Every rank of an emulated job holds
/// identical gradients, so the sum over ranks is the local buffer × the world size.
pub struct Local {
    pub rank: usize,
    pub size: usize,
}

impl Collective for Local {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn allreduce_sum(&self, _slot: usize, buf: &mut [f32]) -> anyhow::Result<()> {
        let size = self.size as f32;
        buf.iter_mut().for_each(|v| *v *= size);
        Ok(())
    }
}

#[cfg(feature = "mpi")]
pub mod mpi_impl {
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;

    use crate::stage::Collective;

    /// Holds one communicator per pipeline slot and the MPI universe. Fields drop in order,
    /// so the communicators are freed before the universe finalises MPI.
    pub struct MpiCollective {
        world: SimpleCommunicator,
        per_slot: Vec<SimpleCommunicator>,
        _universe: Universe,
    }

    impl MpiCollective {
        /// Initialises MPI with "funneled" threading: only the main thread calls MPI.
        pub fn init(slots: usize) -> anyhow::Result<MpiCollective> {
            let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
            let world = universe.world();
            let per_slot = (0..slots).map(|_| world.duplicate()).collect();
            Ok(MpiCollective {
                world,
                per_slot,
                _universe: universe,
            })
        }

        /// Overwrites `buf` on every rank with rank 0's bytes (NCCL ships its unique id so).
        pub fn broadcast_from_root(&self, buf: &mut [u8]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn allreduce_sum(&self, slot: usize, buf: &mut [f32]) -> anyhow::Result<()> {
            let comm = self
                .per_slot
                .get(slot)
                .ok_or_else(|| anyhow::anyhow!("no communicator for slot {slot}"))?;
            let send = buf.to_vec();
            comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
            Ok(())
        }

        fn agree_any(&self, flag: bool) -> anyhow::Result<bool> {
            let mut any = 0i32;
            self.world
                .all_reduce_into(&i32::from(flag), &mut any, SystemOperation::max());
            Ok(any != 0)
        }
    }
}

#[cfg(feature = "nccl")]
pub mod nccl_impl {
    //! NCCL through cudarc with dynamic loading: the binary builds and starts without CUDA;
    //! [`NcclCollective::init`] checks for libcuda and libnccl first and fails with a clear
    //! error instead of cudarc's panic on the first missing symbol.
    //!
    //! The [`Collective`] trait hands over host buffers, so gradients are staged through one
    //! device buffer per slot (copy in, all-reduce on the GPU, copy out). Untested on a GPU in
    //! this repository's CI (no GPU there); see docs/testbed.md.

    use std::cell::RefCell;
    use std::sync::Arc;

    use anyhow::{anyhow, Context};
    use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
    use cudarc::nccl::{Comm, Id, ReduceOp};

    use super::mpi_impl::MpiCollective;
    use crate::stage::Collective;

    /// Whether libcuda and libnccl can be loaded (`libnccl.so` must be on the loader path:
    /// cudarc does not try `libnccl.so.2`).
    pub fn libraries_present() -> (bool, bool) {
        // SAFETY: these only try to dlopen the libraries by name.
        unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nccl::sys::is_culib_present(),
            )
        }
    }

    /// NCCL's 128-byte unique id created on rank 0 and broadcast to the other ranks.
    fn shared_id(mpi: &MpiCollective) -> anyhow::Result<Id> {
        let mut bytes = [0u8; 128];
        if mpi.rank() == 0 {
            let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId failed: {:?}", e.0))?;
            for (b, c) in bytes.iter_mut().zip(id.internal()) {
                *b = *c as u8;
            }
        }
        mpi.broadcast_from_root(&mut bytes);
        Ok(Id::uninit(bytes.map(|b| b as core::ffi::c_char)))
    }

    pub struct NcclCollective {
        per_slot: Vec<Comm>,
        staging: RefCell<Vec<Option<CudaSlice<f32>>>>,
        stream: Arc<CudaStream>,
        mpi: MpiCollective,
    }

    impl NcclCollective {
        /// One communicator per slot on GPU `local_rank mod visible GPUs` (the worker sets
        /// `CUDA_VISIBLE_DEVICES` to the group's GPUs).
        pub fn init(mpi: MpiCollective, slots: usize) -> anyhow::Result<NcclCollective> {
            let (cuda, nccl) = libraries_present();
            anyhow::ensure!(
                cuda && nccl,
                "NCCL needs libcuda ({}) and libnccl.so ({}) on the loader path",
                if cuda { "found" } else { "missing" },
                if nccl { "found" } else { "missing" },
            );
            let devices = CudaContext::device_count().context("counting CUDA devices")?;
            anyhow::ensure!(devices > 0, "no CUDA device visible");
            let local_rank: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(mpi.rank());
            let ctx = CudaContext::new(local_rank % devices as usize)
                .context("creating the CUDA context")?;
            let stream = ctx.default_stream();
            let mut per_slot = Vec::with_capacity(slots);
            for slot in 0..slots {
                let id = shared_id(&mpi)?;
                let comm = Comm::from_rank(stream.clone(), mpi.rank(), mpi.size(), id)
                    .map_err(|e| anyhow!("ncclCommInitRank for slot {slot}: {:?}", e.0))?;
                per_slot.push(comm);
            }
            Ok(NcclCollective {
                per_slot,
                staging: RefCell::new((0..slots).map(|_| None).collect()),
                stream,
                mpi,
            })
        }
    }

    impl Collective for NcclCollective {
        fn rank(&self) -> usize {
            self.mpi.rank()
        }

        fn size(&self) -> usize {
            self.mpi.size()
        }

        fn allreduce_sum(&self, slot: usize, buf: &mut [f32]) -> anyhow::Result<()> {
            let comm = self
                .per_slot
                .get(slot)
                .ok_or_else(|| anyhow!("no NCCL communicator for slot {slot}"))?;
            let mut staging = self.staging.borrow_mut();
            let dev = match &mut staging[slot] {
                Some(d) if d.len() == buf.len() => d,
                entry => entry.insert(self.stream.alloc_zeros::<f32>(buf.len())?),
            };
            self.stream.memcpy_htod(buf, dev)?;
            comm.all_reduce_in_place(dev, &ReduceOp::Sum)
                .map_err(|e| anyhow!("ncclAllReduce (slot {slot}): {:?}", e.0))?;
            self.stream.memcpy_dtoh(dev, buf)?;
            self.stream.synchronize()?;
            Ok(())
        }

        fn agree_any(&self, flag: bool) -> anyhow::Result<bool> {
            self.mpi.agree_any(flag)
        }
    }
}
