//! All of the CLI's output goes through [`Printer`]: data (listings, `--json`,
//! a run's stdout) to stdout; moat's own messages (errors, warnings, hints,
//! progress) to stderr. Colour only on a terminal, never with `NO_COLOR`.
//! `--quiet` silences status lines (never warnings or errors); `--verbose`
//! adds detail lines.

use std::fmt::Display;
use std::io::{self, BufWriter, IsTerminal, Stdout, Write};

use moat_core::env_vars;

/// A terminal colour; rendered only when the stream is a colour terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Red,
    Green,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Red => "1;31",
            Style::Green => "32",
            Style::Yellow => "1;33",
            Style::Cyan => "1;36",
            Style::Dim => "2",
            Style::Bold => "1",
        }
    }
}

/// How much of moat's own output the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `--quiet`: warnings and errors only.
    Quiet,
    #[default]
    Normal,
    /// `--verbose`: detail lines too.
    Verbose,
}

#[derive(Clone, Debug)]
pub struct Printer {
    stdout_color: bool,
    stderr_color: bool,
    verbosity: Verbosity,
}

impl Printer {
    /// Colour where the stream is a terminal and `NO_COLOR` is unset.
    pub fn from_env(verbosity: Verbosity) -> Self {
        let allowed = env_vars::read_os_non_empty(env_vars::NO_COLOR).is_none()
            && env_vars::read_os_non_empty(env_vars::TERM).is_none_or(|t| t != "dumb");
        Printer {
            stdout_color: allowed && io::stdout().is_terminal(),
            stderr_color: allowed && io::stderr().is_terminal(),
            verbosity,
        }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// One line of data on stdout, unbuffered (a run id, a JSON document).
    pub fn data(&self, line: impl Display) -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// A question on stderr, the answer to be typed on the same line.
    pub fn prompt(&self, question: impl Display) {
        let mut err = io::stderr().lock();
        let _ = write!(err, "{question}");
        let _ = err.flush();
    }

    /// Buffered stdout for listings; flush it when done (errors such as a
    /// closed pipe surface there).
    pub fn stdout(&self) -> BufWriter<Stdout> {
        BufWriter::new(io::stdout())
    }

    /// `text` in `style` when stdout shows colour.
    pub fn paint_stdout(&self, style: Style, text: &str) -> String {
        paint(self.stdout_color, style, text)
    }

    /// A line of moat's own output on stderr (silent with `--quiet`).
    pub fn status(&self, message: impl Display) {
        if self.verbosity > Verbosity::Quiet {
            let _ = writeln!(io::stderr(), "{message}");
        }
    }

    /// A stderr line the user asked for by a flag (`--timings`): shown even
    /// with `--quiet`.
    pub fn requested(&self, message: impl Display) {
        let _ = writeln!(io::stderr(), "{message}");
    }

    /// Progress of a slow step: a spinner with the latest line on a
    /// terminal, plain status lines otherwise (and nothing with `--quiet`).
    pub fn progress(&self) -> Progress {
        let bar = (self.verbosity > Verbosity::Quiet && io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            printer: self.clone(),
        }
    }

    /// A detail line on stderr, shown only with `--verbose`.
    pub fn detail(&self, message: impl Display) {
        if self.verbosity == Verbosity::Verbose {
            let _ = writeln!(io::stderr(), "{message}");
        }
    }

    pub fn warning(&self, message: impl Display) {
        self.labelled("warning", Style::Yellow, &message.to_string());
    }

    pub fn error(&self, message: impl Display) {
        self.labelled("error", Style::Red, &message.to_string());
    }

    pub fn hint(&self, message: impl Display) {
        self.labelled("hint", Style::Cyan, &message.to_string());
    }

    /// `label: line` for every line of `message`, so multi-line errors
    /// (one config problem per line) stay greppable.
    fn labelled(&self, label: &str, style: Style, message: &str) {
        let label = paint(self.stderr_color, style, &format!("{label}:"));
        let mut err = io::stderr().lock();
        for line in message.lines() {
            let _ = writeln!(err, "{label} {line}");
        }
    }
}

/// See [`Printer::progress`]; the spinner is cleared when dropped.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    printer: Printer,
}

impl Progress {
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None => self.printer.status(format!("moat: {line}")),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn paint(enabled: bool, style: Style, text: &str) -> String {
    if enabled {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paints_only_when_enabled() {
        assert_eq!(paint(false, Style::Red, "x"), "x");
        assert_eq!(paint(true, Style::Red, "x"), "\x1b[1;31mx\x1b[0m");
    }
}
