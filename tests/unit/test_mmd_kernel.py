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


def _dense(z: torch.Tensor, w: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The whole kernel matrix in float64: the yardstick at sizes where the loop above is too slow."""
    z, w = z.double(), w.double()
    k = torch.exp(-torch.cdist(z, z).pow(2) / (2 * bandwidth**2))
    return ((k @ w) * w).sum(0)


@pytest.mark.parametrize("n,d,b", [(7, 3, 2), (11, 5, 3), (9, 1, 1)])
def test_reference_matches_the_definition(n, d, b):
    torch.manual_seed(n)
    z, w = torch.randn(n, d), torch.randn(n, b)
    torch.testing.assert_close(
        mmd2_permutations_reference(z, w, 1.3, chunk=4).double(), _naive(z, w, 1.3), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("chunk", [1, 64, 100, 301, 5000])
def test_chunking_and_symmetry_do_not_change_the_result(chunk):
    torch.manual_seed(0)
    z, w = torch.randn(301, 17) * 3 + 5, torch.randn(301, 9)  # off-centre: the centring must not matter
    torch.testing.assert_close(
        mmd2_permutations_reference(z, w, 2.0, chunk=chunk).double(), _dense(z, w, 2.0), rtol=1e-4, atol=1e-4
    )


def test_cpu_dispatch_is_the_reference():
    torch.manual_seed(1)
    z, w = torch.randn(50, 8), torch.randn(50, 4)
    assert torch.equal(mmd2_permutations(z, w, 2.0), mmd2_permutations_reference(z, w, 2.0))


def test_tf32_emulations_round_and_tf32x3_recovers_fp32_accuracy():
    torch.manual_seed(2)
    z, w = torch.randn(200, 384), torch.randn(200, 5)
    exact = _dense(z, w, 20.0)
    err = {
        q: (
            (mmd2_permutations_reference(z, w, 20.0, precision=q).double() - exact).norm() / exact.norm()
        ).item()
        for q in ("ieee", "tf32", "tf32x3")
    }
    assert (
        err["tf32"] > 5 * err["tf32x3"]
    )  # the emulation really drops mantissa bits; the split restores them
    assert err["tf32"] < 1e-3 and err["tf32x3"] < 1e-5 and err["ieee"] < 1e-5, err


def test_unknown_precision_is_refused():
    z, w = torch.randn(5, 2), torch.randn(5, 1)
    with pytest.raises(ValueError, match="tf32x3, tf32, ieee"):
        mmd2_permutations(z, w, 1.0, precision="fp8")


# Odd sizes against the float64 definition, under the interpreter: n not a multiple of the block (16 there),
# B = 1 and B spanning many permutation blocks (300), d = 1 and d = 1024 (64 depth blocks), bf16 inputs,
# every block shape the GPU autotuner may pick (n 70: one partial tile of 128, two of 64, three of 32), and
# two runs giving the same bits (no atomics).
_TRITON_CHECK = textwrap.dedent("""
    import json, torch
    from refit.kernels import mmd2_permutations_triton
    from refit.kernels.mmd import _CONFIGS
    def dense(z, w, bw):
        z, w = z.double(), w.double()
        k = torch.exp(-torch.cdist(z, z).pow(2) / (2 * bw ** 2))
        return ((k @ w) * w).sum(0)
    out = []
    cases = [(37, 13, 5, torch.float32, None), (45, 1, 1, torch.float32, None), (33, 40, 37, torch.float32, None),
             (17, 29, 7, torch.bfloat16, None),
             (50, 20, 20, torch.float32, {"BLOCK_N": 32, "BLOCK_B": 16, "BLOCK_D": 32}),
             (19, 1024, 3, torch.float32, None), (23, 5, 300, torch.float32, None)]
    cases += [(70, 40, 30, torch.float32, {"BLOCK_N": bn, "BLOCK_B": bb, "BLOCK_D": bd})
              for bn, bb, bd, _, _ in _CONFIGS]
    for n, d, b, dtype, config in cases:
        torch.manual_seed(n)
        z, w = (torch.randn(n, d) + 2).to(dtype), torch.randn(n, b)
        got = mmd2_permutations_triton(z, w, 1.7, config=config)
        again = mmd2_permutations_triton(z, w, 1.7, config=config)
        want = dense(z.float(), w, 1.7)
        out.append({"case": [n, d, b, str(dtype), config], "err": (got.double() - want).abs().max().item(),
                    "scale": want.abs().max().item(), "repeatable": bool(torch.equal(got, again)),
                    "shape": list(got.shape)})
    print(json.dumps(out))
""")


@pytest.mark.slow  # a subprocess
def test_triton_kernel_matches_the_definition_under_the_interpreter():
    pytest.importorskip("triton", reason="triton is not installed (pip install refit-ml[gpu])")
    # TRITON_INTERPRET must be set before triton is imported, hence a fresh process.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(cases) == 7 + 7  # the fixed cases and one per autotuner config
    for case in cases:
        assert case["err"] <= 2e-5 * max(1.0, case["scale"]), case
        assert case["repeatable"], case
        assert case["shape"] == [case["case"][2]], case


# Every autotuner block shape compiled for Hopper (sm_90) with Triton's own ptxas, no GPU needed: a shape whose
# shared memory exceeds what one block may have would compile and then never launch there.
_SM90_COMPILE = textwrap.dedent("""
    import json, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import refit.kernels.mmd as kmod
    raw, _ = kmod._build_kernels()
    ptr, i32 = "*fp32", "i32"
    sig = {"z_ptr": ptr, "sq_ptr": ptr, "w_ptr": ptr, "partial_ptr": ptr, "n": i32, "d": i32, "n_perm": i32,
           "neg_gamma_log2e": "fp32", "n_bucket": i32, "d_bucket": i32, "b_bucket": i32,
           **{k: "constexpr" for k in ("PRECISION", "CONTRACT_PRECISION", "BLOCK_N", "BLOCK_B", "BLOCK_D")}}
    out = []
    for bn, bb, bd, warps, stages in kmod._CONFIGS:
        consts = {"PRECISION": "tf32x3", "CONTRACT_PRECISION": "tf32x3", "BLOCK_N": bn, "BLOCK_B": bb, "BLOCK_D": bd}
        k = triton.compile(ASTSource(raw, sig, consts), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": warps, "num_stages": stages})
        out.append({"config": [bn, bb, bd, warps, stages], "shared": k.metadata.shared})
    print(json.dumps(out))
""")


@pytest.mark.slow  # seven Triton compilations (about 15 s)
def test_every_autotune_shape_compiles_for_hopper_within_its_shared_memory():
    pytest.importorskip("triton", reason="triton is not installed (pip install refit-ml[gpu])")
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _SM90_COMPILE], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 and "TypeError" in proc.stderr and "ASTSource" in proc.stderr:
        pytest.skip(
            f"this triton's ahead-of-time compile API differs: {proc.stderr.strip().splitlines()[-1]}"
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shapes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(shapes) == 7
    hopper_block_limit = 227 * 1024  # H100 / H200: 227 KB of shared memory per block (opt-in maximum)
    assert all(0 < s["shared"] <= hopper_block_limit for s in shapes), shapes
