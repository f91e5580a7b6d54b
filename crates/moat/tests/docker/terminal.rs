//! Interactive runs through a real pseudo-terminal (issue 12): typed input,
//! the terminal's size and its changes, Ctrl-C, detach and a repainted
//! re-attach, the outer terminal restored after every exit path, stdin
//! streamed without a TTY, `exec -it`.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::support::{Home, kill9, text};
use super::tmux::Tmux;

const START: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_secs(10);

/// Writes `script` into the workspace (the container's /workspace), so the
/// marks it prints do not appear in the command line typed in the pane.
fn script(home: &Home, name: &str, script: &str) -> String {
    std::fs::write(home.root.join("ws").join(name), script).unwrap();
    format!("/workspace/{name}")
}

/// Stops every live run of the home when the test ends, passed or failed
/// (detached runs and runs whose client was killed outlive the client).
struct StopLiveRuns<'a>(&'a Home);

impl Drop for StopLiveRuns<'_> {
    fn drop(&mut self) {
        let Ok(out) = self.0.moat().args(["list", "--json"]).output() else {
            return;
        };
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for run in runs.iter().filter(|run| run["state"] == "running") {
            if let Some(id) = run["id"].as_str() {
                let _ = self.0.moat().args(["stop", id]).output();
            }
        }
    }
}

/// The CLI process in the pane (the shell's child).
fn cli_pid(tmux: &Tmux) -> u32 {
    let shell = tmux.shell_pid();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .expect("moat is running in the pane")
        .parse()
        .unwrap()
}

#[test]
fn typed_input_reaches_the_program_and_its_terminal_has_the_clients_size() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let Some(tmux) = Tmux::new(&home, 100, 30) else { return };
    let program = script(
        &home,
        "size.sh",
        "read x; echo got:$x; stty size; read y; stty size; exit 3\n",
    );
    tmux.line(&format!("moat run -it -- sh {program}; echo rc=$?"));
    std::thread::sleep(Duration::from_secs(1));
    tmux.wait_for("$", START);
    tmux.line("hello");
    tmux.wait_for("got:hello", START);
    tmux.wait_for("30 100", SHORT);
    tmux.resize(120, 40);
    std::thread::sleep(Duration::from_millis(500));
    tmux.line("");
    tmux.wait_for("40 120", SHORT);
    tmux.wait_for("rc=3", SHORT);
    tmux.assert_restored();
}

#[test]
fn ctrl_c_reaches_the_program_and_moat_exits_with_its_code() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let Some(tmux) = Tmux::new(&home, 100, 30) else { return };
    let program = script(
        &home,
        "trap.sh",
        "trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done\n",
    );
    tmux.line(&format!("moat run -it -- sh {program}; echo rc=$?"));
    tmux.wait_for("ready", START);
    tmux.keys(&["C-c"]);
    tmux.wait_for("got-INT", SHORT);
    tmux.wait_for("rc=5", SHORT);
    tmux.assert_restored();
}

/// A full-screen program: the alternate screen, a mark, the cursor parked
/// at row 10 column 11, and a counter (a line of the log) every 200 ms.
const FULL_SCREEN: &str = "printf '\\033[?1049h\\033[?1000h\\033[HFULLSCREEN-MARK\\033[10;5Hcursor'
i=0; while :; do i=$((i+1)); printf '\\033[2;1Htick%s\\r\\n\\033[10;11H' $i; sleep 0.2; done
";

