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
    use mpi::request::{Request, Scope};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;
    use std::time::Duration;

    use crate::stage::Collective;

    /// How often a rank waiting for the others before the sample tests the barrier: rarely
    /// enough that ranks held for seconds cost nothing, and a few ms are noise beside a
    /// start-up.
    const START_BARRIER_POLL: Duration = Duration::from_millis(2);

    /// Waits for a non-blocking operation by testing it every `sleep` (not spinning).
    fn wait_testing<'a, D: ?Sized, S: Scope<'a>>(mut pending: Request<'a, D, S>, sleep: Duration) {
        loop {
            match pending.test() {
                Ok(_) => return,
                Err(again) => {
                    pending = again;
                    std::thread::sleep(sleep);
                }
            }
        }
    }

    /// Holds one communicator per pipeline slot and the MPI universe. Fields drop in order,
    /// so the communicators are freed before the universe finalises MPI.
    pub struct MpiCollective {
        world: SimpleCommunicator,
        per_slot: Vec<SimpleCommunicator>,
        /// Sleep between tests of a pending all-reduce (`None`: MPI's own busy wait).
        poll_sleep: Option<Duration>,
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
                poll_sleep: None,
                _universe: universe,
            })
        }

        /// Waits for all-reduces by testing them every `sleep` instead of in MPI's busy loop.
        ///
        /// Open MPI spins while a collective is pending (`mpi_yield_when_idle` only adds
        /// `sched_yield`). Emulated jobs sleep through their stages, so their ranks mostly
        /// wait in all-reduces for each other; spinning, the 64 ranks of an emulated 64-GPU
        /// testbed keep a small machine's cores busy (load ≈ 40 on 2 cores) and every rank's
        /// stages then run late. Testing every 100 µs costs at most that much per all-reduce,
        /// well inside an emulated stage's budget. Real models keep the busy wait.
        pub fn patient(mut self, sleep: Duration) -> MpiCollective {
            self.poll_sleep = Some(sleep);
            self
        }

        /// An all-reduce that waits as [`MpiCollective::patient`] says: in MPI's busy loop,
        /// or testing a non-blocking one with sleeps in between.
        fn all_reduce<S, R>(
            &self,
            comm: &SimpleCommunicator,
            send: &S,
            recv: &mut R,
            op: SystemOperation,
        ) where
            S: Buffer + ?Sized,
            R: BufferMut + ?Sized,
        {
            let Some(sleep) = self.poll_sleep else {
                comm.all_reduce_into(send, recv, op);
                return;
            };
            mpi::request::scope(|scope| {
                wait_testing(comm.immediate_all_reduce_into(scope, send, recv, op), sleep)
            });
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
            self.all_reduce(comm, &send[..], buf, SystemOperation::sum());
            Ok(())
        }

        fn agree_any(&self, flag: bool) -> anyhow::Result<bool> {
            let mut any = 0i32;
            self.all_reduce(
                &self.world,
                &i32::from(flag),
                &mut any,
                SystemOperation::max(),
            );
            Ok(any != 0)
        }

        fn wait_for_all_ranks(&self) -> anyhow::Result<()> {
            wait_testing(self.world.immediate_barrier(), START_BARRIER_POLL);
            Ok(())
        }
    }
}

#[cfg(feature = "nccl")]
pub mod nccl_impl {
    //! NCCL through cudarc with dynamic loading: the binary builds and starts without CUDA;
    //! [`NcclCollective::init`] checks for libcuda and libnccl first and fails with a clear
    //! error instead of cudarc's panic on the first missing symbol.
    //!
    //! Gradients already on the GPU ([`Collective::allreduce_sum_device`]) are summed where
    //! they are: small tensors are packed into flat buckets (device-to-device copies), large
    //! ones reduced in place, all on the collective's own non-blocking stream, and the call
    //! returns when an event recorded after the last copy has completed. Host buffers
    //! ([`Collective::allreduce_sum`]: emulated jobs, CPU models) are staged through one
    //! device buffer per slot. Untested on a GPU in this repository's CI (no GPU there):
    //! `scripts/gpu-check.sh` exercises it; see docs/testbed.md.

    use std::cell::RefCell;
    use std::sync::Arc;

    use anyhow::{anyhow, Context};
    use cudarc::driver::{
        CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop,
    };
    use cudarc::nccl::{Comm, Id, ReduceOp};

    use super::mpi_impl::MpiCollective;
    use crate::stage::Collective;

    /// f32s per gradient bucket (25 MiB, PyTorch DDP's default bucket size).
    pub const BUCKET_ELEMS: usize = 25 * 1024 * 1024 / 4;

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

