//! Concrete GPU ids for the policy's placements.
//!
//! A placement names nodes of the policy's cluster (node i is the i-th live worker) and a GPU
//! count per node, or — Tiresias, which places by GPU count only — no nodes at all. Each
//! round the placements are turned into GPU ids in three passes:
//! 1. a group that runs already, and that the policy left on the same nodes with the same
//!    counts, keeps its GPU ids, so it is not relaunched because another group moved;
//! 2. other placements get the first free GPUs of their nodes, and GPUs already handed out
//!    when the policy put more on a node than it has free (AntMan's opportunistic jobs
//!    share the GPUs of guaranteed ones);
//! 3. placements without nodes get free GPUs wherever they are: one node when one has
//!    enough (the fullest that fits), else node after node.

use std::collections::{BTreeMap, HashSet};

use crate::cluster::Placement;
use crate::testbed::service::WorkerEntry;

/// GPU ids per node, the head (rank 0) first.
pub(super) type NodeGpus = Vec<(u32, Vec<u32>)>;

/// Hands out each live worker's GPUs at most once per round.
pub(super) struct GpuAssigner<'a> {
    alive: &'a [u32],
    workers: &'a BTreeMap<u32, WorkerEntry>,
    used: HashSet<(u32, u32)>,
}

impl<'a> GpuAssigner<'a> {
    pub(super) fn new(
        alive: &'a [u32],
        workers: &'a BTreeMap<u32, WorkerEntry>,
    ) -> GpuAssigner<'a> {
        GpuAssigner {
            alive,
            workers,
            used: HashSet::new(),
        }
    }

    /// Pass 1: `running`'s GPU ids, when `placement` puts the same number of GPUs on each
    /// of the same nodes (in the same order). Running groups hold disjoint GPUs unless the
    /// policy made them share, so keeping them all never doubles a GPU up by itself.
    pub(super) fn keep(&mut self, placement: &Placement, running: &NodeGpus) -> Option<NodeGpus> {
        let wanted = self.node_counts(placement)?;
        let had: Vec<(u32, u32)> = running
            .iter()
            .map(|(n, ids)| (*n, ids.len() as u32))
            .collect();
        if wanted != had {
            return None;
        }
        for (n, ids) in running {
            self.used.extend(ids.iter().map(|&g| (*n, g)));
        }
        Some(running.clone())
    }

    /// Pass 2: the first free GPUs of each node the placement names, then (the policy
    /// shares GPUs) the node's GPUs already handed out; `None` when a node has no worker or
    /// fewer GPUs than the placement puts on it.
    pub(super) fn place(&mut self, placement: &Placement) -> Option<NodeGpus> {
        let counts = self.node_counts(placement)?;
        let mut out = NodeGpus::new();
        for (node, count) in counts {
            let count = count as usize;
            let mut ids: Vec<u32> = self.free_on(node).into_iter().take(count).collect();
            if ids.len() < count {
                let all = self.workers.get(&node).map(|w| w.gpus.clone());
                let shared: Vec<u32> = all
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|g| !ids.contains(g))
                    .take(count - ids.len())
                    .collect();
                ids.extend(shared);
            }
            if ids.len() < count {
                return None;
            }
            self.used.extend(ids.iter().map(|&g| (node, g)));
            out.push((node, ids));
        }
        Some(out)
    }

    /// Pass 3: `gpus` free GPUs anywhere: on the fullest node that still has enough, else
    /// across nodes in id order; `None` when fewer are free.
    pub(super) fn place_anywhere(&mut self, gpus: u32) -> Option<NodeGpus> {
        let want = gpus as usize;
        if want == 0 {
            return None;
        }
        let free: Vec<(u32, Vec<u32>)> = self
            .alive
            .iter()
            .map(|&n| (n, self.free_on(n)))
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        let single = free
            .iter()
            .filter(|(_, ids)| ids.len() >= want)
            .min_by_key(|(n, ids)| (ids.len(), *n));
        let out: NodeGpus = match single {
            Some((n, ids)) => vec![(*n, ids[..want].to_vec())],
            None => {
                let mut left = want;
                let mut out = NodeGpus::new();
                for (n, ids) in free {
                    if left == 0 {
                        break;
                    }
                    let take = ids.len().min(left);
                    left -= take;
                    out.push((n, ids[..take].to_vec()));
                }
                if left > 0 {
                    return None;
                }
                out
            }
        };
        for (n, ids) in &out {
            self.used.extend(ids.iter().map(|&g| (*n, g)));
        }
        Some(out)
    }

    /// (worker node id, GPU count) per node of the placement, shares on one node merged
    /// (one MPI host with both's ranks), the first share's node first; `None` when a node
    /// has no worker or the placement names no nodes.
    fn node_counts(&self, placement: &Placement) -> Option<Vec<(u32, u32)>> {
        let out = policy_node_counts(placement)
            .into_iter()
            .map(|(node, count)| {
                let node = *self.alive.get(node as usize)?;
                self.workers.get(&node)?;
                Some((node, count))
            })
            .collect::<Option<Vec<_>>>()?;
        (!out.is_empty()).then_some(out)
    }

    fn free_on(&self, node: u32) -> Vec<u32> {
        self.workers
            .get(&node)
            .map(|w| {
                w.gpus
                    .iter()
                    .copied()
                    .filter(|g| !self.used.contains(&(node, *g)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// (policy node, GPU count) per node of the placement, shares on one node merged, the first
/// share's node first.
pub(super) fn policy_node_counts(placement: &Placement) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for share in &placement.shares {
        match out.iter_mut().find(|(n, _)| *n == share.node) {
            Some((_, count)) => *count += share.gpus,
            None => out.push((share.node, share.gpus)),
        }
    }
    out
}
