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

/// What a worker's trainers run. Every worker of a scheduler runs the same (a registration
/// that differs is refused), and the scheduler's default `--time_scale` follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Each stage sleeps for its profiled time × `--time_scale`.
    Emulated,
    /// Real models, which run at their own speed whatever the time scale.
    Real,
}

impl Workload {
    /// `--time_scale` when none is given with emulated workers: a profiled second takes
    /// 50 ms of wall time.
    pub const EMULATED_TIME_SCALE: f64 = 0.05;

    /// Parses `--workload` or a registration's `workload` field ("" from a worker that does
    /// not say: emulated).
    pub fn parse(name: &str) -> anyhow::Result<Workload> {
        match name {
            "" | "emulated" => Ok(Workload::Emulated),
            "real" => Ok(Workload::Real),
            other => anyhow::bail!("workload `{other}`: expected `emulated` or `real`"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Emulated => "emulated",
            Workload::Real => "real",
        }
    }

    /// The scheduler's `--time_scale` when none is given: real models run at their own
    /// speed, so one virtual second is one wall second.
    pub fn default_time_scale(self) -> f64 {
        match self {
            Workload::Emulated => Self::EMULATED_TIME_SCALE,
            Workload::Real => 1.0,
        }
    }
}

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
