//! ssi-orb: the object request broker every ssi subsystem talks through.
//!
//! # Modules
//!
//! - `wire.rs` — `WireMsg` (the buffer chain), batch framing, `BatchCodec` (the tonic codec:
//!   encodes chains straight into the transport buffer; decodes a batch as one `Bytes` and
//!   splits it without copying), `parse_batch` (rejects malformed input with a reason).
//! - `auth.rs` — cluster key, HMAC-SHA256 challenge-response transcripts.
//! - `transport.rs` — the `ssi.orb.Transport/Open` gRPC service, dialing, the handshake on
//!   both sides, installing a link, the reader loop.
//! - `link.rs` — one link per peer: the out-queue that *is* the stream tonic polls
//!   (coalescing), request-id assignment, pending two-way calls, backpressure, closing.
//! - `dispatch.rs` — serving requests: duplicate check, reference unmarshalling, servant
//!   lookup, the priority queue with a concurrency limit, inline completion, replies.
//! - `orb.rs` — `Orb`: configuration, `invoke`/`invoke_oneway`/local invocation, export,
//!   name resolution, reference counting (marshal/unmarshal, releases, node death), the
//!   deadline sweeper and the release batcher.
//! - `object.rs` — `ObjHandle` (counted reference), `Refs` (references received with a
//!   message), `Servant`, `CallCtx`, `Outgoing`/`Incoming`/`Received`.
//! - `membership.rs` — dialing, failure detection, heartbeats, `link_for` (find or wait for
//!   a peer's link). A dropped link is redialed at once by the side that dials
//!   (`redial_now`): a refused dial declares the peer down within a round trip.
//! - `quorum/` — the views and the voters as a Raft state machine (raft-rs); `store.rs`, its
//!   durable log. Decides `Orb::quorum`/`Orb::fenced`.
//! - `wellknown.rs` — objects 1–3 of every node: `Names`, `RefCounts`, `Membership`.
//! - `diag.rs` — the `diag` object every daemon serves (echo, sink, sleep, create/pass/hold/
//!   drop references) and `diag::stub(orb, node)`: used by benchmarks, tests and the demo.
//! - `probes/` — the probe point (USDT `ssi:records`, fired at a transport write once its
//!   bundle of trace records — writes, reads, request-responses — is 5 ms old or 12 KiB), the
//!   records (`record.rs`: build and decode, the format of
//!   `docs/trace-format.md`), the in-process recorder (`inproc.rs`: the same records into a
//!   file, when BPF cannot be used) and the ORB's counters, also per peer.
//! - `ports.rs` — listen ports for local clusters and tests, drawn below the kernel's
//!   ephemeral range (a port found by binding port 0 can be taken before the node binds it).
//! - `rawpeer.rs` — a peer that speaks the wire by hand, for tests of malformed and
//!   unauthenticated input.
//!
//! The IDL compiler (`orb/idl`, ssi-idl, build time): Runs protoc (vendored unless `$PROTOC` is set), analyses the descriptor set to find which messages carry `ssi.orb.ObjRef` fields (directly or nested; refused inside maps/oneofs), and drives prost-build with a service generator. Output per package: the prost types, `impl RefCarrier` for every message, and per service `FOO_INTERFACE` (FNV-1a of the full name), `foo_methods::*`, `trait Foo`, `FooSkeleton<T>`, `export_foo()`, `FooStub`.
//!
//! # Invariants
//!
//! - **Every inter-node interaction is an ORB invocation.** Heartbeats, reference releases and
//!   name lookups are invocations on well-known objects (ids 1–3 on every node), visible to
//!   the probes like any other.
//! - **One link per node pair.** The lower node id dials; a new authenticated link from a
//!   peer replaces the old one. Node id 0 is a cluster tool: authenticated, can invoke, never a
//!   member or a view participant.
//! - **Nothing before authentication.** A link's reader does not start until HELLO →
//!   CHALLENGE → PROOF verified; an acceptor refuses with an ERROR frame and hangs up.
//! - **At-most-once.** Request ids come from one per-node counter, assigned under the link's
//!   queue lock, so they strictly increase on each link; the receiver refuses any id not
//!   above the last it saw from that peer incarnation (also across reconnects). The ORB
//!   never re-sends: a call whose link breaks fails with `NodeDown` ("may or may not have run").
//! - **A reference names one incarnation.** An invocation on a reference to an earlier
//!   incarnation of its node fails at the caller with `StaleReference`, one-way calls too (the
//!   receiver would refuse it, but a one-way call hears nothing back).
//! - **Nothing hangs on a dead node.** A broken link fails its outstanding calls at once;
//!   calls to a peer declared down fail at once; every call has a deadline (default 30 s)
//!   enforced by a 5 ms sweeper.
//! - **The reader never blocks.** Received requests are dispatched or queued (by priority,
//!   then arrival) or refused with `Overloaded`; senders wait instead (`wait_space`). h2
//!   GOAWAYs a connection whose reader stalls; a test stalls servants to prove it does not.
//! - **Reference counting.** At most one counted handle per (object) per node. A node
//!   passing a reference to node D makes sure D is counted *before* the message leaves: the
//!   owner counts locally; a third node calls the owner's `RefCounts.AddRef(holder = D)`
//!   first. References are unmarshalled in the reader, in arrival order, so a release never
//!   overtakes the reference it releases on the same link. A receiver that already holds the
//!   object gives the extra registration back. When local handles and remote holders reach
//!   zero, the servant gets `unreferenced()` once. A peer declared down, or seen with a new
//!   incarnation, loses all its registrations.
//! - **Views.** Only the coordinator (lowest live node id) creates views; numbers only grow;
//!   nodes install a higher-numbered view from the coordinator's heartbeat. No quorum yet: a
//!   partition can produce two views with one number.
//! - **Daemons do not panic on input.** Frames, configs and control requests are validated
//!   and answered with a reason; malformed batches close only the offending link.
//! - **Probes are amortized and count everything.** One probe site (`ssi:records`, a
//!   never-inlined function), hit at a transport write with a bundle of the records built since
//!   the last hit (writes and reads: a descriptor per message; request-responses) once it is
//!   5 ms old or 12 KiB. Records
//!   and stage clocks are built only while a recorder listens (the semaphore, learned at each
//!   write, or the in-process recorder); otherwise the cost is one relaxed load. A write's
//!   record carries the time it was counted, taken under the counters' lock, so a trace's
//!   per-pair messages and bytes equal the ORB's counters exactly (tests check it, eBPF and
//!   in-process).
//! - **The ORB never sends what a receiver must refuse.** A request over the 32 MiB message
//!   limit fails at its caller; a reply over it becomes an exception; the link stays up.

pub mod auth;
pub mod diag;
mod dispatch;
pub mod error;
mod link;
mod membership;
mod object;
mod orb;
pub mod ports;
pub mod probes;
mod quorum;
pub mod rawpeer;
mod transport;
mod wellknown;
pub mod wire;

/// Types generated from the ORB's own IDL.
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/ssi.orb.rs"));
    /// The well-known services of every node.
    pub mod svc {
        include!(concat!(env!("OUT_DIR"), "/ssi.orb.svc.rs"));
    }
    /// The diag service.
    pub mod diag {
        include!(concat!(env!("OUT_DIR"), "/ssi.orb.diag.rs"));
    }
}

pub use async_trait::async_trait;
pub use auth::{ClusterKey, KeyError};
pub use bytes::Bytes;
pub use error::{Exception, OrbError};
pub use object::{decode_request, CallCtx, DispatchFuture, Incoming, ObjHandle, Outgoing, Received, RefCarrier, RefKey, Refs, Servant};
pub use orb::{well_known, CallOptions, Liveness, Orb, OrbConfig, MAX_NODE, TOOL_NODE};
pub use proto::svc::View;
pub use proto::ObjRef;
pub use quorum::VoterError;
pub use transport::{LinkError, StartError};
