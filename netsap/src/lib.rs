//! ssi-netsap: global networking — the distributed SAP server owning the
//! cluster's port namespace, bind interposition, packet steering on gateway nodes.
//!
//! # Modules
//!
//! - `sap.rs` — the SAP server (`proto/sap.proto`, name "sap" on every node): (protocol, port)
//!   → listeners (node, pid), a service name and policy for scalable services. Shard `port mod
//!   N` lives on node i (primary) and node i+1 (backup); the primary has the backup take a bind
//!   first (the backup checks it against its own copy, so a restarted primary that lost its
//!   table still refuses what the backup knows), then applies it; requests for a node's table
//!   are serialized there. `SapClient` routes to the primary, or the backup while it is down.
//!   A node that leaves loses its listeners. Followers of the whole table (the dispatcher, the
//!   bind guards) use `SapClient::follow`: a long poll (`Watch`, up to 10 s) on every node's
//!   copy, answered as soon as that copy changes (versions start at the server's start time, so
//!   a restarted server's are new); no one reads the table periodically. The long poll is a
//!   `CallOptions::waiting` call: the tracer leaves it out of the request-response stages.
//!   `ssi ports` and the `Ports` control call are ssi-node's.
//! - `interpose.rs` — bind interposition (`ssi run`): the seccomp filter (libseccomp, exported as
//!   classic BPF: notify on `bind`, allow the rest) and the `Supervisor` that answers the
//!   notifications of a process tree: reads the sockaddr from the process (`process_vm_readv`),
//!   the socket's type through a pidfd, asks the SAP, answers EADDRINUSE or lets the call go
//!   on; a thread every 250 ms gives back ports whose socket left the node's network or whose
//!   process died. procmgmt's spawner installs the filter in the child with the raw
//!   `seccomp()` call (async-signal-safe, as root before setuid) and hands the listener back
//!   over a socketpair; procmgmt sees only its `BindGate` trait.
//! - `bindguard.rs` — the second layer of bind interposition: `bpf/bindguard.bpf.c` on a cgroup
//!   v2 of the node's own (`ROOT/ssi/node-HASH`) that the daemon moves itself into at start, so
//!   every process it starts is inside: `bind4`/`bind6` refuse (EADDRINUSE, `bpf_set_retval`)
//!   binds to ports the SAP says other nodes hold alone (the `refused` map, updated as the
//!   table it follows changes; the supervisor clears a port from it the moment it grants it);
//!   `post_bind4/6` report binds of chosen ports (not port 0), which user space enters in the
//!   SAP if they came from outside `ssi run` (`Supervisor::adopt`); `sock_release` reports that a
//!   process that bound something closed a socket (the hook may not read ports), and that
//!   process's ports are checked at once. The daemon's own binds pass untouched. `ssi down`
//!   kills what is left in the cgroups (`cgroup.kill`: whatever the node started) and removes
//!   them. Loaded with libbpf-rs skeletons like the dispatcher and the tracer:
//!   one BPF loader for the project (aya 0.14 would load the same C objects; a second loader
//!   buys nothing here).
//! - `dispatch/` — the packet dispatcher of a gateway (the daemon starts it when it is a
//!   gateway and the config has a global address; ssi-node's `daemon::start_dispatcher`): `mod.rs`
//!   turns the SAP table into a steering table ((proto, port) → the listening nodes'
//!   interconnect addresses as slots, weighted by smooth WRR, and a policy) and keeps the
//!   mechanism in step with the SAP from a thread of its own (follows the table, see `sap.rs`);
//!   the mechanism is the best that starts (`[cluster] dispatch`, `ssi up --dispatch`):
//!   `ebpf.rs` loads `bpf/dispatch.bpf.c` (libbpf-rs skeleton, the same loader as the tracer)
//!   on the ingress of the interface with the global address: a SYN (or a UDP datagram of an
//!   unknown flow) picks a slot (round robin by an atomic cursor, or sticky by a hash of the
//!   client address) and records the flow in an LRU map; the packet goes unchanged to the
//!   node with `bpf_redirect_neigh` (direct server return: the node holds the global address
//!   on `lo` and answers the client itself); answers to a port in a node's ephemeral range go
//!   back to that node (nodes send from the global address). `nft.rs` writes a `numgen`/`jhash`
//!   DNAT table replaced in one `nft -f` transaction (conntrack is the flow table; no DSR).
//!   `proxy.rs` listens on (global address, port) and copies connections (TCP only).
//! - `topology.rs` — `ssi up --netns`: a network namespace per node (`PREFIX-nN`, 10.99.0.N on
//!   `eth0`), the bridge in a namespace of its own (`PREFIX-lan`, so the host's network is not
//!   touched), and `PREFIX-ext` linked to the gateway only (192.168.77.2 → the global address
//!   192.168.77.1 on the gateway's `ext0`). Direct server return: the other nodes have the
//!   global address on `lo` (arp_ignore) and a default route via the gateway from it; the
//!   gateway forwards (accept_local, for replies from its own global address) but an `ip rule`
//!   keeps `ext` off the interconnect except for packets nftables DNATed (marked). Made and
//!   removed with iproute2; `enter()` is how a daemon joins its namespace. PREFIX is `ssi` + a
//!   hash of the cluster directory, so test clusters never collide. Each node's namespace gets
//!   its own ephemeral port range (`ephemeral_range`: 400 ports from 40000 + 400·(N−1)).
//! - Users elsewhere: ssi-web's `nginx` (nginx on a node through `ssi run`) and `wrk`,
//!   ssi-node's `gateway` (what a gateway's log says its dispatcher does), ssi-bench's `net`.
//!
//! # Invariants
//!
//! - **The dispatcher never decides alone.** What the gateway steers is the SAP table as it
//!   follows it (a change arrives with the next `Watch` answer); a flow keeps its node until a new SYN reuses its 4-tuple or its node
//!   leaves the service. Packets the dispatcher does not know (other addresses, ports of no
//!   service or ephemeral range, fragments, non-IPv4) go to the gateway's own stack untouched.
//!   A gateway daemon that stops takes its steering with it (TC program detached, nftables table
//!   deleted, proxy closed); one that crashes leaves it until it starts again and replaces it.
//! - **A daemon joins its network namespace before it starts a thread** (`setns` is per
//!   thread; threads inherit it), and only its network namespace: FUSE mounts stay in the host's
//!   mount namespace, visible to every user. Processes it spawns (`ssi rexec`) live in its
//!   network. Tools that speak the ORB directly (ssi-node's `tool`) reach a `--netns` cluster only from
//!   inside a node's namespace (`tool::on_cluster_network` runs them on a thread that joined
//!   node 1's); the CLI goes through the control sockets, which are paths.

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.netsap.rs"));
}
pub mod bindguard;
pub mod dispatch;
pub mod interpose;
pub mod partition;
pub mod sap;
pub mod topology;

/// What this crate can do today.
pub const STATUS: &str =
    "netsap: the sharded SAP server (ssi ports), bind interposition (ssi run; seccomp, and cgroup BPF as a second layer), the gateway dispatcher (TC eBPF / nft / proxy), network namespaces per node (ssi up --netns, ssi ext)";
