//! The testbed: the same policies as simulate mode, driven by a (virtual) wall clock and a
//! gRPC executor instead of the simulated one.
//!
//! - [`scheduler`]: `muri scheduler` — the round loop (admit, credit progress, run the
//!   policy, dispatch groups to workers, measure, fast-forward the virtual clock), logs.
//! - [`service`]: the scheduler's gRPC services (workers, trainers, online control) and the
//!   state they share with the loop.
//! - [`worker`]: `muri worker` — launches and kills group process trees, reports Done.
//! - [`control`]: `muri submit` / `status` / `cancel`.

pub mod control;
pub mod scheduler;
pub mod service;
pub mod worker;

use std::net::SocketAddr;

/// Refuses non-loopback bind addresses unless the user explicitly allowed them.
pub fn check_bind(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        allow_remote || addr.ip().is_loopback(),
        "refusing to listen on {addr}: daemons bind loopback addresses only unless --allow-remote is given"
    );
    Ok(())
}
