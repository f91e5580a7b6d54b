//! moat's TLS-intercepting proxy: per-run token authentication, CONNECT +
//! TLS termination with leaves from the moat CA, credential injection,
//! network policy, and a per-run request trace (design: proxy.md).
//!
//! The proxy knows nothing about containers: the daemon builds a
//! [`CertificateAuthority`] and a [`ProxyHandle`], serves listeners with
//! [`ProxyHandle::serve`], and registers each run with its token, policy,
//! injections and trace path.

mod body;
mod ca;
mod config;
mod error;
mod forward;
mod injection;
mod policy;
mod proxy;
mod registry;
mod resolve;
mod tls;
mod token;
mod trace;
mod tunnel;
mod upgrade;
mod upstream;

pub use ca::CertificateAuthority;
pub use config::{ProxyConfig, ProxyTimeouts};
pub use error::{CaError, ProxyError};
pub use injection::InjectionRule;
pub use policy::{HostRule, NetworkPolicy, PolicyMode};
pub use proxy::ProxyHandle;
pub use registry::{RunRegistration, RunTraceSummary};
pub use token::ProxyToken;
pub use trace::TraceRecord;
