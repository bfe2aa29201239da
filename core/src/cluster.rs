//! Cluster spec and the "yarn" placement the reference uses.
//!
//! The allocation is rebuilt from an empty cluster at every scheduling pass, so the state
//! here is only ever filled, never released job by job.

use std::path::Path;

use crate::error::{csv_with_header, data_rows, read_input, InputError};

/// Most nodes a cluster spec may describe (`num_switch × num_node_p_switch`).
pub const MAX_NODES: u32 = 1 << 16;
/// Most GPUs per node.
pub const MAX_GPUS_PER_NODE: u32 = 1 << 10;
/// Most GPUs in a cluster (the simulator keeps per-GPU state for some policies).
pub const MAX_GPUS: u32 = 1 << 20;

/// Columns of a cluster spec CSV, in the reference's order.
pub const SPEC_COLUMNS: [&str; 5] = [
    "num_switch",
    "num_node_p_switch",
    "num_gpu_p_node",
    "num_cpu_p_node",
    "mem_p_node",
];

/// CPUs a 1-GPU job takes on its node (worker only).
const CPU_PER_SINGLE_GPU_JOB: u32 = 2;
/// CPUs per GPU for multi-GPU jobs (worker 2 + parameter server 4).
const CPU_PER_GPU: u32 = 6;
/// Memory a single-node job takes ("GB").
const WORKER_MEM: f64 = 5.0;
/// Parameter-server memory, plus `PS_MEM_PER_GPU` per GPU of the job.
const PS_MEM: f64 = 6.0;
const PS_MEM_PER_GPU: f64 = 0.1;

/// Shape of a cluster: switches × nodes × GPUs, plus per-node CPUs and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSpec {
    pub num_switch: u32,
    pub num_node_p_switch: u32,
    pub num_gpu_p_node: u32,
    pub num_cpu_p_node: u32,
    pub mem_p_node: u32,
}

impl ClusterSpec {
    /// 8 nodes × 8 GPUs: the paper's simulated cluster.
    pub const N8G8: ClusterSpec = ClusterSpec {
        num_switch: 1,
        num_node_p_switch: 8,
        num_gpu_p_node: 8,
        num_cpu_p_node: 92,
        mem_p_node: 520,
    };

    /// Nodes in the cluster. A parsed spec never overflows (see [`ClusterSpec::check`]); a
    /// hand-built one that does saturates rather than wrapping to a small number.
    pub fn num_nodes(&self) -> u32 {
        self.num_switch.saturating_mul(self.num_node_p_switch)
    }

    /// GPUs in the cluster (saturating like [`ClusterSpec::num_nodes`]).
    pub fn num_gpus(&self) -> u32 {
        self.num_nodes().saturating_mul(self.num_gpu_p_node)
    }

    /// Reads a spec CSV: a header with the five columns and one data row.
    pub fn from_path(path: &Path) -> Result<ClusterSpec, InputError> {
        let text = read_input(path)?;
        Self::parse(&text, path)
    }