    /// Device memory cudarc does not own (a libtorch tensor's storage), as an NCCL buffer.
    struct Borrowed<'a> {
        address: u64,
        len: usize,
        stream: &'a Arc<CudaStream>,
    }

    impl DeviceSlice<f32> for Borrowed<'_> {
        fn len(&self) -> usize {
            self.len
        }
        fn stream(&self) -> &Arc<CudaStream> {
            self.stream
        }
    }

    impl DevicePtrMut<f32> for Borrowed<'_> {
        fn device_ptr_mut<'b>(&'b mut self, _stream: &'b CudaStream) -> (u64, SyncOnDrop<'b>) {
            (self.address, SyncOnDrop::Sync(None))
        }
    }

    pub struct NcclCollective {
        per_slot: Vec<Comm>,
        staging: RefCell<Vec<Option<CudaSlice<f32>>>>,
        bucket: RefCell<Option<CudaSlice<f32>>>,
        stream: Arc<CudaStream>,
        mpi: MpiCollective,
    }

    impl NcclCollective {
        /// One communicator per slot on GPU `local_rank mod visible GPUs` (the worker sets
        /// `CUDA_VISIBLE_DEVICES` to the group's GPUs), all on one stream of their own.
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
            // SAFETY: all of this collective's buffers are used on its one stream, and every
            // call waits for its work; cudarc's cross-stream event bookkeeping is not needed.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.new_stream().context("creating the all-reduce stream")?;
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
                bucket: RefCell::new(None),
                stream,
                mpi,
            })
        }

        fn comm(&self, slot: usize) -> anyhow::Result<&Comm> {
            self.per_slot
                .get(slot)
                .ok_or_else(|| anyhow!("no NCCL communicator for slot {slot}"))
        }

        /// Sums one buffer in place (enqueued on the stream, not waited for).
        fn reduce_in_place(&self, comm: &Comm, address: u64, len: usize) -> anyhow::Result<()> {
            let mut buf = Borrowed {
                address,
                len,
                stream: &self.stream,
            };
            comm.all_reduce_in_place(&mut buf, &ReduceOp::Sum)
                .map_err(|e| anyhow!("ncclAllReduce of {len} floats: {:?}", e.0))?;
            Ok(())
        }

        /// Packs `pieces` into the bucket, sums it, and copies the sums back (enqueued).
        fn reduce_bucket(&self, comm: &Comm, pieces: &[(u64, usize)]) -> anyhow::Result<()> {
            let total: usize = pieces.iter().map(|&(_, n)| n).sum();
            if total == 0 {
                return Ok(());
            }
            let mut bucket = self.bucket.borrow_mut();
            let bucket = match &mut *bucket {
                Some(b) => b,
                empty => empty.insert(self.stream.alloc_zeros::<f32>(BUCKET_ELEMS)?),
            };
            let (base, _guard) = bucket.device_ptr(&self.stream);
            let cu = self.stream.cu_stream();
            let mut offset = 0u64;
            for &(address, n) in pieces {
                // SAFETY: both ranges are `n` f32s of device memory (caller's contract and
                // the bucket's size); the copies are ordered on this stream.
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(base + offset, address, n * 4, cu)?;
                }
                offset += n as u64 * 4;
            }
            self.reduce_in_place(comm, base, total)?;
            offset = 0;
            for &(address, n) in pieces {
                // SAFETY: as above.
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(address, base + offset, n * 4, cu)?;
                }
                offset += n as u64 * 4;
            }
            Ok(())
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
            let comm = self.comm(slot)?;
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

        fn wait_for_all_ranks(&self) -> anyhow::Result<()> {
            self.mpi.wait_for_all_ranks()
        }

        fn reduces_device_memory(&self) -> bool {
            true
        }

        unsafe fn allreduce_sum_device(
            &self,
            slot: usize,
            buffers: &[(u64, usize)],
        ) -> anyhow::Result<()> {
            let comm = self.comm(slot)?;
            self.stream.context().bind_to_thread()?;
            let mut pending: Vec<(u64, usize)> = Vec::new();
            let mut filled = 0;
            for &(address, n) in buffers {
                if n >= BUCKET_ELEMS {
                    self.reduce_in_place(comm, address, n)?;
                    continue;
                }
                if filled + n > BUCKET_ELEMS {
                    self.reduce_bucket(comm, &pending)?;
                    pending.clear();
                    filled = 0;
                }
                pending.push((address, n));
                filled += n;
            }
            self.reduce_bucket(comm, &pending)?;
            let done = self.stream.record_event(None)?;
            done.synchronize()
                .with_context(|| format!("waiting for the all-reduce of slot {slot}"))?;
            Ok(())
        }
    }
}
