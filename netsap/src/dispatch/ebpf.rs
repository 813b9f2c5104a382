//! Steering with the TC program `bpf/dispatch.bpf.c` on the ingress of the gateway's external
//! interface: the steering table goes into its `services` map; the flow table lives in its
//! `flows` map. The program stays attached while this value lives.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, TcHook, TcHookBuilder, TC_INGRESS};

use super::{Policy, Site, Steering, Table, MAX_SLOTS};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/dispatch.skel.rs"));
}
use skel::{DispatchSkel, DispatchSkelBuilder};

// The program's `struct service`: policy, nslots, next, slots[MAX_SLOTS].
const SERVICE_BYTES: usize = 12 + 4 * MAX_SLOTS;
const POLICY_RR: u32 = 0;
const POLICY_STICKY: u32 = 1;

pub struct Ebpf {
    skel: DispatchSkel<'static>,
    hook: TcHook,
    installed: BTreeSet<u32>,
}

impl Ebpf {
    /// Loads the program and attaches it to the external interface's ingress.
    pub fn attach(site: &Site) -> Result<Ebpf, String> {
        if std::env::var_os("SSI_BPF_DEBUG").is_none() {
            libbpf_rs::set_print(None);
        }
        // The skeleton borrows its storage for as long as it is loaded, which is the
        // daemon's life: one small allocation, given up on purpose.
        let storage = Box::leak(Box::new(MaybeUninit::uninit()));
        let open = DispatchSkelBuilder::default().open(storage).map_err(|e| format!("cannot open the BPF object: {e}"))?;
        let skel = open.load().map_err(|e| format!("cannot load the TC program: {e}"))?;
        let mut cfg = Vec::with_capacity(12);
        cfg.extend_from_slice(&site.global.octets());
        cfg.extend_from_slice(&site.self_addr.octets());
        cfg.extend_from_slice(&site.interconnect.index.to_ne_bytes());
        skel.maps.config.update(&0u32.to_ne_bytes(), &cfg, MapFlags::ANY).map_err(|e| format!("config map: {e}"))?;
        for (&node, addr) in &site.nodes {
            let range = crate::topology::ephemeral_index(node);
            skel.maps.ephemeral.update(&range.to_ne_bytes(), &addr.octets(), MapFlags::ANY).map_err(|e| format!("ephemeral map: {e}"))?;
        }
        let mut hook = TcHookBuilder::new(skel.progs.dispatch.as_fd())
            .ifindex(site.external.index as i32)
            .replace(true)
            .handle(1)
            .priority(1)
            .hook(TC_INGRESS);
        hook.create().map_err(|e| format!("clsact qdisc on {}: {e}", site.external.name))?;
        hook.attach().map_err(|e| format!("attaching to {} ingress: {e}", site.external.name))?;
        Ok(Ebpf { skel, hook, installed: BTreeSet::new() })
    }
}

impl Steering for Ebpf {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn apply(&mut self, table: &Table) -> Result<(), String> {
        let m = &self.skel.maps.services;
        let mut now = BTreeSet::new();
        for (&(proto, port), s) in table {
            let mut v = vec![0u8; SERVICE_BYTES];
            let policy = if s.policy == Policy::Sticky { POLICY_STICKY } else { POLICY_RR };
            v[0..4].copy_from_slice(&policy.to_ne_bytes());
            v[4..8].copy_from_slice(&(s.slots.len().min(MAX_SLOTS) as u32).to_ne_bytes());
            for (i, a) in s.slots.iter().take(MAX_SLOTS).enumerate() {
                v[12 + 4 * i..16 + 4 * i].copy_from_slice(&a.octets());
            }
            let k = crate::sap::port_key(proto, port as u32);
            m.update(&k.to_ne_bytes(), &v, MapFlags::ANY).map_err(|e| format!("services map: {e}"))?;
            now.insert(k);
        }
        for gone in self.installed.difference(&now) {
            let _ = m.delete(&gone.to_ne_bytes());
        }
        self.installed = now;
        Ok(())
    }
}

impl Drop for Ebpf {
    fn drop(&mut self) {
        let _ = self.hook.detach();
    }
}
