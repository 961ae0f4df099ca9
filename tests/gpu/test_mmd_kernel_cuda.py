"""The Triton MMD kernel on a real CUDA device against a float64 definition: fp32 and bf16 inputs, odd sizes,
n not a multiple of any block, B = 1 and 2000, d = 1..1024, the three precisions, every autotuner block
shape, the autotuned launch, bitwise repeatability, the public dispatch, and the permutation p-value
unchanged by TF32. Skipped, with the reason, without CUDA or Triton. Not yet run on a GPU."""

from __future__ import annotations

import pytest
import torch

from refit.kernels import mmd2_permutations, mmd2_permutations_triton
from refit.kernels.mmd import _CONFIGS
from tests.gpu.conftest import NO_CUDA

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


@pytest.fixture(autouse=True)
def _triton():
    pytest.importorskip("triton", reason="triton is not installed (pip install refit-ml[gpu])")


def _dense(z: torch.Tensor, w: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """W^T K W per column with the whole kernel matrix in float64 (on the GPU: fast at these sizes)."""
    z, w = z.double(), w.double()
    k = torch.exp(-torch.cdist(z, z).pow(2) / (2 * bandwidth**2))
    return ((k @ w) * w).sum(0)


SIZES = [(37, 13, 5), (257, 384, 101), (1000, 1, 1), (999, 1024, 7), (1501, 384, 2000), (3000, 63, 129)]
PRECISIONS = ["ieee", "tf32x3", "tf32"]


def _launch(z, w, bw, precision, config):
    """The kernel at a fixed block shape; a shape this GPU cannot hold (shared memory, registers) is a skip
    naming it, as the autotuner would skip it, not a wrong result."""
    errors = pytest.importorskip("triton.runtime.errors")
    too_big = tuple(getattr(errors, e) for e in ("OutOfResources", "PTXASError") if hasattr(errors, e))
    try:
        return mmd2_permutations_triton(z, w, bw, precision=precision, config=config)
    except too_big as e:
        pytest.skip(f"block shape {config} does not fit this GPU ({type(e).__name__}): {e}")


@pytest.mark.parametrize("n,d,b", SIZES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_kernel_matches_the_definition(n, d, b, precision):
    # One fixed block shape per case, cycling through the autotuner's table: every shape it may pick is
    # checked for correctness, and the 18 cases compile 18 kernels instead of autotuning (compiling and
    # timing 7 shapes) 18 times, which would take minutes of a short GPU lease. The autotuned path is
    # checked below.
    bn, bb, bd, warps, stages = _CONFIGS[
        (3 * SIZES.index((n, d, b)) + PRECISIONS.index(precision)) % len(_CONFIGS)
    ]
    config = {"BLOCK_N": bn, "BLOCK_B": bb, "BLOCK_D": bd, "num_warps": warps, "num_stages": stages}
    g = torch.Generator(device="cuda").manual_seed(n + d)
    z = torch.randn(n, d, device="cuda", generator=g) + 1.0  # off-centre: the centring is exercised
    w = torch.randn(n, b, device="cuda", generator=g)
    bw = max(1.0, (2.0 * d) ** 0.5)
    got = _launch(z, w, bw, precision, config)
    want = _dense(z, w, bw)
    assert got.is_cuda and got.dtype == torch.float32 and got.shape == (b,)
    assert torch.isfinite(got).all()
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel <= {"ieee": 1e-5, "tf32x3": 5e-5, "tf32": 2e-3}[precision], rel


def test_bf16_inputs_are_upcast_exactly():
    g = torch.Generator(device="cuda").manual_seed(3)
    z = torch.randn(333, 96, device="cuda", generator=g).bfloat16()
    w = torch.randn(333, 17, device="cuda", generator=g)
    got = mmd2_permutations_triton(z, w, 9.0, precision="ieee")
    want = _dense(z.float(), w, 9.0)
    assert ((got.double() - want).norm() / want.norm()).item() <= 1e-5


def test_autotuned_launch_matches_the_definition_at_a_narrow_bandwidth():
    """The autotuned path (what mmd_test runs) at an odd size, and a bandwidth so narrow that K is nearly the
    identity: there the diagonal's cancellation would show if it were not exact."""
    g = torch.Generator(device="cuda").manual_seed(6)
    z, w = (
        torch.randn(777, 1024, device="cuda", generator=g) + 2.0,
        torch.randn(777, 33, device="cuda", generator=g),
    )
    want = _dense(z, w, 1.7)
    for precision in ("tf32x3", "ieee"):
        got = mmd2_permutations_triton(z, w, 1.7, precision=precision)
        assert ((got.double() - want).norm() / want.norm()).item() <= 1e-5, precision


def test_same_bits_on_every_run_and_for_a_fixed_config():
    g = torch.Generator(device="cuda").manual_seed(4)
    z, w = (
        torch.randn(2049, 384, device="cuda", generator=g),
        torch.randn(2049, 300, device="cuda", generator=g),
    )
    first = mmd2_permutations_triton(z, w, 20.0)
    assert all(torch.equal(first, mmd2_permutations_triton(z, w, 20.0)) for _ in range(3))
    fixed = {"BLOCK_N": 64, "BLOCK_B": 128, "BLOCK_D": 64, "num_warps": 4}
    a, b = (
        mmd2_permutations_triton(z, w, 20.0, config=fixed),
        mmd2_permutations_triton(z, w, 20.0, config=fixed),
    )
    assert torch.equal(a, b)
    torch.testing.assert_close(a, first, rtol=1e-4, atol=1e-6)


def test_public_function_uses_the_kernel_on_cuda():
    g = torch.Generator(device="cuda").manual_seed(0)
    z, w = torch.randn(300, 64, device="cuda", generator=g), torch.randn(300, 50, device="cuda", generator=g)
    assert torch.equal(mmd2_permutations(z, w, 2.0), mmd2_permutations_triton(z, w, 2.0))


def test_default_tf32x3_leaves_the_drift_p_value_unchanged():
    """A no-drift window (p lands mid-range, where a reordering of null statistics would show): TF32 in
    the distance part (tf32x3, the default) must give the same p as fp32, and mmd_test that p."""
    from refit.drift import mmd_test
    from refit.drift.mmd import _permutation_weights, median_bandwidth

    g = torch.Generator().manual_seed(5)
    ref, cur = torch.randn(2000, 384, generator=g), torch.randn(300, 384, generator=g)
    bw = median_bandwidth(ref)
    z = torch.cat([ref, cur]).cuda()
    w = _permutation_weights(2000, 300, 500, 0, "cuda")
    p = {}
    for precision in ("ieee", "tf32x3"):
        stats = mmd2_permutations_triton(z, w, bw, precision=precision).cpu()
        p[precision] = (int((stats[1:] >= stats[0]).sum()) + 1) / 501
    assert p["ieee"] == p["tf32x3"]
    assert mmd_test(ref, cur, permutations=500, seed=0, bandwidth=bw).p_value == p["tf32x3"]
