//! The user's terminal while an interactive run has it (issue 12): raw mode
//! in, and out again on every exit path — the guard's drop (normal exit,
//! error, detach, a signal turned into a return, the daemon's connection
//! closing) and a panic hook — with every mode a program may have left on
//! turned off: alternate screen, hidden cursor, mouse reporting, bracketed
//! paste, kitty keyboard flags, application keys, colours.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use rustix::termios::{self, OptionalActions, Termios};

use moat_core::TerminalSize;

/// Turns off what a program may have turned on. Kitty keyboard flags are
/// popped on the screen they were pushed on (alternate, then main).
const RESET_MODES: &[u8] = b"\x1b[<99u\
\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l\
\x1b[?2004l\x1b[?1l\x1b>\x1b[0m\x1b[?25h";
const LEAVE_ALTERNATE: &[u8] = b"\x1b[?1049l";

/// The termios to put back, shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Raw mode on stdin while alive.
pub struct RawTerminal {
    /// Tracks the program's output, to know which screen it left us on.
    screen: vt100::Parser,
}

impl RawTerminal {
    /// Puts the terminal on stdin in raw mode (`None` when stdin is not a
    /// terminal) and installs the panic hook that restores it.
    pub fn enter(size: TerminalSize) -> std::io::Result<Option<RawTerminal>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(&stdin)?;
        let mut raw = original.clone();
        raw.make_raw();
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(original);
        install_panic_hook();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        let rows = std::num::NonZeroU16::new(size.rows).unwrap_or(vt100::Parser::DEFAULT_ROWS);
        let cols = std::num::NonZeroU16::new(size.cols).unwrap_or(vt100::Parser::DEFAULT_COLS);
        Ok(Some(RawTerminal {
            screen: vt100::Parser::new(rows, cols, 0),
        }))
    }

    /// Notes output the program drew (to restore the right screen).
    pub fn saw(&mut self, output: &[u8]) {
        self.screen.process(output);
    }

    pub fn resized(&mut self, size: TerminalSize) {
        if let (Some(rows), Some(cols)) = (
            std::num::NonZeroU16::new(size.rows),
            std::num::NonZeroU16::new(size.cols),
        ) {
            self.screen.screen_mut().set_size(rows, cols);
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore(self.screen.screen().alternate_screen());
    }
}

/// Puts the terminal back (idempotent: the second call finds nothing saved).
fn restore(on_alternate: bool) {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(saved) = saved else { return };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(RESET_MODES);
    if on_alternate {
        let _ = out.write_all(LEAVE_ALTERNATE);
        let _ = out.write_all(RESET_MODES);
    }
    let _ = out.flush();
    let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &saved);
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Where the program left the screen is unknown here: leave the
        // alternate screen too (harmless on the main one after a reset).
        restore(true);
        previous(info);
    }));
}

/// The size of the terminal on stdout (or stdin), if either is one.
pub fn size() -> Option<TerminalSize> {
    let from = |winsize: rustix::termios::Winsize| {
        (winsize.ws_row > 0 && winsize.ws_col > 0).then_some(TerminalSize {
            rows: winsize.ws_row,
            cols: winsize.ws_col,
        })
    };
    termios::tcgetwinsize(std::io::stdout())
        .ok()
        .and_then(from)
        .or_else(|| termios::tcgetwinsize(std::io::stdin()).ok().and_then(from))
}

/// Draws the escape menu on the bottom row, keeping the cursor where it was.
pub fn draw_menu(rows: u16, prefix: &str) {
    let menu = format!(
        "\x1b7\x1b[{rows};1H\x1b[0;7m moat: d detach · k stop the run · r redraw · {prefix} send {prefix} · other key: back \x1b[0m\x1b[K\x1b8"
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(menu.as_bytes());
    let _ = out.flush();
}

/// Erases the menu's row (on detach nothing repaints it), keeping the
/// cursor where it was.
pub fn clear_menu(rows: u16) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("\x1b7\x1b[{rows};1H\x1b[0m\x1b[2K\x1b8").as_bytes());
    let _ = out.flush();
}

/// A notice on the bottom row (the program's next repaint covers it).
pub fn draw_notice(rows: u16, text: &str) {
    let line = format!("\x1b7\x1b[{rows};1H\x1b[0;7m moat: {text} \x1b[0m\x1b[K\x1b8");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
