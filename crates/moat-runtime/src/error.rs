//! Typed runtime errors, so callers decide without parsing strings.

use std::time::Duration;

use crate::RuntimeKind;

pub type RuntimeResult<T> = Result<T, RuntimeError>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime}: {what} not found")]
    NotFound { runtime: RuntimeKind, what: String },
    #[error("{runtime}: {what} is in use: {detail}")]
    InUse {
        runtime: RuntimeKind,
        what: String,
        detail: String,
    },
    #[error("{runtime}: {op} timed out after {after:?}")]
    Timeout {
        runtime: RuntimeKind,
        op: String,
        after: Duration,
    },
    #[error("{runtime} is unavailable: {reason}")]
    Unavailable { runtime: RuntimeKind, reason: String },
    #[error("{runtime} cannot {what} in this version of moat")]
    Unsupported { runtime: RuntimeKind, what: String },
    /// The engine answers, but moat cannot keep its guarantees on it.
    #[error("{runtime}: {reason}")]
    Refused { runtime: RuntimeKind, reason: String },
    #[error("{runtime}: no free subnet in moat's pool {pool} for {network}")]
    AddressSpaceExhausted {
        runtime: RuntimeKind,
        network: String,
        /// The pool as the user configured it, e.g. `10.213.0.0/16 (/28 each)`.
        pool: String,
    },
    #[error("{runtime}: {op} failed: {message}")]
    Other {
        runtime: RuntimeKind,
        op: String,
        message: String,
    },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, RuntimeError::Timeout { .. })
    }

    /// Moat's subnet pool (or the runtime's address space) has no room for
    /// another network.
    pub fn is_address_space_exhausted(&self) -> bool {
        matches!(self, RuntimeError::AddressSpaceExhausted { .. })
    }
}
