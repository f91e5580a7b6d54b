//! A real pseudo-terminal for the interactive tests: a tmux server of the
//! test's own (its own socket), one pane running a plain shell with the
//! test's MOAT_HOME; keys are typed with `send-keys`, the screen is read
//! with `capture-pane`, the pane's modes with `display -p`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{Home, text, unique};

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A pane of `cols`×`rows` running `bash` (prompt `host$ `) in the
    /// home's workspace, with `moat` on PATH's front. `None` (skipping)
    /// without tmux outside CI.
    pub fn new(home: &Home, cols: u16, rows: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "tmux is required in CI (scripts/setup.sh installs it)"
            );
            eprintln!("skipping: no tmux (run scripts/setup.sh)");
            return None;
        }
        let socket = format!("moat-test-{}-{}", std::process::id(), unique());
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_moat"))
            .parent()
            .unwrap()
            .display()
            .to_string();
        let shell = format!(
            "env -i HOME=/root TERM=xterm-256color PATH={bin}:/usr/bin:/bin MOAT_HOME={} MOAT_BASE_IMAGE={} \
             MOAT_KEYRING_BACKEND=file NO_COLOR=1 PS1='host$ ' bash --norc --noprofile",
            home.home().display(),
            super::support::IMAGE,
        );
        let tmux = Tmux { socket };
        let ws = home.root.join("ws");
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "-c",
            &ws.display().to_string(),
            &shell,
        ]);
        tmux.wait_for("host$", Duration::from_secs(5));
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Types `line` and Enter.
    pub fn line(&self, line: &str) {
        self.run(&["send-keys", "-t", "t", "-l", line]);
        self.run(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Sends keys by tmux name (`C-c`, `C-_`) or literally one by one.
    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", "t", key]);
        }
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// `(alternate_on, cursor_flag, mouse_any_flag)` of the pane.
    pub fn modes(&self) -> String {
        self.run(&[
            "display",
            "-p",
            "-t",
            "t",
            "#{alternate_on} #{cursor_flag} #{mouse_any_flag}",
        ])
        .trim()
        .to_string()
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// Pid of the shell in the pane.
    pub fn shell_pid(&self) -> u32 {
        self.run(&["display", "-p", "-t", "t", "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The shell in the pane is back and echoes what is typed: the terminal
    /// was restored (cooked mode, main screen, cursor shown, no mouse).
    pub fn assert_restored(&self) {
        let marker = format!("restored-{}", unique());
        self.line(&format!("echo {marker}-$((40+2))"));
        self.wait_for(&format!("{marker}-42"), Duration::from_secs(10));
        let screen = self.screen();
        assert!(
            screen.contains(&format!("echo {marker}-$((40+2))")),
            "typing does not echo:\n{screen}"
        );
        assert_eq!(self.modes(), "0 1 0", "alternate_on cursor_flag mouse_any_flag");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}
