//! The testbed: the same policies as simulate mode, driven by a (virtual) wall clock and a
//! gRPC executor instead of the simulated one.
//!
//! - [`scheduler`]: `muri scheduler` — the round loop (admit, credit progress, run the
//!   policy, dispatch groups to workers, measure, fast-forward the virtual clock), logs.
//! - [`service`]: the scheduler's gRPC services (workers, trainers, online control) and the
//!   state they share with the loop.
//! - [`worker`]: `muri worker` — launches and kills group process trees, reports Done.
//! - [`control`]: `muri submit` / `status` / `cancel`.
//! - [`certs`]: `muri tls gen`, a throwaway CA and certificate for TLS runs.

pub mod certs;
pub mod control;
pub mod scheduler;
pub mod service;
pub mod worker;

use std::net::SocketAddr;

/// A daemon listens beyond loopback only over TLS, or in plaintext when `--insecure` says
/// so explicitly (then the token crosses the network in clear text).
pub fn check_bind(addr: SocketAddr, tls: bool, insecure: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || tls {
        return Ok(());
    }
    anyhow::ensure!(
        insecure,
        "refusing to listen on {addr} in plaintext: beyond loopback give --tls_cert, --tls_key and --tls_ca, or --insecure"
    );
    tracing::warn!(%addr, "--insecure: serving plaintext beyond loopback; the token travels in clear text");
    Ok(())
}
