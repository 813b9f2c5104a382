//! Roles that must be held by one node at a time (a SAP shard's serving copy, a volume's
//! primary), assigned in the replicated state machine: the leader computes them with each
//! view it proposes, so a role and the view it is valid in are committed together and every
//! node reads the same holder for a view number.
//!
//! A role is declared by the service that needs it ([`crate::Orb::declare_role`]) with its
//! candidates in order of preference; every node declares the same (they come from the
//! configuration). A holder keeps its role while it is a member (roles do not move back
//! when a preferred node returns: a move costs a hand-over). A role whose holder left goes
//! to the first candidate in the view, with the new view's number as its epoch, so epochs
//! only grow and name one holder each; with no candidate in the view the role has no holder.

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::svc::Role;

/// The roles for the view numbered `number` with `members`, given the roles of the view
/// before it and what is declared.
pub(crate) fn assign(prev: &[Role], members: &BTreeSet<u32>, declared: &BTreeMap<String, Vec<u32>>, number: u64) -> Vec<Role> {
    let held: BTreeMap<&str, &Role> = prev.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out = Vec::new();
    for (name, candidates) in declared {
        match held.get(name.as_str()) {
            Some(r) if members.contains(&r.node) && candidates.contains(&r.node) => out.push((*r).clone()),
            _ => {
                if let Some(node) = candidates.iter().find(|c| members.contains(c)) {
                    out.push(Role { name: name.clone(), node: *node, epoch: number });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, Vec<u32>> {
        [("sap/0".to_string(), vec![1, 2]), ("vol/a".to_string(), vec![3, 1])].into_iter().collect()
    }

    fn holder(roles: &[Role], name: &str) -> Option<(u32, u64)> {
        roles.iter().find(|r| r.name == name).map(|r| (r.node, r.epoch))
    }

    #[test]
    fn roles_go_to_the_first_candidate_and_stay_while_the_holder_is_a_member() {
        let all: BTreeSet<u32> = [1, 2, 3].into();
        let v1 = assign(&[], &all, &declared(), 1);
        assert_eq!((holder(&v1, "sap/0"), holder(&v1, "vol/a")), (Some((1, 1)), Some((3, 1))));
        // Node 1 leaves: its role moves, with the new view's number as epoch; node 3's stays.
        let v2 = assign(&v1, &[2, 3].into(), &declared(), 2);
        assert_eq!((holder(&v2, "sap/0"), holder(&v2, "vol/a")), (Some((2, 2)), Some((3, 1))));
        // Node 1 is back: the role does not move back.
        let v3 = assign(&v2, &all, &declared(), 3);
        assert_eq!(holder(&v3, "sap/0"), Some((2, 2)));
        // No candidate in the view: no holder; then the first one back takes it, a new epoch.
        let v4 = assign(&v3, &[3].into(), &declared(), 4);
        assert_eq!(holder(&v4, "sap/0"), None);
        let v5 = assign(&v4, &[1, 3].into(), &declared(), 5);
        assert_eq!(holder(&v5, "sap/0"), Some((1, 5)));
    }

    #[test]
    fn a_holder_no_longer_a_candidate_loses_the_role_and_undeclared_roles_vanish() {
        let v1 = assign(&[], &[1, 2, 3].into(), &declared(), 1);
        let moved: BTreeMap<String, Vec<u32>> = [("sap/0".to_string(), vec![2, 1])].into_iter().collect();
        let v2 = assign(&v1, &[1, 2, 3].into(), &moved, 2);
        assert_eq!(holder(&v2, "sap/0"), Some((1, 1)), "still a candidate: it keeps the role");
        assert_eq!(holder(&v2, "vol/a"), None);
        let only2: BTreeMap<String, Vec<u32>> = [("sap/0".to_string(), vec![2])].into_iter().collect();
        assert_eq!(holder(&assign(&v2, &[1, 2, 3].into(), &only2, 3), "sap/0"), Some((2, 3)));
    }
}
