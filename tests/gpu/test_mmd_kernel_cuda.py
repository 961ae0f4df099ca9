"""The fused Triton MMD kernel on a real CUDA device against the PyTorch reference (odd sizes, two dtypes),
and the public function dispatching to it. Skipped, with the reason, where there is no CUDA or no Triton."""

from __future__ import annotations

import pytest
import torch

from refit.kernels import mmd2_permutations, mmd2_permutations_reference, mmd2_permutations_triton

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch here)"
    ),
]


@pytest.fixture(autouse=True)
def _triton():
    pytest.importorskip("triton", reason="triton is not installed (pip install refit-ml[gpu])")


@pytest.mark.parametrize(
    "n,d,b,dtype",
    [
        (37, 13, 5, torch.float32),
        (257, 384, 101, torch.float32),
        (45, 29, 7, torch.bfloat16),
        (1000, 384, 500, torch.float16),
    ],
)
def test_cuda_kernel_matches_the_reference(n, d, b, dtype):
    torch.manual_seed(n)
    z = torch.randn(n, d, device="cuda").to(dtype)
    w = torch.randn(n, b, device="cuda")
    got = mmd2_permutations_triton(z, w, 1.7)
    want = mmd2_permutations_reference(z.cpu(), w.cpu(), 1.7)
    assert got.is_cuda and got.shape == (b,)
    scale = max(1.0, want.abs().max().item())
    assert (got.cpu() - want).abs().max().item() <= 1e-4 * scale


def test_public_function_uses_the_kernel_on_cuda():
    torch.manual_seed(0)
    z, w = torch.randn(300, 64, device="cuda"), torch.randn(300, 50, device="cuda")
    torch.testing.assert_close(mmd2_permutations(z, w, 2.0), mmd2_permutations_triton(z, w, 2.0))
