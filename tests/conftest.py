from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A hybrid written the way a user would: conv stages, then attention stages.
HYBRID_YAML = """\
name: my_hybrid
input: {channels: 3, resolution: 64}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
defaults:
  norm: layernorm
  mlp: {type: mlp, ratio: 3, act: gelu}
  downsample: {type: conv, kernel: 2, stride: 2, pre_norm: layernorm}
stages:
  - {depth: 2, width: 32, block: {mixer: {type: sepconv, kernel: 5}}}
  - {depth: 2, width: 48, block: {type: convnext, kernel: 5}}
  - {depth: 2, width: 64, pattern: [{mixer: {type: attention, heads: 4, window: 2}}, {mixer: {type: attention, head_dim: 16}}]}
  - {depth: 1, width: 96, block: {mixer: {type: attention, heads: 3}, layer_scale: 1.0e-5}}
head: {type: mlp_head, ratio: 2}
"""


@pytest.fixture
def hybrid_file(tmp_path: Path) -> Path:
    path = tmp_path / "hybrid.yaml"
    path.write_text(HYBRID_YAML)
    return path


def run_nas(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a real subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
