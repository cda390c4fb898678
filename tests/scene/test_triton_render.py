"""render.fuse='triton' (scene/triton_render.py): the same render and gradients as the dense path, checked in
Triton's interpreter on the CPU (a subprocess with TRITON_INTERPRET=1, since Triton reads it when the kernels are
defined); elsewhere on the CPU fuse 'triton' and the default 'auto' take the dense path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sjc_dist.config import RunConfig
from sjc_dist.configtools import from_dict
from sjc_dist.scene.render import use_triton

pytest.importorskip("triton")
CHECKS = Path(__file__).with_name("triton_checks.py")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["none_c4", "tanh_c3", "no_weight_grad"])
def test_triton_render_equals_dense_forward_and_backward(interpreted, case):
    got = interpreted[case]
    assert got.pop("shapes_equal")
    for name, rel in got.items():  # fp32, different summation orders: agreement to ~1e-6 of the largest value
        assert rel < 1e-5, (case, name, rel)


def test_triton_takes_the_dense_path_on_a_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not use_triton("triton", torch.device("cpu"))
    assert use_triton("triton", torch.device("cuda")) and use_triton("auto", torch.device("cuda"))
    assert not use_triton("none", torch.device("cuda")) and not use_triton("compile", torch.device("cuda"))


def test_config_accepts_fuse_triton():
    cfg = from_dict(RunConfig, {"render": {"fuse": "triton"}})
    assert cfg.render.fuse == "triton"


def test_auto_is_the_plain_render_on_a_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert from_dict(RunConfig, {}).render.fuse == "auto"
    assert not use_triton("auto", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter serves an explicit 'triton' only
    assert not use_triton("auto", torch.device("cpu")) and use_triton("triton", torch.device("cpu"))
