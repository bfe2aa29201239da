//! muri: the simulator, the testbed and the command line on top of [`muri_core`].
//!
//! See ARCHITECTURE.md at the repository root for the map. The scheduling core — [`trace`],
//! [`cluster`], [`job`], [`policy`], [`round`], [`matching`], [`metrics`], [`output`] and the rest
//! — is the `muri-core` crate, re-exported here under the same paths. This crate adds the two
//! drivers of the one round: [`engine`], the simulator's clock and executor, and [`testbed`],
//! the gRPC scheduler and worker daemons; and what a user runs: [`simulate`], [`sweep`],
//! [`report`], [`plot`], trace generation and profiling.

pub use muri_core::{
    cluster, error, float, interleave, job, matching, metrics, models, output, policy, record,
    round, trace, trace_import,
};

pub mod engine;
pub mod plot;
pub mod plot_timeline;
pub mod profile;
pub mod report;
pub mod runinfo;
pub mod simulate;
pub mod sweep;
pub mod testbed;
pub mod tracegen;
