//! muri: the scheduling core shared by simulate mode and the testbed.
//!
//! See ARCHITECTURE.md at the repository root for the map. In short: [`trace`] and
//! [`cluster`] read inputs, [`policy`] holds one module per scheduling policy behind the
//! [`policy::Policy`] trait, [`interleave`] and [`matching`] are the grouping model Muri's
//! policies call, [`engine`] is the simulated clock and executor, and [`metrics`] /
//! [`output`] turn results into the reference's logs and numbers.

pub mod cluster;
pub mod engine;
pub mod error;
pub mod float;
pub mod interleave;
pub mod job;
pub mod matching;
pub mod metrics;
pub mod models;
pub mod output;
pub mod plot;
pub mod plot_timeline;
pub mod policy;
pub mod profile;
pub mod report;
pub mod round;
pub mod runinfo;
pub mod simulate;
pub mod sweep;
pub mod testbed;
pub mod trace;
pub mod trace_import;
pub mod tracegen;