    /// Parses spec text. Unlike the reference (which silently builds an empty cluster when a
    /// column is missing), a missing column, a bad value, a second data row or a cluster
    /// beyond the size limits is an error.
    pub fn parse(text: &str, file: &Path) -> Result<ClusterSpec, InputError> {
        let (mut reader, headers) = csv_with_header(text, file)?;
        if headers.iter().all(|h| h.is_empty()) {
            return Err(InputError::Empty {
                file: file.to_path_buf(),
            });
        }
        let mut idx = [0usize; 5];
        for (slot, name) in idx.iter_mut().zip(SPEC_COLUMNS) {
            *slot = headers.iter().position(|h| h == name).ok_or_else(|| {
                InputError::MissingColumn {
                    file: file.to_path_buf(),
                    column: name.into(),
                    expected: SPEC_COLUMNS.join(","),
                }
            })?;
        }
        let mut rows = data_rows(&mut reader, &headers, file);
        let (line, record) = rows.next().ok_or_else(|| InputError::Empty {
            file: file.to_path_buf(),
        })??;
        if let Some(extra) = rows.next() {
            let (extra_line, _) = extra?;
            return Err(InputError::BadRow {
                file: file.to_path_buf(),
                line: extra_line,
                message: format!("a cluster spec has one data row (line {line}); remove this one"),
            });
        }
        let mut values = [0u32; 5];
        for (k, (&col, name)) in idx.iter().zip(SPEC_COLUMNS).enumerate() {
            let raw = record.get(col).unwrap_or("");
            let bad = |message: &str| InputError::BadField {
                file: file.to_path_buf(),
                line,
                field: name.into(),
                value: raw.into(),
                message: message.into(),
            };
            let v: u32 = raw
                .parse()
                .map_err(|_| bad("expected a positive integer (at most 4294967295)"))?;
            if v == 0 {
                return Err(bad("must be positive"));
            }
            values[k] = v;
        }
        let spec = ClusterSpec {
            num_switch: values[0],
            num_node_p_switch: values[1],
            num_gpu_p_node: values[2],
            num_cpu_p_node: values[3],
            mem_p_node: values[4],
        };
        spec.check().map_err(|(field, message)| {
            let col = SPEC_COLUMNS
                .iter()
                .position(|c| *c == field)
                .map(|k| idx[k]);
            InputError::BadField {
                file: file.to_path_buf(),
                line,
                field: field.into(),
                value: col.and_then(|c| record.get(c)).unwrap_or("").into(),
                message,
            }
        })?;
        Ok(spec)
    }

    /// Checks the size limits ([`MAX_NODES`], [`MAX_GPUS_PER_NODE`], [`MAX_GPUS`]) with
    /// checked products, before anything is allocated for the cluster. The error names the
    /// column to fix.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let nodes = self
            .num_switch
            .checked_mul(self.num_node_p_switch)
            .filter(|&n| n <= MAX_NODES)
            .ok_or_else(|| {
                (
                    if self.num_switch > MAX_NODES {
                        "num_switch"
                    } else {
                        "num_node_p_switch"
                    },
                    format!(
                        "num_switch × num_node_p_switch = {} nodes, more than the limit of {MAX_NODES}",
                        u64::from(self.num_switch) * u64::from(self.num_node_p_switch)
                    ),
                )
            })?;
        if self.num_gpu_p_node > MAX_GPUS_PER_NODE {
            return Err((
                "num_gpu_p_node",
                format!("more than the limit of {MAX_GPUS_PER_NODE} GPUs per node"),
            ));
        }
        let gpus = u64::from(nodes) * u64::from(self.num_gpu_p_node);
        if gpus > u64::from(MAX_GPUS) {
            return Err((
                "num_gpu_p_node",
                format!(
                    "{nodes} nodes × {} GPUs = {gpus} GPUs, more than the limit of {MAX_GPUS}",
                    self.num_gpu_p_node
                ),
            ));
        }
        Ok(())
    }

    /// The spec as CSV text (header + row).
    pub fn to_csv(&self) -> String {
        format!(
            "{}\n{},{},{},{},{}\n",
            SPEC_COLUMNS.join(","),
            self.num_switch,
            self.num_node_p_switch,
            self.num_gpu_p_node,
            self.num_cpu_p_node,
            self.mem_p_node
        )
    }

    /// Whether a job of `num_gpu` GPUs can ever be placed on an empty cluster. A job larger
    /// than the whole cluster is refused before any placement state is built for it.
    pub fn can_ever_fit(&self, num_gpu: u32) -> bool {
        if num_gpu > self.num_gpus() || self.check().is_err() {
            return false;
        }
        let mut c = Cluster::new(*self);
        c.place_yarn(num_gpu).is_some()
    }
}

/// GPUs taken on one node by one placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeShare {
    pub node: u32,
    pub gpus: u32,
}

/// Where a job (or a whole interleaved group) runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub shares: Vec<NodeShare>,
}

