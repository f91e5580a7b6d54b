//! Security events of a run that the proxy reports to whoever registered it
//! (the daemon's audit log, issue 16): each policy denial and each
//! credential injection, and in shadow mode each request strict would have
//! refused. The proxy writes no audit file itself; values are
//! redacted as in the trace, and an injection names its grant, never the
//! credential.

use std::sync::Arc;

/// One event on a run's data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A request or CONNECT refused by the network policy.
    Denied {
        method: String,
        host: String,
        /// Path and query, redacted as in the trace.
        path: String,
        /// The rule (or absence of one) that refused it.
        rule: String,
    },
    /// Shadow mode: a request allowed that `strict` with the same rules
    /// would have refused under `rule`.
    ShadowDenied {
        method: String,
        host: String,
        /// Path and query, redacted as in the trace.
        path: String,
        rule: String,
    },
    /// A grant's credential was added to a request to `host`.
    Injected { grant: String, host: String },
}

/// Receives a run's events; called on the data path, so it must not block.
pub type ProxyEventSink = Arc<dyn Fn(ProxyEvent) + Send + Sync>;
