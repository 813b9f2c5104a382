//! ssi-orb: the object request broker every ssi subsystem talks through.
//!
//! Every interaction between nodes is an invocation on a remote object. Interfaces are IDL
//! (`.proto`), compiled by `ssi-idl` into servant traits, skeletons and stubs. Objects are
//! exported on their node and addressed by `ObjRef`s that can travel inside invocations,
//! counted across nodes until nobody holds one (`unreferenced()`). All invocations between
//! two nodes share one authenticated bidirectional gRPC stream. See ARCHITECTURE.md.

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
pub use auth::ClusterKey;
pub use bytes::Bytes;
pub use error::{Exception, OrbError};
pub use object::{decode_request, CallCtx, DispatchFuture, Incoming, ObjHandle, Outgoing, Received, RefCarrier, RefKey, Refs, Servant};
pub use orb::{well_known, CallOptions, Liveness, Orb, OrbConfig, MAX_NODE, TOOL_NODE};
pub use proto::svc::View;
pub use proto::ObjRef;
