"""The MMD permutation kernel: Triton (interpreted on CPU) vs the PyTorch reference vs the definition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from refit.kernels import mmd2_permutations, mmd2_permutations_reference


def _naive(z: torch.Tensor, w: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The definition, one pair and one permutation at a time."""
    n, b = w.shape
    out = torch.zeros(b, dtype=torch.float64)
    for p in range(b):
        for i in range(n):
            for j in range(n):
                k = torch.exp(-((z[i] - z[j]) ** 2).sum().double() / (2 * bandwidth**2))
                out[p] += w[i, p].double() * w[j, p].double() * k
    return out


@pytest.mark.parametrize("n,d,b", [(7, 3, 2), (11, 5, 3)])
def test_reference_matches_the_definition(n, d, b):
    torch.manual_seed(n)
    z, w = torch.randn(n, d), torch.randn(n, b)
    torch.testing.assert_close(
        mmd2_permutations_reference(z, w, 1.3, chunk=4).double(), _naive(z, w, 1.3), rtol=1e-5, atol=1e-5
    )


def test_chunking_does_not_change_the_result():
    torch.manual_seed(0)
    z, w = torch.randn(301, 17), torch.randn(301, 9)
    torch.testing.assert_close(
        mmd2_permutations_reference(z, w, 2.0, chunk=64), mmd2_permutations_reference(z, w, 2.0, chunk=1000)
    )
    assert torch.equal(mmd2_permutations(z, w, 2.0), mmd2_permutations_reference(z, w, 2.0))  # CPU dispatch


_TRITON_CHECK = textwrap.dedent("""
    import json, torch
    from refit.kernels import mmd2_permutations_reference, mmd2_permutations_triton
    out = []
    for n, d, b, dtype in [(37, 13, 5, torch.float32), (70, 40, 33, torch.float32), (45, 29, 7, torch.bfloat16),
                           (33, 64, 40, torch.bfloat16)]:
        torch.manual_seed(n)
        z, w = torch.randn(n, d).to(dtype), torch.randn(n, b)
        got, want = mmd2_permutations_triton(z, w, 1.7), mmd2_permutations_reference(z, w, 1.7)
        out.append({"case": [n, d, b, str(dtype)], "err": (got - want).abs().max().item(),
                    "scale": want.abs().max().item()})
    print(json.dumps(out))
""")


@pytest.mark.slow  # a subprocess
def test_triton_kernel_matches_reference_under_the_interpreter():
    pytest.importorskip("triton", reason="triton is not installed (pip install refit-ml[gpu])")
    # TRITON_INTERPRET must be set before triton is imported, hence a fresh process.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert case["err"] <= 1e-4 * max(1.0, case["scale"]), case
