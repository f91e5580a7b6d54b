//! The tamper-evident audit log of a run (`runs/<id>/audit.jsonl`, design in
//! docs/audit.md): the entry format and its unambiguous hash encoding, the
//! chain verifier, the per-`MOAT_HOME` Ed25519 signing key and the signed
//! chain head, and the export bundle. The daemon is the log's only writer;
//! the CLI only reads and verifies.

mod bundle;
mod chain;
mod key;
mod verify;

pub use bundle::{BUNDLE_FORMAT, Bundle, BundleError};
pub use chain::{Entry, canonical_json, genesis_hash};
pub use key::{AuditKey, KeyError, PublicKey, SignedHead, head_message};
pub use verify::{ChainReport, SignatureCheck, Tamper, check_signature, verify_chain};

pub use crate::paths::run_files::AUDIT_SIGNATURE as SIGNATURE_FILE;
