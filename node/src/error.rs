//! What the node crate's commands fail with, and the `context` they add on the way up.
//!
//! Display shows one layer; `source()` gives the next, so the binary prints the chain as
//! `context: cause: …` on one line.

/// Why a command of a node or of the cluster tool failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    UnknownNode(#[from] crate::config::UnknownNode),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Orb(#[from] ssi_orb::OrbError),
    #[error(transparent)]
    OrbStart(#[from] ssi_orb::StartError),
    #[error(transparent)]
    Key(#[from] ssi_orb::KeyError),
    #[error(transparent)]
    Topology(#[from] ssi_netsap::topology::TopologyError),
    #[error(transparent)]
    Partition(#[from] ssi_netsap::partition::PartitionError),
    #[error(transparent)]
    Trace(#[from] ssi_trace::error::TraceError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sys(#[from] nix::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Clock(#[from] std::time::SystemTimeError),
    #[error(transparent)]
    Format(#[from] std::fmt::Error),
    /// A daemon answered a request with an error status (its message).
    #[error("{0}")]
    Refused(String),
    /// A step of the command failed or found the cluster unfit for it; the message says why.
    #[error("{0}")]
    Failed(String),
    /// `context` was being done when `source` happened.
    #[error("{context}")]
    Context { context: String, source: Box<Error> },
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::Refused(s.message().to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with `Error::Failed` and a formatted message, where `Error` is the error
/// enum in scope at the call (each crate's own).
#[macro_export]
macro_rules! bail {
    ($($fmt:tt)*) => { return Err(Error::Failed(format!($($fmt)*))) };
}

/// `Error::Failed` with a formatted message, `Error` being the enum in scope at the call.
#[macro_export]
macro_rules! failed {
    ($($fmt:tt)*) => { Error::Failed(format!($($fmt)*)) };
}

/// Defines, in the crate where it is called, a `Context` trait that wraps any error
/// convertible into `$err` in `$err::Context` (and turns a `None` into `$err::Failed`):
/// each library crate has its own error enum, and this is the one way they grow context.
#[macro_export]
macro_rules! error_context {
    ($err:ident) => {
        /// Adds what was being done to an error, as `anyhow::Context` would.
        pub trait Context<T> {
            fn context(self, what: impl std::fmt::Display) -> std::result::Result<T, $err>;
            fn with_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> std::result::Result<T, $err>;
        }
        impl<T, E: Into<$err>> Context<T> for std::result::Result<T, E> {
            fn context(self, what: impl std::fmt::Display) -> std::result::Result<T, $err> {
                self.map_err(|e| $err::Context { context: what.to_string(), source: Box::new(e.into()) })
            }
            fn with_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> std::result::Result<T, $err> {
                self.map_err(|e| $err::Context { context: what().to_string(), source: Box::new(e.into()) })
            }
        }
        impl<T> Context<T> for Option<T> {
            fn context(self, what: impl std::fmt::Display) -> std::result::Result<T, $err> {
                self.ok_or_else(|| $err::Failed(what.to_string()))
            }
            fn with_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> std::result::Result<T, $err> {
                self.ok_or_else(|| $err::Failed(what().to_string()))
            }
        }
    };
}

error_context!(Error);

/// Defines, in the crate where it is called, the error enum of a command that drives a
/// cluster (a workload, a benchmark, the demo): the variants each needs (`Node`, `Io`,
/// `Failed`, `Context`), the crate's own `#[from]` variants listed in the call, `Result`,
/// and the `Context` trait.
#[macro_export]
macro_rules! run_error {
    ($(#[$doc:meta])* pub enum Error { $($name:ident($ty:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        pub enum Error {
            /// Starting, reaching or stopping the cluster failed.
            #[error(transparent)]
            Node(#[from] $crate::Error),
            #[error(transparent)]
            Io(#[from] std::io::Error),
            $(
                #[error(transparent)]
                $name(#[from] $ty),
            )*
            /// A step of the run failed, or a check of its result; the message says which.
            #[error("{0}")]
            Failed(String),
            /// `context` was being done when `source` happened.
            #[error("{context}")]
            Context { context: String, source: Box<Error> },
        }

        pub type Result<T, E = Error> = std::result::Result<T, E>;

        $crate::error_context!(Error);
    };
}
