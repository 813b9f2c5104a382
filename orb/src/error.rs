//! Errors of invocations: exceptions raised by the serving side, and failures the ORB
//! detects itself (node down, deadline).

use std::time::Duration;

/// Exception codes carried in EXCEPTION replies. Servant-defined failures use `APP`.
pub mod code {
    pub const OBJECT_NOT_EXIST: u32 = 1;
    pub const STALE_REFERENCE: u32 = 2;
    pub const BAD_INTERFACE: u32 = 3;
    pub const BAD_METHOD: u32 = 4;
    pub const BAD_REQUEST: u32 = 5;
    pub const OVERLOADED: u32 = 6;
    pub const DUPLICATE: u32 = 7;
    pub const DEADLINE_EXCEEDED: u32 = 8;
    pub const PERMISSION_DENIED: u32 = 9;
    pub const INTERNAL: u32 = 10;
    pub const APP: u32 = 100;
    /// A failed system call on the serving side: this plus its errno (services that act on
    /// files and processes for a caller: PXFS, procmgmt).
    pub const ERRNO_BASE: u32 = 1000;
}

/// An exception raised on the serving side and carried back to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    pub code: u32,
    pub message: String,
}

impl Exception {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Exception { code, message: message.into() }
    }
    /// A servant-defined failure.
    pub fn app(message: impl Into<String>) -> Self {
        Self::new(code::APP, message)
    }
    pub fn bad_method(method: u32) -> Self {
        Self::new(code::BAD_METHOD, format!("no method {method} in this interface"))
    }
    pub fn bad_interface(got: u32, want: u32) -> Self {
        Self::new(code::BAD_INTERFACE, format!("object implements interface {got:#010x}, not {want:#010x}"))
    }
    pub fn bad_request(why: impl std::fmt::Display) -> Self {
        Self::new(code::BAD_REQUEST, format!("cannot decode request: {why}"))
    }
    pub fn object_not_exist(object: u64) -> Self {
        Self::new(code::OBJECT_NOT_EXIST, format!("no object {object} here"))
    }
    pub fn permission_denied(why: impl Into<String>) -> Self {
        Self::new(code::PERMISSION_DENIED, why)
    }
    /// A system call's failure: errno `n`.
    pub fn errno(n: i32, why: impl Into<String>) -> Self {
        Self::new(code::ERRNO_BASE + n.max(1) as u32, why)
    }
    /// A system call's failure, from the error it returned (EIO when it carries no errno).
    pub fn from_io(e: std::io::Error) -> Self {
        Self::errno(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
    /// The errno of an `errno` exception.
    pub fn os_errno(&self) -> Option<i32> {
        (self.code > code::ERRNO_BASE).then(|| (self.code - code::ERRNO_BASE) as i32)
    }
    pub fn name(&self) -> &'static str {
        match self.code {
            code::OBJECT_NOT_EXIST => "ObjectNotExist",
            code::STALE_REFERENCE => "StaleReference",
            code::BAD_INTERFACE => "BadInterface",
            code::BAD_METHOD => "BadMethod",
            code::BAD_REQUEST => "BadRequest",
            code::OVERLOADED => "Overloaded",
            code::DUPLICATE => "Duplicate",
            code::DEADLINE_EXCEEDED => "DeadlineExceeded",
            code::PERMISSION_DENIED => "PermissionDenied",
            code::INTERNAL => "Internal",
            c if c > code::ERRNO_BASE => "Errno",
            _ => "App",
        }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name(), self.message)
    }
}

/// Why an invocation failed, as seen by the caller.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OrbError {
    /// The serving node is down or the link to it broke while the call was outstanding. The
    /// call may or may not have executed; the ORB never re-sends it (at-most-once).
    #[error("node {node} is down: {reason}")]
    NodeDown { node: u32, reason: String },
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),
    #[error("{0}")]
    Exception(Exception),
    #[error("cannot decode reply: {0}")]
    Decode(String),
    #[error("node {0} is not in the cluster configuration")]
    UnknownNode(u32),
    #[error("the ORB is shut down")]
    Shutdown,
}

impl OrbError {
    pub fn node_down(node: u32, reason: impl Into<String>) -> Self {
        OrbError::NodeDown { node, reason: reason.into() }
    }
    pub fn is_node_down(&self) -> bool {
        matches!(self, OrbError::NodeDown { .. })
    }
    pub fn exception_code(&self) -> Option<u32> {
        match self {
            OrbError::Exception(e) => Some(e.code),
            _ => None,
        }
    }
    /// The errno a serving side's system call failed with, if that is what this is.
    pub fn os_errno(&self) -> Option<i32> {
        match self {
            OrbError::Exception(e) => e.os_errno(),
            _ => None,
        }
    }
}

impl From<Exception> for OrbError {
    fn from(e: Exception) -> Self {
        OrbError::Exception(e)
    }
}