impl Placement {
    pub fn num_gpus(&self) -> u32 {
        self.shares.iter().map(|s| s.gpus).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct NodeState {
    free_gpu: u32,
    free_cpu: u32,
    free_mem: f64,
}

/// Free resources of every node during one scheduling pass.
#[derive(Debug, Clone)]
pub struct Cluster {
    spec: ClusterSpec,
    nodes: Vec<NodeState>,
}

impl Cluster {
    pub fn new(spec: ClusterSpec) -> Cluster {
        let mut c = Cluster {
            spec,
            nodes: Vec::new(),
        };
        c.empty();
        c
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn num_gpus(&self) -> u32 {
        self.spec.num_gpus()
    }

    /// Frees everything: the start of every scheduling pass.
    pub fn empty(&mut self) {
        let fresh = NodeState {
            free_gpu: self.spec.num_gpu_p_node,
            free_cpu: self.spec.num_cpu_p_node,
            free_mem: self.spec.mem_p_node as f64,
        };
        self.nodes.clear();
        self.nodes.resize(self.spec.num_nodes() as usize, fresh);
    }

    pub fn free_gpus(&self) -> u32 {
        self.nodes.iter().map(|n| n.free_gpu).sum()
    }

    /// GPUs in use on each node (for utilisation logs).
    pub fn used_gpus_per_node(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .map(|n| self.spec.num_gpu_p_node - n.free_gpu)
    }

    /// MS-YARN placement: all GPUs under one switch; a job that fits in a node goes to the
    /// first node (in index order) with enough free GPUs, CPUs and memory; a larger job takes
    /// whole idle nodes plus one node for the remainder. Resources are consumed on success,
    /// also for "dry" admission tests (the reference does the same).
    pub fn place_yarn(&mut self, num_gpu: u32) -> Option<Placement> {
        let per_switch = self.spec.num_node_p_switch as usize;
        for switch in 0..self.spec.num_switch as usize {
            let range = switch * per_switch..(switch + 1) * per_switch;
            let placed = if num_gpu > self.spec.num_gpu_p_node {
                self.place_across_nodes(range, num_gpu)
            } else {
                self.place_in_one_node(range, num_gpu)
            };
            if placed.is_some() {
                return placed;
            }
        }
        None
    }

    fn place_in_one_node(
        &mut self,
        range: std::ops::Range<usize>,
        num_gpu: u32,
    ) -> Option<Placement> {
        let need_cpu = if num_gpu == 1 {
            CPU_PER_SINGLE_GPU_JOB
        } else {
            CPU_PER_GPU * num_gpu
        };
        for i in range {
            let n = &mut self.nodes[i];
            if n.free_gpu >= num_gpu && n.free_cpu >= need_cpu && n.free_mem >= WORKER_MEM {
                n.free_gpu -= num_gpu;
                n.free_cpu -= need_cpu;
                n.free_mem -= WORKER_MEM;
                return Some(Placement {
                    shares: vec![NodeShare {
                        node: i as u32,
                        gpus: num_gpu,
                    }],
                });
            }
        }
        None
    }

    fn place_across_nodes(
        &mut self,
        range: std::ops::Range<usize>,
        num_gpu: u32,
    ) -> Option<Placement> {
        let gpn = self.spec.num_gpu_p_node;
        let full_nodes = (num_gpu / gpn) as usize;
        let last_gpus = num_gpu % gpn;
        let idle_cpu = gpn * CPU_PER_GPU;
        let ps_w_mem = PS_MEM + num_gpu as f64 * PS_MEM_PER_GPU + WORKER_MEM;
        let mut chosen: Vec<usize> = Vec::with_capacity(full_nodes.min(range.len()) + 1);
        for i in range.clone() {
            let n = &self.nodes[i];
            if n.free_gpu == gpn && n.free_cpu >= idle_cpu && n.free_mem >= ps_w_mem * gpn as f64 {
                chosen.push(i);
                if chosen.len() == full_nodes {
                    break;
                }
            }
        }
        if chosen.len() < full_nodes {
            return None;
        }
        let mut last = None;
        if last_gpus != 0 {
            last = range.clone().find(|i| {
                let n = &self.nodes[*i];
                !chosen.contains(i)
                    && n.free_gpu >= last_gpus
                    && n.free_cpu >= last_gpus * CPU_PER_GPU
                    && n.free_mem >= ps_w_mem * last_gpus as f64
            });
            last?;
        }
        let mut shares = Vec::with_capacity(chosen.len() + 1);
        for &i in &chosen {
            let n = &mut self.nodes[i];
            n.free_gpu -= gpn;
            n.free_cpu -= idle_cpu;
            n.free_mem -= ps_w_mem * gpn as f64;
            shares.push(NodeShare {
                node: i as u32,
                gpus: gpn,
            });
        }
        if let Some(i) = last {
            let n = &mut self.nodes[i];
            n.free_gpu -= last_gpus;
            n.free_cpu -= last_gpus * CPU_PER_GPU;
            n.free_mem -= ps_w_mem * last_gpus as f64;
            shares.push(NodeShare {
                node: i as u32,
                gpus: last_gpus,
            });
        }
        Some(Placement { shares })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_and_fragmentation() {
        let mut c = Cluster::new(ClusterSpec {
            num_switch: 1,
            num_node_p_switch: 2,
            num_gpu_p_node: 8,
            num_cpu_p_node: 92,
            mem_p_node: 520,
        });
        assert_eq!(c.place_yarn(6).unwrap().shares[0].node, 0);
        assert_eq!(c.place_yarn(6).unwrap().shares[0].node, 1);
        // 4 GPUs are free in total, but only 2 per node: a 4-GPU job does not fit.
        assert_eq!(c.free_gpus(), 4);
        assert!(c.place_yarn(4).is_none());
        assert!(c.place_yarn(2).is_some());
    }

    #[test]
    fn large_jobs_take_whole_idle_nodes() {
        let mut c = Cluster::new(ClusterSpec::N8G8);
        c.place_yarn(1).unwrap();
        let p = c.place_yarn(16).unwrap();
        assert_eq!(
            p.shares.iter().map(|s| s.node).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(p.num_gpus(), 16);
        assert!(c.place_yarn(64).is_none());
        assert!(!ClusterSpec::N8G8.can_ever_fit(128));
        assert!(ClusterSpec::N8G8.can_ever_fit(64));
    }

    #[test]
    fn oversized_specs_and_jobs_are_refused_before_allocating() {
        let spec = |switches, nodes, gpus| ClusterSpec {
            num_switch: switches,
            num_node_p_switch: nodes,
            num_gpu_p_node: gpus,
            num_cpu_p_node: 92,
            mem_p_node: 520,
        };
        // 65536 × 65536 wraps to 0 in u32: the product is checked, not wrapped.
        assert_eq!(
            spec(65536, 65536, 8).check().unwrap_err().0,
            "num_node_p_switch"
        );
        assert_eq!(spec(u32::MAX, 1, 8).check().unwrap_err().0, "num_switch");
        assert_eq!(spec(1, 1, 65536).check().unwrap_err().0, "num_gpu_p_node");
        assert_eq!(
            spec(1024, 64, 1024).check().unwrap_err().0,
            "num_gpu_p_node"
        );
        assert!(spec(1024, 64, 16).check().is_ok());
        // A job of u32::MAX GPUs on 1-GPU nodes would need a 32 GiB placement list.
        assert!(!spec(1, 1, 1).can_ever_fit(u32::MAX));
        assert!(!spec(65536, 65536, 8).can_ever_fit(1));
        assert_eq!(spec(65536, 65536, 8).num_gpus(), u32::MAX);
    }

    #[test]
    fn spec_errors_name_the_field() {
        let p = Path::new("spec.csv");
        let e = ClusterSpec::parse("num_switch,num_node_p_switch\n1,8\n", p).unwrap_err();
        assert!(e.to_string().contains("num_gpu_p_node"), "{e}");
        let e = ClusterSpec::parse(
            "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,x,8,92,520\n",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2") && e.to_string().contains("num_node_p_switch"));
        let ok = ClusterSpec::parse(&ClusterSpec::N8G8.to_csv(), p).unwrap();
        assert_eq!(ok, ClusterSpec::N8G8);
    }
}
