//! Objects and references: what a servant implements, what a caller holds.
//!
//! - `ObjRef` (generated from IDL) is the wire form: node, object id, node incarnation,
//!   interface id. It is plain data and counts nothing.
//! - `ObjHandle` is a *counted* reference. Each node keeps at most one live handle per
//!   object (clones share it); that handle stands for one registration with the owner
//!   (remote objects) or one local count (objects this node serves). Dropping the last clone
//!   releases it, and when no node holds a reference the servant gets `unreferenced()`.
//! - References passed inside invocations arrive as a `Refs` bag next to the message; a
//!   receiver keeps one with `refs.adopt(&objref)`, everything not adopted is released when
//!   the bag is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use prost::Message;

use crate::error::{Exception, OrbError};
use crate::orb::{CallOptions, Orb, OrbInner};
use crate::proto::{Creds, Header, Kind, ObjRef};

/// Implemented (by generated code) for every IDL message: the object references it carries.
pub trait RefCarrier {
    const CARRIES_REFS: bool = false;
    fn collect_refs(&self, _out: &mut Vec<ObjRef>) {}
}

/// Identity of an object reference, without its interface tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RefKey {
    pub node: u32,
    pub object: u64,
    pub incarnation: u64,
}

impl From<&ObjRef> for RefKey {
    fn from(r: &ObjRef) -> Self {
        RefKey { node: r.node, object: r.object, incarnation: r.incarnation }
    }
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}@{:x}", self.node, self.object, self.incarnation)
    }
}

pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Outgoing, Exception>> + Send + 'static>>;

/// What an exported object is to the ORB. Implemented by IDL-generated skeletons.
pub trait Servant: Send + Sync + 'static {
    fn interface(&self) -> u32;
    fn interface_name(&self) -> &'static str;
    fn dispatch(&self, ctx: CallCtx, method: u32, payload: Bytes) -> DispatchFuture;
    fn is_oneway(&self, method: u32) -> bool;
    fn unreferenced(&self) {}
}

/// What a servant learns about the invocation it serves.
pub struct CallCtx {
    pub orb: Orb,
    /// Calling node (0 for a cluster tool).
    pub src: u32,
    pub request_id: u64,
    pub priority: u32,
    pub deadline: Instant,
    /// The credentials the caller acts with, when it sent any.
    pub creds: Option<Creds>,
    /// References passed in this invocation.
    pub refs: Refs,
}

/// A marshalled message ready to send: payload bytes and the references it carries.
pub struct Outgoing {
    pub payload: Bytes,
    pub refs: Vec<ObjRef>,
}

impl Outgoing {
    pub fn from_message<M: Message + RefCarrier>(m: &M) -> Self {
        let mut refs = Vec::new();
        if M::CARRIES_REFS {
            m.collect_refs(&mut refs);
        }
        Outgoing { payload: Bytes::from(m.encode_to_vec()), refs }
    }
    pub fn raw(payload: Bytes) -> Self {
        Outgoing { payload, refs: Vec::new() }
    }
}

pub fn decode_request<M: Message + Default>(payload: Bytes) -> Result<M, Exception> {
    M::decode(payload).map_err(Exception::bad_request)
}

/// A reply as received: header, payload, and the references it passed.
pub struct Incoming {
    pub header: Header,
    pub payload: Bytes,
    pub refs: Refs,
}

impl Incoming {
    /// The reply as a typed message, or the exception it carries.
    pub fn decode<M: Message + Default>(self) -> Result<Received<M>, OrbError> {
        if self.header.kind == Kind::Exception as i32 {
            return Err(OrbError::Exception(Exception::new(self.header.code, self.header.message)));
        }
        let msg = M::decode(self.payload).map_err(|e| OrbError::Decode(e.to_string()))?;
        Ok(Received { msg, refs: self.refs })
    }
}

/// A typed reply and the references that came with it. Derefs to the message.
pub struct Received<M> {
    pub msg: M,
    pub refs: Refs,
}

impl<M: std::fmt::Debug> std::fmt::Debug for Received<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Received({:?}, {} refs)", self.msg, self.refs.len())
    }
}

impl<M> Received<M> {
    pub fn into_inner(self) -> M {
        self.msg
    }
}

impl<M> std::ops::Deref for Received<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.msg
    }
}

/// References received with a message, counted until adopted or dropped.
#[derive(Default)]
pub struct Refs {
    pub(crate) handles: Vec<ObjHandle>,
}

impl Refs {
    /// A counted handle for a reference that came with this message.
    pub fn adopt(&self, r: &ObjRef) -> Option<ObjHandle> {
        let k = RefKey::from(r);
        self.handles.iter().find(|h| h.key() == k).cloned()
    }
    pub fn len(&self) -> usize {
        self.handles.len()
    }
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// A counted reference to an object, local or remote.
#[derive(Clone)]
pub struct ObjHandle(pub(crate) Arc<HandleInner>);

pub(crate) struct HandleInner {
    pub(crate) orb: Weak<OrbInner>,
    pub(crate) objref: ObjRef,
    /// Well-known objects (names, refcounts, membership) are addressed without counting.
    pub(crate) counted: bool,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if let (true, Some(orb)) = (self.counted, self.orb.upgrade()) {
            orb.handle_dropped(self as *const HandleInner, &self.objref);
        }
    }
}

impl ObjHandle {
    pub fn objref(&self) -> &ObjRef {
        &self.0.objref
    }
    pub fn key(&self) -> RefKey {
        RefKey::from(&self.0.objref)
    }
    pub fn node(&self) -> u32 {
        self.0.objref.node
    }
    pub fn orb(&self) -> Result<Orb, OrbError> {
        self.0.orb.upgrade().map(Orb::from_inner).ok_or(OrbError::Shutdown)
    }
    /// Two-way invocation (used by generated stubs).
    pub async fn invoke(&self, iface: u32, method: u32, out: Outgoing, opts: &CallOptions) -> Result<Incoming, OrbError> {
        self.orb()?.invoke(self, iface, method, out, opts).await
    }
    /// One-way invocation (used by generated stubs).
    pub async fn invoke_oneway(&self, iface: u32, method: u32, out: Outgoing, opts: &CallOptions) -> Result<(), OrbError> {
        self.orb()?.invoke_oneway(self, iface, method, out, opts).await
    }
}

impl std::fmt::Debug for ObjHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjHandle({})", self.0.objref)
    }
}
