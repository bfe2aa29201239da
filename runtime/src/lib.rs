//! muri-runtime: the testbed's wire protocol and what every process needs to speak it.
//!
//! - [`pb`]: the generated messages, clients and servers of `proto/muri.proto`
//!   (worker ↔ scheduler, trainer ↔ scheduler, online control).
//! - [`auth`]: the shared-token check. Every RPC carries the token in the `x-muri-token`
//!   header; servers refuse a wrong or missing one with `Unauthenticated`.
//! - [`client`]: connecting to a peer with the token attached.
//! - [`tls`]: TLS from PEM files (`--tls_cert/--tls_key/--tls_ca`), mutual TLS optional.

pub mod auth;
pub mod client;
pub mod server;
pub mod tls;

/// Generated protobuf messages and tonic services (package `muri.v1`).
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("muri.v1");
}

/// Default address of the scheduler's services (loopback only unless told otherwise).
pub const DEFAULT_SCHEDULER_ADDR: &str = "127.0.0.1:9012";
