//! Collectives: [`Local`] (no communication: one rank, or direct launch without MPI) and,
//! with the `mpi` feature, [`mpi_impl::MpiCollective`] (one duplicated communicator per slot).

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
    }
}