#[test]
fn detach_leaves_the_run_going_and_attach_repaints_its_full_screen() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let Some(tmux) = Tmux::new(&home, 100, 30) else { return };
    let program = script(&home, "fs.sh", FULL_SCREEN);
    tmux.line(&format!("moat run -it --name fs -- sh {program}; echo rc=$?"));
    tmux.wait_for("FULLSCREEN-MARK", START);
    assert_eq!(tmux.modes(), "1 1 1", "the program's modes reach the outer terminal");
    tmux.keys(&["C-_"]);
    tmux.wait_for("d detach", SHORT);
    tmux.keys(&["d"]);
    tmux.wait_for("detached", SHORT);
    tmux.assert_restored();

    // The run goes on: its output keeps arriving in logs.jsonl.
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let logs = home.home().join("runs").join(&run_id).join("logs.jsonl");
    let size = || std::fs::metadata(&logs).map_or(0, |m| m.len());
    let before = size();
    let deadline = Instant::now() + SHORT;
    while size() <= before {
        assert!(
            Instant::now() < deadline,
            "no output reached logs.jsonl after the detach"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = std::fs::read_to_string(&logs).unwrap();
    assert!(records.contains("\"stream\":\"tty\""), "{records}");

    tmux.line("clear; moat attach fs; echo rc=$?");
    let screen = tmux.wait_for("FULLSCREEN-MARK", SHORT);
    assert!(screen.lines().nth(1).unwrap_or("").starts_with("tick"), "{screen}");
    assert!(!screen.contains("host$"), "the repaint covers the screen:\n{screen}");
    assert!(
        screen.lines().nth(9).unwrap_or("").starts_with("    cursor"),
        "{screen}"
    );
    assert_eq!(tmux.modes(), "1 1 1", "alternate screen and mouse mode are repainted");
    // The escape menu stops the run; moat exits with its code (killed by
    // the stop: 137 or 143).
    tmux.keys(&["C-_"]);
    tmux.wait_for("k stop", SHORT);
    tmux.keys(&["k"]);
    let screen = tmux.wait_for("rc=", Duration::from_secs(30));
    assert!(screen.contains("rc=137") || screen.contains("rc=143"), "{screen}");
    tmux.assert_restored();
}

/// A program that turns on every mode moat must turn off again.
const MODES_ON: &str = "printf '\\033[?1049h\\033[?1000h\\033[?2004h\\033[>1u\\033[?25lMODES-ON'; sleep 300\n";

#[test]
fn the_terminal_is_restored_when_the_cli_gets_sigterm() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let Some(tmux) = Tmux::new(&home, 100, 30) else { return };
    let program = script(&home, "modes.sh", MODES_ON);
    tmux.line(&format!("moat run -it -- sh {program}; echo rc=$?"));
    tmux.wait_for("MODES-ON", START);
    assert_eq!(tmux.modes(), "1 0 1");
    let cli = cli_pid(&tmux);
    std::process::Command::new("kill")
        .args(["-TERM", &cli.to_string()])
        .status()
        .unwrap();
    tmux.wait_for("rc=143", SHORT);
    tmux.assert_restored();
    // The run goes on without its client.
    assert_eq!(home.only_run()["state"], "running");
}

#[test]
fn the_terminal_is_restored_when_the_daemon_is_killed_mid_session() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let Some(tmux) = Tmux::new(&home, 100, 30) else { return };
    let program = script(&home, "modes.sh", MODES_ON);
    tmux.line(&format!("moat run -it -- sh {program}; echo rc=$?"));
    tmux.wait_for("MODES-ON", START);
    kill9(home.daemon_pid().expect("a daemon runs"));
    let screen = tmux.wait_for("rc=1", SHORT);
    assert!(screen.contains("lost the connection to the moat daemon"), "{screen}");
    tmux.assert_restored();
}

#[test]
fn exec_it_gives_a_shell_in_a_live_run() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let out = home.run(&["run", "-d", "--name", "svc", "--", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let Some(tmux) = Tmux::new(&home, 90, 25) else { return };
    tmux.line("moat exec -it svc -- bash --norc; echo rc=$?");
    tmux.line("stty size; echo $((6*7))-answer; exit 9");
    tmux.wait_for("25 90", START);
    tmux.wait_for("42-answer", SHORT);
    tmux.wait_for("rc=9", SHORT);
    tmux.assert_restored();
}

#[test]
fn stdin_without_a_tty_streams_10_mb_intact_and_eof_ends_the_program() {
    let Some(home) = Home::new() else { return };
    let _stop = StopLiveRuns(&home);
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut child = home
        .moat()
        .args(["run", "-i", "--", "sh", "-c", "cat; echo END >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
        // Dropping stdin is the EOF that must end `cat`.
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len(), "stderr: {}", text(&out.stderr));
    assert!(out.stdout == data, "the output differs from the input");
    assert!(text(&out.stderr).contains("END"));
}
