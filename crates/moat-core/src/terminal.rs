//! A terminal's size, shared by the run spec the CLI sends, the terminal
//! protocol and the container spec a runtime receives (issue 12).

use serde::{Deserialize, Serialize};

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

impl TerminalSize {
    /// The size of a terminal whose client did not say.
    pub const DEFAULT: TerminalSize = TerminalSize { rows: 24, cols: 80 };
}
