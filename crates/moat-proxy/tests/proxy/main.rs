//! Integration tests of the proxy over loopback: a local HTTPS upstream with
//! its own CA, public-looking names pointed at it through resolve overrides.

mod auth;
mod credentials;
mod curl;
mod destination;
mod fairness;
mod injection;
mod limits;
mod mcp;
mod plain;
mod policy;
mod streaming;
mod support;
mod trace;
mod upgrade;
