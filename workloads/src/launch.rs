//! How a group's ranks are started: on one machine, or across the hosts of a multi-node
//! placement (Open MPI's rsh launcher; see docs/testbed.md for why and for the ssh set-up).

use std::net::IpAddr;
use std::path::Path;

/// Open MPI's launch agent for loopback hosts (`scripts/loopback-launch-agent.sh`): it
/// runs the "remote" daemon on this machine. Workers write it to a file at start-up.
pub const LOOPBACK_AGENT: &str = include_str!("../../scripts/loopback-launch-agent.sh");

/// `mpirun` flags for `ranks` processes on this machine, talking over loopback TCP only.
/// The worker launches groups with them, `muri profile` its multi-GPU profiles, and the
/// trainer's own MPI tests their ranks, so all three run MPI the same way.
pub fn mpirun_local_args(ranks: u32) -> Vec<String> {
    let mut args = vec!["-n".to_string(), ranks.to_string()];
    args.extend(strings(&["--oversubscribe", "--bind-to", "none"]));
    args.extend(loopback_transport_args());
    args
}

/// One host of a multi-host launch: its address (the MPI host name) and the GPUs its ranks
/// use, one rank per GPU.
#[derive(Debug, Clone, Copy)]
pub struct HostRanks<'a> {
    pub addr: &'a str,
    pub gpu_ids: &'a [u32],
}

/// `mpirun` arguments that run `program args` once per GPU of every host, hosts in order
/// (the first host holds rank 0). Each host is its own app context (`-n K -host H -x
/// CUDA_VISIBLE_DEVICES=…`), so a rank sees its own node's GPUs and Open MPI numbers its
/// local rank within that node. `export` names environment variables every rank gets.
///
/// When every host is a loopback address the daemons start through `loopback_agent`
/// (which runs them here) and MPI talks over `lo`; otherwise Open MPI's default agent
/// (ssh) reaches the hosts and its usual interface selection applies (tune it with
/// `OMPI_MCA_*` variables in the worker's environment).
pub fn mpirun_multi_host_args(
    hosts: &[HostRanks<'_>],
    loopback_agent: &Path,
    program: &Path,
    args: &[String],
    export: &[&str],
) -> Vec<String> {
    let slots: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}:{}", h.addr, h.gpu_ids.len()))
        .collect();
    let mut out = strings(&["--oversubscribe", "--bind-to", "none", "-H"]);
    out.push(slots.join(","));
    if all_loopback(hosts) {
        out.extend(strings(&["--mca", "plm_rsh_agent"]));
        out.push(loopback_agent.display().to_string());
        out.extend(loopback_transport_args());
        // The hosts share this machine's cores, which Open MPI cannot see (each "host" has
        // as many slots as GPUs): ranks must yield the CPU while they wait for messages,
        // or busy-polling ranks starve the others.
        out.extend(strings(&["--mca", "mpi_yield_when_idle", "1"]));
    }
    for (i, host) in hosts.iter().enumerate() {
        if i > 0 {
            out.push(":".into());
        }
        let visible: Vec<String> = host.gpu_ids.iter().map(u32::to_string).collect();
        out.extend([
            "-n".into(),
            host.gpu_ids.len().to_string(),
            "-host".into(),
            host.addr.to_string(),
            "-x".into(),
            format!("CUDA_VISIBLE_DEVICES={}", visible.join(",")),
        ]);
        for name in export {
            out.extend(["-x".into(), name.to_string()]);
        }
        out.push(program.display().to_string());
        out.extend(args.iter().cloned());
    }
    out
}

/// Whether every host is a loopback address (workers standing in for hosts on one machine).
pub fn all_loopback(hosts: &[HostRanks<'_>]) -> bool {
    hosts
        .iter()
        .all(|h| h.addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

fn loopback_transport_args() -> Vec<String> {
    strings(&[
        "--mca",
        "btl",
        "self,tcp",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "--mca",
        "oob_tcp_if_include",
        "lo",
    ])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_is_an_app_context_with_its_own_gpus() {
        let hosts = [
            HostRanks {
                addr: "127.0.0.2",
                gpu_ids: &[2, 3],
            },
            HostRanks {
                addr: "127.0.0.3",
                gpu_ids: &[0, 1, 2],
            },
        ];
        let args = mpirun_multi_host_args(
            &hosts,
            Path::new("/a/agent.sh"),
            Path::new("/bin/trainer"),
            &["--group-id".into(), "7".into()],
            &["MURI_TOKEN"],
        );
        let text = args.join(" ");
        assert!(text.contains("-H 127.0.0.2:2,127.0.0.3:3"), "{text}");
        assert!(text.contains("--mca plm_rsh_agent /a/agent.sh"), "{text}");
        let contexts: Vec<&str> = text.split(" : ").collect();
        assert_eq!(contexts.len(), 2, "{text}");
        assert!(contexts[0].ends_with(
            "-n 2 -host 127.0.0.2 -x CUDA_VISIBLE_DEVICES=2,3 -x MURI_TOKEN /bin/trainer --group-id 7"
        ));
        assert_eq!(
            contexts[1],
            "-n 3 -host 127.0.0.3 -x CUDA_VISIBLE_DEVICES=0,1,2 -x MURI_TOKEN /bin/trainer --group-id 7"
        );
    }

    #[test]
    fn real_hosts_use_open_mpi_default_agent_and_interfaces() {
        let hosts = [
            HostRanks {
                addr: "10.0.0.5",
                gpu_ids: &[0],
            },
            HostRanks {
                addr: "127.0.0.3",
                gpu_ids: &[0],
            },
        ];
        let text =
            mpirun_multi_host_args(&hosts, Path::new("/a"), Path::new("/t"), &[], &[]).join(" ");
        assert!(!text.contains("plm_rsh_agent"), "{text}");
        assert!(!text.contains("btl_tcp_if_include"), "{text}");
    }
}
