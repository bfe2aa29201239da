//! muri-core: the scheduling core that simulate mode and the testbed share.
//!
//! Everything here is deterministic and free of I/O beyond reading inputs and writing the
//! reference's logs: [`trace`] and [`cluster`] read and check inputs, [`job`] is the per-job
//! state, [`models`] and [`interleave`] are the 4-stage pipeline model, [`matching`] is the
//! maximum-weight (blossom) matching, [`policy`] holds one module per scheduling policy behind
//! [`policy::Policy`], [`round`] is one scheduling round (complete → admit → credit → schedule →
//! transitions → predict ends), and [`record`], [`output`] and [`metrics`] turn results into the
//! reference's logs and numbers. The drivers — the simulator's clock and executor, the testbed's
//! gRPC scheduler and workers — and the command line live in the `muri` crate on top; this crate
//! knows nothing of them (Cargo enforces the layering). See ARCHITECTURE.md.

pub mod cluster;
pub mod error;
pub mod float;
pub mod interleave;
pub mod job;
pub mod matching;
pub mod metrics;
pub mod models;
pub mod output;
pub mod policy;
pub mod record;
pub mod round;
pub mod trace;
pub mod trace_import;
