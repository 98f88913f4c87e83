//! Where a class's VMs go: pinned to one node, or spread over the nodes that can reach the
//! template's disks, balanced by free memory.

use std::collections::BTreeMap;

/// A node that could take VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    /// Memory not in use now, in MiB (0 if unknown).
    pub free_mib: u64,
}

/// Assigns `count` VMs of `memory_mib` each to candidates: each VM goes where the most
/// memory is left after what is already planned. Ties go to the first candidate (by name).
pub fn spread(candidates: &[Candidate], count: usize, memory_mib: u64) -> Vec<String> {
    let mut left: BTreeMap<&str, i128> = candidates
        .iter()
        .map(|candidate| (candidate.node.as_str(), i128::from(candidate.free_mib)))
        .collect();
    let mut plan = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((node, free)) = left
            .iter_mut()
            .max_by(|a, b| (*a.1).cmp(&*b.1).then_with(|| b.0.cmp(a.0)))
        else {
            break;
        };
        *free -= i128::from(memory_mib);
        plan.push((*node).to_owned());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(node: &str, free_mib: u64) -> Candidate {
        Candidate {
            node: node.into(),
            free_mib,
        }
    }

    #[test]
    fn balances_by_free_memory() {
        let plan = spread(&[candidate("pve1", 8192), candidate("pve2", 4096)], 6, 2048);
        let on = |node: &str| plan.iter().filter(|n| *n == node).count();
        assert_eq!((on("pve1"), on("pve2")), (4, 2));
    }

    #[test]
    fn equal_nodes_alternate_and_one_node_takes_all() {
        let plan = spread(&[candidate("a", 0), candidate("b", 0)], 4, 1024);
        assert_eq!(plan, ["a", "b", "a", "b"]);
        assert_eq!(spread(&[candidate("only", 0)], 3, 512), ["only"; 3]);
        assert!(spread(&[], 3, 512).is_empty());
    }
}
