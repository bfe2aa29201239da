//! The testbed: the same policies as simulate mode, driven by a (virtual) wall clock and a
//! gRPC executor instead of the simulated one.
//!
//! - [`scheduler`]: `muri scheduler` — the round loop (admit, credit progress, run the
//!   policy, dispatch groups to workers, measure, fast-forward the virtual clock), logs.
//! - [`service`]: the scheduler's gRPC services (workers, trainers, online control) and the
//!   state they share with the loop.
//! - [`measure`]: per-round queue length, blocking index and resource utilisation (the
//!   testbed's trailing `cluster.csv` columns).
//! - [`worker`]: `muri worker` — launches and kills group process trees, reports Done.
//! - [`control`]: `muri submit` / `status` / `cancel`.
//! - [`certs`]: `muri tls gen`, a throwaway CA and certificate for TLS runs.
//! - [`journal`]: `--state_dir`, the scheduler's durable state (checksummed, fsync'd
//!   journal and snapshots) from which a restarted scheduler resumes its run.

pub mod certs;
pub mod control;
pub mod journal;
pub mod measure;
pub mod scheduler;
pub mod service;
pub mod worker;

use std::net::{IpAddr, SocketAddr};

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

/// The IP a daemon tells its peers: `--advertise`, else the listen IP. A daemon listening on
/// every interface (0.0.0.0) must say which address is its own.
pub fn advertised_ip(listen: SocketAddr, advertise: Option<IpAddr>) -> anyhow::Result<IpAddr> {
    let ip = advertise.unwrap_or(listen.ip());
    anyhow::ensure!(
        !ip.is_unspecified(),
        "listening on {listen} needs --advertise ADDR: the address other machines reach this daemon at"
    );
    Ok(ip)
}
