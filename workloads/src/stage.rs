//! The stage interface every workload implements.

use std::path::Path;

/// Gradient synchronisation across the ranks of a group. One communicator per pipeline
/// slot, so collectives of different packed jobs never match each other.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sum of `buf` over all ranks of `slot`'s communicator, in place.
    /// Called from the thread that created the collective only (MPI "funneled").
    fn allreduce_sum(&self, slot: usize, buf: &mut [f32]) -> anyhow::Result<()>;
    /// True on every rank if `flag` is true on any rank. The rotation calls it once per pass
    /// so that all ranks see a stop request at the same stage. Single-rank default: `flag`.
    fn agree_any(&self, flag: bool) -> anyhow::Result<bool> {
        Ok(flag)
    }
    /// Returns on every rank once all ranks have called it. Ranks wait here while rank 0
    /// is held by the scheduler before its sample (`StartSample`), possibly for seconds,
    /// so they wait without spinning and without waking often. Single-rank default: none.
    fn wait_for_all_ranks(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether [`Collective::allreduce_sum_device`] works (NCCL): then gradients on a GPU
    /// are summed where they are instead of through host memory.
    fn reduces_device_memory(&self) -> bool {
        false
    }
    /// Element-wise sum over all ranks of `slot`'s communicator, in place, of each buffer of
    /// device memory `(address, f32 count)`; every rank passes the same lengths in the same
    /// order. Returns once the sums are in place (the communication has completed).
    ///
    /// # Safety
    /// Each address must point to that many f32s on this rank's GPU, written by work that
    /// has completed, and stay valid and unused by other work until the call returns.
    unsafe fn allreduce_sum_device(
        &self,
        slot: usize,
        buffers: &[(u64, usize)],
    ) -> anyhow::Result<()> {
        let _ = (slot, buffers);
        anyhow::bail!("this collective sums host buffers only")
    }
}

/// One training job as the rotation drives it. Each call is one stage of one iteration.
/// `load_data` and `compute` run on helper threads (hence `Send`); `allreduce_and_step`
/// runs on the main thread because it may call MPI.
pub trait JobWorkload: Send {
    fn job_id(&self) -> u64;
    /// Fetch and preprocess the next batch (CPU / storage stage).
    fn load_data(&mut self) -> anyhow::Result<()>;
    /// Forward and backward pass on the batch (GPU stage).
    fn compute(&mut self) -> anyhow::Result<()>;
    /// All-reduce the gradients and apply the update (network stage).
    fn allreduce_and_step(&mut self, comm: &dyn Collective, slot: usize) -> anyhow::Result<()>;
    /// Persist everything a restart needs (weights, optimizer, data position).
    fn checkpoint(&self, path: &Path) -> anyhow::Result<()>;
    /// Load what [`JobWorkload::checkpoint`] wrote.
    fn restore(&mut self, path: &Path) -> anyhow::Result<()>;
    /// Training loss of the latest compute stage, for workloads that have one (real models).
    fn last_loss(&self) -> Option<f64> {
        None
    }
    /// Iterations completed over the job's whole life, restores included.
    fn iterations_done(&self) -> u64 {
        0
    }
    /// Every parameter and buffer value in a fixed order, for workloads with real weights:
    /// lets tests and tools check that replicas or restored jobs hold identical state.
    fn param_checksum(&self) -> Option<Vec<f32>> {
        None
    }
    /// The rotation ran `late` behind this workload's stage times (thread start-up and
    /// hand-offs between stages): an emulated workload makes it up in its next sleeps, so
    /// its iterations keep their profiled length; real work has nothing to shorten.
    fn absorb_delay(&mut self, _late: std::time::Duration) {}
}
