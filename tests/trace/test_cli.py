"""The CLI on what the trace cannot record: a TorchScript model file is refused with one line (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def test_scripted_model_file_is_refused_with_one_line(tmp_path):
    # (case_torchscript_model.py) `--model scripted.pt --trust-checkpoint` ended in a 35-line traceback
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    cli = Path(sys.executable).with_name("camanim")
    p = subprocess.run([str(cli), "run", str(tmp_path / "x.png"), "--model", str(tmp_path / "scripted.pt"),
                        "--trust-checkpoint", "--no-video", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and "TorchScript" in lines[0] and "pass the nn.Module" in lines[0]
    assert not (tmp_path / "out").exists()
