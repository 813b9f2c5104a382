//! The IN group as one node sees it: the members (EAs, QEs, the UI) with their state, and
//! the switch the EAs answer to. Each node keeps its own copy: the starter's roster, then
//! joins and state-ready announcements as they arrive, and the ORB's failure detector
//! taking out every member of a node that leaves the view (the paper's §4.1: no more
//! queries to it). Copies may differ for a moment; the backup EA's reissue covers that.

use std::collections::BTreeMap;

use crate::proto::{Member, Role};

#[derive(Default)]
pub struct Group {
    members: BTreeMap<u32, Member>,
    /// Changes seen (roster, joins, readiness, departures): a view number for this node.
    changes: u64,
}

impl Group {
    /// Takes in a roster: members not known yet are added as given.
    pub fn merge(&mut self, roster: &[Member]) {
        for m in roster {
            if let std::collections::btree_map::Entry::Vacant(e) = self.members.entry(m.id) {
                e.insert(*m);
                self.changes += 1;
            }
        }
    }

    /// A member joining (not ready) or becoming ready.
    pub fn announce(&mut self, m: &Member) {
        let e = self.members.entry(m.id).or_insert_with(|| *m);
        e.ready |= m.ready;
        self.changes += 1;
    }

    /// Every member on `node` leaves. Returns whether any did.
    pub fn node_gone(&mut self, node: u32) -> bool {
        let before = self.members.len();
        self.members.retain(|_, m| m.node != node);
        let changed = self.members.len() != before;
        if changed {
            self.changes += 1;
        }
        changed
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn get(&self, id: u32) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    fn of(&self, role: Role) -> impl Iterator<Item = &Member> {
        self.members.values().filter(move |m| m.role == role as i32)
    }

    /// The live EAs, by id (EA1 first).
    pub fn eas(&self) -> Vec<Member> {
        self.of(Role::Ea).cloned().collect()
    }

    /// The QEs that serve queries, by id: the list both EAs pick from.
    pub fn ready_qes(&self) -> Vec<Member> {
        self.of(Role::Qe).filter(|m| m.ready).cloned().collect()
    }

    /// QEs still waiting for their state.
    pub fn joining_qes(&self) -> Vec<Member> {
        self.of(Role::Qe).filter(|m| !m.ready).cloned().collect()
    }

    pub fn switch(&self) -> Option<Member> {
        self.of(Role::Switch).next().cloned()
    }

    pub fn ui(&self) -> Option<Member> {
        self.of(Role::Ui).next().cloned()
    }

    /// Nodes with a member or the switch: where announcements go.
    pub fn nodes(&self) -> Vec<u32> {
        let mut n: Vec<u32> = self.members.values().map(|m| m.node).collect();
        n.sort_unstable();
        n.dedup();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u32, node: u32, role: Role, ready: bool) -> Member {
        Member { id, node, role: role as i32, ready }
    }

    #[test]
    fn joins_readiness_and_departures() {
        let mut g = Group::default();
        g.merge(&[
            m(1, 1, Role::Switch, true),
            m(2, 2, Role::Ea, true),
            m(3, 3, Role::Ea, true),
            m(4, 4, Role::Qe, true),
            m(5, 5, Role::Qe, true),
        ]);
        assert_eq!(g.ready_qes().iter().map(|q| q.id).collect::<Vec<_>>(), vec![4, 5]);
        g.announce(&m(6, 4, Role::Qe, false));
        assert_eq!(g.ready_qes().len(), 2);
        assert_eq!(g.joining_qes()[0].id, 6);
        g.announce(&m(6, 4, Role::Qe, true));
        assert_eq!(g.ready_qes().len(), 3);
        assert!(g.node_gone(4));
        assert_eq!(g.ready_qes().iter().map(|q| q.id).collect::<Vec<_>>(), vec![5]);
        assert!(!g.node_gone(4));
        assert_eq!(g.eas().len(), 2);
        assert_eq!(g.switch().unwrap().id, 1);
        assert_eq!(g.nodes(), vec![1, 2, 3, 5]);
    }
}
