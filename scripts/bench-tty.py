#!/usr/bin/env python3
"""Keystroke-to-echo latency of an interactive run, side by side with
`docker run -it` (issue 12). Each command runs `cat` in a container with a
TTY, inside a pseudo-terminal made here; one byte is typed at a time and the
time until the container's TTY echoes it back is measured, 200 keystrokes
(KEYS) per command after a warm-up. Prints p50/p90/max in milliseconds.

    scripts/bench-tty.py                 # builds moat (release) first
    MOAT_BIN=target/debug/moat scripts/bench-tty.py
"""
import json
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

IMAGE = os.environ.get("IMAGE", "moat-base:bookworm")
KEYS = int(os.environ.get("KEYS", "200"))
WARMUP = 20
PROGRAM = ["sh", "-c", "echo RE''ADY; exec cat"]
DOCKER_NAME = f"moat-bench-tty-{os.getpid()}"


def read_until(fd, wanted, timeout):
    deadline = time.monotonic() + timeout
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{wanted!r} not echoed; saw {seen[-200:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 65536)
    return seen


def measure(argv, env):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    try:
        # Typed before the program runs, keys would be echoed locally.
        read_until(fd, b"READY", 60)
        samples = []
        for i in range(WARMUP + KEYS):
            key = bytes([ord("a") + i % 26])
            start = time.perf_counter()
            os.write(fd, key)
            read_until(fd, key, 5)
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        os.write(fd, b"\x04\x04")
        time.sleep(0.5)
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def report(name, samples):
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p90 = samples[int(len(samples) * 0.9) - 1]
    print(f"{name:<16} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms   max {samples[-1]:6.2f} ms   ({len(samples)} keys)")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    moat = os.environ.get("MOAT_BIN")
    if not moat:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "moat"], cwd=root, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
        moat = os.path.join(target, "release", "moat")
    home = tempfile.mkdtemp(prefix="moat-bench-tty.")
    workspace = tempfile.mkdtemp(prefix="moat-bench-ws.")
    env = dict(os.environ, MOAT_HOME=home, TERM="xterm-256color")
    os.chdir(workspace)
    try:
        report("moat run -it", measure([moat, "run", "-it", "--image", IMAGE, "--"] + PROGRAM, env))
        report("docker run -it", measure(["docker", "run", "-it", "--rm", "--name", DOCKER_NAME, IMAGE] + PROGRAM, env))
    finally:
        # Killed clients leave their runs going: stop them, then the daemon.
        runs = subprocess.run([moat, "list", "--json"], env=env, capture_output=True, text=True).stdout
        for run in json.loads(runs or "[]"):
            if run.get("state") == "running":
                subprocess.run([moat, "stop", run["id"]], env=env, capture_output=True)
        subprocess.run(["docker", "rm", "-f", DOCKER_NAME], capture_output=True)
        subprocess.run([moat, "daemon", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
