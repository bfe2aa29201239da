//! Which live worker each of the policy's nodes stands for.
//!
//! Every round the policy places the runnable jobs on an empty cluster whose node `i` is just
//! a number. The simulator does not care which numbers a job gets; the testbed does, because
//! a group whose nodes change is killed and relaunched. With first-fit placement in the
//! policy's order that happens all the time: under SRTF a newly arrived short job takes node
//! 0, and every running job moves up one node — on the paper's 400-job trace every arrival
//! relaunched every running job, each relaunch charging its startup to the virtual clock.
//!
//! The nodes of one switch are interchangeable for the policy (same GPUs, same locality), so
//! the executor may read the policy's node numbers through any permutation within a switch.
//! This module picks the permutation that keeps running groups where they are: groups that
//! still run with the same members and the same GPU count per node claim their current
//! workers, largest groups first (their relaunch costs the most); the other nodes are
//! numbered in order. The policy's decisions are untouched: which jobs share a node, and how
//! many GPUs each gets, stay exactly as it placed them.

/// A running group's claim: the policy's nodes with their GPU counts (merged per node, the
/// head first) and the workers it runs on with theirs, in the same order.
pub(super) struct Claim {
    pub wanted: Vec<(u32, u32)>,
    pub running: Vec<(u32, u32)>,
}

/// The worker node id for each policy node (`labels[i]` stands for policy node `i`): a
/// permutation of `alive`. `interchangeable(i, k)` says whether policy node `i` may be the
/// worker `alive[k]` (same switch, same GPU count). Claims are honoured in the order given
/// when they agree with the ones before; the identity is returned when no permutation
/// completes (nodes that are not interchangeable with any free one).
pub(super) fn node_labels(
    alive: &[u32],
    interchangeable: impl Fn(usize, usize) -> bool,
    claims: &[Claim],
) -> Vec<u32> {
    let n = alive.len();
    let mut worker_of: Vec<Option<usize>> = vec![None; n];
    let mut policy_of: Vec<Option<usize>> = vec![None; n];
    for claim in claims {
        let Some(pairs) = claim_pairs(alive, &interchangeable, claim) else {
            continue;
        };
        let agrees = pairs.iter().all(|&(i, k)| {
            worker_of[i].is_none_or(|w| w == k) && policy_of[k].is_none_or(|p| p == i)
        });
        if agrees {
            for (i, k) in pairs {
                worker_of[i] = Some(k);
                policy_of[k] = Some(i);
            }
        }
    }
    for (i, worker) in worker_of.iter_mut().enumerate() {
        if worker.is_some() {
            continue;
        }
        let free = (0..n).find(|&k| policy_of[k].is_none() && interchangeable(i, k));
        match free {
            Some(k) => {
                *worker = Some(k);
                policy_of[k] = Some(i);
            }
            None => return alive.to_vec(),
        }
    }
    worker_of
        .into_iter()
        .map(|k| alive[k.expect("every policy node was given a worker")])
        .collect()
}

/// (policy node, index into `alive`) for each node of the claim; `None` when the claim can't
/// be kept (a different number of nodes or GPUs per node, a worker gone, a node out of range
/// or not interchangeable, a worker named twice).
fn claim_pairs(
    alive: &[u32],
    interchangeable: &impl Fn(usize, usize) -> bool,
    claim: &Claim,
) -> Option<Vec<(usize, usize)>> {
    if claim.wanted.len() != claim.running.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(claim.wanted.len());
    for (&(node, count), &(worker, had)) in claim.wanted.iter().zip(&claim.running) {
        let i = node as usize;
        let k = alive.iter().position(|&a| a == worker)?;
        if count != had || i >= alive.len() || !interchangeable(i, k) {
            return None;
        }
        if pairs.iter().any(|&(pi, pk)| pi == i || pk == k) {
            return None;
        }
        pairs.push((i, k));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: usize, _: usize) -> bool {
        true
    }

    fn claim(wanted: &[(u32, u32)], running: &[(u32, u32)]) -> Claim {
        Claim {
            wanted: wanted.to_vec(),
            running: running.to_vec(),
        }
    }

    #[test]
    fn no_claims_is_the_identity() {
        assert_eq!(node_labels(&[3, 5, 9], any, &[]), vec![3, 5, 9]);
    }

    #[test]
    fn jobs_moved_up_by_a_new_arrival_stay_on_their_workers() {
        // Job A ran on worker 10 (policy node 0), job B on worker 11 (node 1). A short job
        // arrives and takes node 0; A is now placed on node 1, B on node 2.
        let alive = [10, 11, 12, 13];
        let claims = [claim(&[(1, 8)], &[(10, 8)]), claim(&[(2, 8)], &[(11, 8)])];
        let labels = node_labels(&alive, any, &claims);
        assert_eq!(labels[1], 10, "A keeps its worker");
        assert_eq!(labels[2], 11, "B keeps its worker");
        assert_eq!(labels[0], 12, "the new job gets the first free worker");
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, alive, "a permutation of the live workers");
    }

    #[test]
    fn a_group_over_two_nodes_keeps_both_or_neither() {
        let alive = [0, 1, 2, 3];
        // Runs on workers 2 (head) and 3; the policy put it on nodes 0 and 1.
        let labels = node_labels(&alive, any, &[claim(&[(0, 8), (1, 8)], &[(2, 8), (3, 8)])]);
        assert_eq!(&labels[..2], &[2, 3]);
        // Another group already holds worker 3: this one can't keep worker 2 alone.
        let claims = [
            claim(&[(3, 8)], &[(3, 8)]),
            claim(&[(0, 8), (1, 8)], &[(2, 8), (3, 8)]),
        ];
        let labels = node_labels(&alive, any, &claims);
        assert_eq!(labels[3], 3);
        assert_eq!(&labels[..3], &[0, 1, 2], "the rest in order");
    }

    #[test]
    fn claims_that_changed_shape_or_conflict_are_not_kept() {
        let alive = [0, 1, 2];
        // 4 GPUs then, 8 now: relaunched anyway, so no claim.
        assert_eq!(
            node_labels(&alive, any, &[claim(&[(0, 8)], &[(2, 4)])]),
            alive
        );
        // Two groups on policy node 0 that ran on different workers: the first one wins.
        let claims = [claim(&[(0, 4)], &[(2, 4)]), claim(&[(0, 4)], &[(1, 4)])];
        assert_eq!(node_labels(&alive, any, &claims)[0], 2);
        // A worker that is gone.
        assert_eq!(
            node_labels(&alive, any, &[claim(&[(0, 8)], &[(7, 8)])]),
            alive
        );
    }

    #[test]
    fn nodes_only_stand_for_interchangeable_workers() {
        // Two switches of two nodes: node i is on switch i / 2.
        let alive = [0, 1, 2, 3];
        let same_switch = |i: usize, k: usize| i / 2 == k / 2;
        // Ran on worker 2 (switch 1), now placed on node 0 (switch 0): not kept.
        let labels = node_labels(&alive, same_switch, &[claim(&[(0, 8)], &[(2, 8)])]);
        assert_eq!(labels, alive);
        // Ran on worker 1, now on node 0: same switch, kept.
        let labels = node_labels(&alive, same_switch, &[claim(&[(0, 8)], &[(1, 8)])]);
        assert_eq!(labels, vec![1, 0, 2, 3]);
    }
}
