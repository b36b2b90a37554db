"""Stopping ``camanim run``: SIGTERM (kill, timeout, docker stop, schedulers) ends a run as Ctrl-C does,
at every stage (exit 143, no temporary folder left, an earlier run kept, encoders stopped); what a
hard kill leaves is removed by the next run to that folder.

Real ``camanim`` processes get real signals. Each is held at its stage by the CLI's documented test
hook (``CAMANIM_TEST_PAUSE_AT``, see ``camanim.cli.PAUSE_AT``): it prints a line and waits at the
first progress report of that stage, so the signal arrives at that very stage.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camanim.cli import PAUSE_AT, main

CLI = Path(sys.executable).with_name("camanim")
RUN = ["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--frame-width", "64", "--quiet"]
#: few layers; all of resnet18's 70 are more than one chunk of frames (64), so the encoders still wait
#: for frames when the first chunk's progress is reported
FEW, MORE_THAN_A_CHUNK = ["--layers", "layer1*"], ["--layers", "all"]


def _start(out: Path, stage: str, layers: list[str] = FEW) -> subprocess.Popen:
    env = {**os.environ, PAUSE_AT: stage, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([str(CLI), *RUN, *layers, "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_paused(p: subprocess.Popen, timeout: float = 120) -> list[str]:
    """stderr lines up to the hook's 'paused at' line."""
    lines: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(p.stderr, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=1):
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line.strip())
            if "test hook: paused at" in line:
                return lines
    p.kill()
    raise AssertionError(f"the run never reached its stage: {lines}")


def _ffmpeg_children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[1]) == pid and "ffmpeg" in comm:
                kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _previous_run(out: Path) -> None:
    out.mkdir()
    (out / "manifest.json").write_text('{"earlier": true, "versions": {"camanim": "0.1.0"}}')


def test_sigterm_at_each_stage_ends_like_ctrl_c_and_leaves_nothing(tmp_path):
    cases = [("cams", signal.SIGTERM, 143), ("frames", signal.SIGTERM, 143), ("encode", signal.SIGTERM, 143),
             ("report", signal.SIGTERM, 143), ("frames", signal.SIGINT, 130)]
    outs = [tmp_path / f"out_{stage}_{sig.name}" for stage, sig, _ in cases]
    for out in outs[::2]:
        _previous_run(out)  # a run there before: it stays as it was
    # side by side, so the suite stays fast
    procs = [_start(out, stage, MORE_THAN_A_CHUNK if stage == "frames" else FEW) for out, (stage, _, _) in zip(outs, cases)]
    try:
        for p, out, (stage, sig, code) in zip(procs, outs, cases):
            lines = _wait_paused(p)
            assert lines[-1].startswith(f"camanim: test hook: paused at {stage}")
            staged = [n for n in os.listdir(tmp_path) if n.startswith(f".{out.name}.tmp-{p.pid}-")]
            assert len(staged) == (0 if stage == "cams" else 1), staged  # the save had begun
            encoders = _ffmpeg_children(p.pid)
            deadline = time.monotonic() + 20
            while stage == "frames" and not encoders and time.monotonic() < deadline:
                time.sleep(0.2)  # they start on their first frame, on their own threads
                encoders = _ffmpeg_children(p.pid)
            if stage == "frames":
                assert encoders, "the local video's encoder waits for the frames after the first chunk"
            p.send_signal(sig)
            assert p.wait(timeout=60) == code, (stage, sig)
            err = [ln.strip() for ln in p.stderr.read().splitlines() if ln.strip()]
            assert err == ["camanim: terminated (SIGTERM)" if sig == signal.SIGTERM else "camanim: interrupted"]
            assert [n for n in os.listdir(tmp_path) if n.startswith(f".{out.name}.")] == [], (stage, sig)
            if out in outs[::2]:
                assert sorted(os.listdir(out)) == ["manifest.json"] and "earlier" in (out / "manifest.json").read_text()
            else:
                assert not out.exists()
            deadline = time.monotonic() + 10
            while any(_running(k) for k in encoders) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(_running(k) for k in encoders), f"ffmpeg left running after {sig.name} at {stage}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_hard_kill_leaves_a_temp_folder_the_next_run_to_that_folder_removes(tmp_path, capsys):
    out = tmp_path / "again"
    p = _start(out, "frames")
    try:
        _wait_paused(p)
        p.kill()  # SIGKILL: nothing can clean up
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    stale = [n for n in os.listdir(tmp_path) if n.startswith(".again.tmp-")]
    assert len(stale) == 1 and stale[0].startswith(f".again.tmp-{p.pid}-")
    neighbour = tmp_path / f".again2.tmp-{p.pid}-abc"  # another folder's: not this run's to touch
    neighbour.mkdir()
    assert main([*RUN, *FEW, "--no-video", "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / stale[0]).is_dir(), "a run to another folder leaves it"
    assert main([*RUN, *FEW, "--no-video", "--out", str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == [neighbour.name, "again", "elsewhere"]
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_handler_is_only_set_while_a_command_runs(sig):
    before = signal.getsignal(sig)
    assert main(["methods"]) == 0
    assert signal.getsignal(sig) is before
