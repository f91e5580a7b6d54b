//! Interactive runs on the CLI's side (issue 12, docs/terminal.md): the
//! user's terminal in raw mode and back, the escape prefix and its menu,
//! and the session that carries keystrokes and output over the daemon's
//! terminal connection.

pub mod escape;
pub mod raw;
pub mod session;

pub use session::{SessionOptions, run};
