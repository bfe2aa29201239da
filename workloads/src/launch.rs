//! How a group's ranks are started on one machine.

/// `mpirun` flags for `ranks` processes on this machine, talking over loopback TCP only.
/// The worker launches groups with them, `muri profile` its multi-GPU profiles, and the
/// trainer's own MPI tests their ranks, so all three run MPI the same way.
pub fn mpirun_local_args(ranks: u32) -> Vec<String> {
    let mut args = vec!["-n".to_string(), ranks.to_string()];
    for a in [
        "--oversubscribe",
        "--bind-to",
        "none",
        "--mca",
        "btl",
        "self,tcp",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "--mca",
        "oob_tcp_if_include",
        "lo",
    ] {
        args.push(a.to_string());
    }
    args
}
