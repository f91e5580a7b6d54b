//! moat's TLS-intercepting proxy: per-run token authentication, CONNECT +
//! TLS termination with leaves from the moat CA, credential injection,
//! network policy, and a per-run request trace (design: proxy.md).
//!
//! The proxy knows nothing about containers: the daemon builds a
//! [`CertificateAuthority`] and a [`ProxyHandle`], serves listeners with
//! [`ProxyHandle::serve`], and registers each run with its token, policy,
//! injections and trace path.
//!
//! ```no_run
//! use std::sync::Arc;
//! use moat_proxy::{CertificateAuthority, NetworkPolicy, ProxyConfig, ProxyHandle, ProxyToken, RunRegistration};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = Arc::new(CertificateAuthority::load_or_create("/home/u/.moat/ca".as_ref())?);
//! let proxy = ProxyHandle::new(ProxyConfig::default(), ca)?;
//! let listener = tokio::net::TcpListener::bind("172.30.0.1:0").await?;
//! tokio::spawn({
//!     let proxy = proxy.clone();
//!     async move { proxy.serve(listener).await }
//! });
//! let token = ProxyToken::generate(); // the container gets http://moat:<token>@moat-proxy:<port>
//! proxy.register_run(RunRegistration {
//!     run_id: "run-1".into(),
//!     token,
//!     policy: NetworkPolicy::default(),
//!     injections: vec![],
//!     trace_path: "/home/u/.moat/runs/run-1/network.jsonl".into(),
//!     host_ports: vec![],
//!     redact_values: vec![], // the run's `secrets:` values, kept out of its trace
//!     mcp_servers: vec![],   // remote MCP servers relayed at http://moat-proxy:PORT/mcp/<name>
//!     credential_endpoints: vec![], // short-lived credentials at http://moat-proxy:PORT/<name>/credentials
//!     events: None,          // or a sink for denials and injections (the audit log)
//! })?;
//! // ... later
//! let summary = proxy.unregister_run("run-1")?;
//! # let _ = summary;
//! # Ok(())
//! # }
//! ```

mod body;
mod ca;
mod config;
mod credential_endpoint;
mod destination;
mod error;
mod events;
mod forward;
mod injection;
mod limits;
mod path;
mod policy;
mod proxy;
mod registry;
mod relay;
pub mod remote;
mod resolve;
mod router;
mod tls;
mod token;
mod trace;
mod tunnel;
mod upgrade;
mod upstream;

pub use ca::CertificateAuthority;
pub use config::{ProxyConfig, ProxyTimeouts, RunLimits};
pub use credential_endpoint::{CredentialEndpoint, CredentialFuture, CredentialRefusal, CredentialSource};
pub use error::{CaError, ProxyError};
pub use events::{ProxyEvent, ProxyEventSink};
pub use injection::InjectionRule;
pub use policy::{HostRule, NetworkPolicy, PolicyCheck, PolicyMode, rule_matching_path};
pub use proxy::ProxyHandle;
pub use registry::{HOST_SERVICE_NAME, RunRegistration, RunTraceSummary};
pub use relay::{McpRoute, PROXY_HOST_NAME};
pub use resolve::{LookupFuture, NameResolver};
pub use router::{ROUTE_DOMAIN, Router, RunRoutes};
pub use token::ProxyToken;
pub use trace::TraceRecord;
