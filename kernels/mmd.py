"""MMD^2 of a pooled sample under many permutations at once, without ever storing the n x n kernel matrix.

For pooled rows z_1..z_n and a weight matrix W (n x B) whose column b holds +1/n_x for the rows permutation b
assigns to X and -1/n_y for those it assigns to Y, the biased (V-statistic) MMD^2 of permutation b is

    MMD2[b] = W[:, b]^T K W[:, b],   K[i, j] = exp(-||z_i - z_j||^2 / (2 bandwidth^2)).

The biased statistic is used because the permutation test only needs the same statistic for the observed
split and for the permuted ones; it keeps every permutation one contraction with K.

Both paths use the symmetry of K: for row tiles I and column tiles J >= I,
MMD2 = sum_I W_I . (K_II W_I + 2 sum_{J > I} K_IJ W_J), so each unordered pair of tiles is built once,
and Z is centred first (distances do not change; the inner products get smaller, so less cancels in
||a||^2 + ||b||^2 - 2 a.b). The diagonal distance is set to exactly 0: there that formula cancels
completely, and its rounding noise (about 1e-7 |z|^2) would put K_ii visibly below 1 at a narrow bandwidth.

- `_mmd2_kernel` (Triton): a program owns one row tile and a large block of permutations (BLOCK_B, up to
  256: K is rebuilt ceil(B / BLOCK_B) times, not B / 32), builds each kernel tile once for that block from
  Z (the distance part on TF32 tensor cores, tf32x3 by default, `precision`), contracts it with W at
  fp32 accuracy, and writes its per-permutation partial sum to its own row of a buffer. The buffer is
  summed in a fixed order afterwards, so results are bitwise repeatable (no atomics) for a given block
  configuration. Block sizes are autotuned per (n, d, B) bucket. Memory: O(n d + n B).
- `mmd2_permutations_reference` (PyTorch): the same contraction, one row chunk against all columns j >= i
  at a time (one GEMM with the squared norms folded in, exp in place); O(chunk n + n B) memory.
  `precision="tf32"` / `"tf32x3"` emulate the tensor cores' rounding of the distance operands (10-bit
  mantissa, truncated), so their p-value effect can be checked without a GPU.
- `mmd2_permutations`: Triton on CUDA, the reference elsewhere.
"""

from __future__ import annotations

import math
import os

import torch

__all__ = ["PRECISIONS", "mmd2_permutations", "mmd2_permutations_reference", "mmd2_permutations_triton"]

# Precision of the distance part (Z Z^T) on CUDA: "tf32x3" (three TF32 tensor-core passes on a hi/lo split
# of each operand, about fp32's error), "tf32" (one pass, 10-bit operands) or "ieee" (fp32 FMA, no tensor
# cores). The default is tf32x3: plain TF32 moved the permutation p-value by 1/(B+1) on 4 of 120 windows of
# real embeddings (emulated on CPU, scripts/results/mmd_kernel.md), tf32x3 on none.
# The contraction with W keeps fp32 accuracy in every mode (tf32x3 on tensor cores, or IEEE): TF32
# rounding there would differ per permutation column and reorder the permuted statistics.
PRECISIONS = ("tf32x3", "tf32", "ieee")
DEFAULT_PRECISION = "tf32x3"


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32 (1 sign, 8 exponent, 10 mantissa bits) by truncation, the coarser of the two
    roundings tensor cores may apply: an upper bound on what the GPU's TF32 path loses."""
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


_MAX_BUFFER = 1 << 26  # floats in the reference's kernel-row buffer (256 MB): caps chunk x n for large n


def _split3(hi: torch.Tensor, lo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands whose product is hi.hi^T + hi.lo^T + lo.hi^T (the tf32x3 sum), as one GEMM's inputs."""
    return torch.cat([hi, hi, lo], 1), torch.cat([hi, lo, hi], 1)


def mmd2_permutations_reference(
    z: torch.Tensor,
    weights: torch.Tensor,
    bandwidth: float,
    chunk: int = 1024,
    precision: str = "ieee",
) -> torch.Tensor:
    """float32 [B]: W[:, b]^T K W[:, b] for every column b, chunk pair by chunk pair (only j >= i)."""
    _check_precision(precision)
    z = z.float()
    z = z - z.mean(0)
    w = weights.float()
    n, n_perm = w.shape
    sq = (z * z).sum(1, keepdim=True)
    neg_gamma = -1.0 / (2.0 * bandwidth * bandwidth)
    # -gamma ||z_i - z_j||^2 as one matrix product: [z, |z|^2, 1] . (-gamma [-2 z, 1, |z|^2])^T, so each
    # row chunk costs one GEMM and two in-place passes (clamp, exp). The TF32 modes replace z . z by what
    # the tensor cores compute: hi . hi (tf32), or hi . hi + hi . lo + lo . hi (tf32x3), in the same GEMM.
    ones = torch.ones_like(sq)
    if precision == "ieee":
        zl, zr = z, z
    else:
        hi = _tf32(z)
        zl, zr = (hi, hi) if precision == "tf32" else _split3(hi, _tf32(z - hi))
    left = torch.cat([zl, sq, ones], 1)
    right = torch.cat([zr * -2.0, ones, sq], 1).mul_(neg_gamma)
    out = torch.zeros(n_perm, dtype=torch.float32, device=z.device)
    chunk = max(1, min(chunk, n, _MAX_BUFFER // n))
    k_buf = torch.empty(chunk * n, dtype=torch.float32, device=z.device)
    # One row chunk against every column from its own first row on (the upper part of K): few, large
    # GEMMs, which a loaded 2-core CPU runs better than many small tiles.
    for a in range(0, n, chunk):
        ca = min(chunk, n - a)
        k = k_buf[: ca * (n - a)].view(ca, n - a)
        torch.mm(left[a : a + ca], right[a:].T, out=k)
        k.clamp_max_(0.0)
        k[:, :ca].diagonal().zero_()  # the diagonal exactly, as in the kernel (no cancellation noise)
        k.exp_()
        acc = k[:, :ca] @ w[a : a + ca]
        if a + ca < n:
            acc.addmm_(k[:, ca:], w[a + ca :], alpha=2.0)
        out += (acc * w[a : a + ca]).sum(0)
    return out


# Block shapes tried by the autotuner: square row/column tiles (the symmetric loop needs BLOCK_N for both),
# a large block of permutations per program, and the depth of the distance loop; (BLOCK_N, BLOCK_B,
# BLOCK_D, num_warps, num_stages). Each fits a Hopper block's 227 KB of shared memory in every precision
# (compiled for sm_90 with Triton 3.6, the GPU image's, and 3.9, no GPU: 32-192 KB); (128, 256, 32, 8, 2),
# once in this list, needed 256 KB under TF32 and could never launch. All of them spill registers (255
# used, a 0.02-2 KB stack frame), least (64, 128, 64, 8, 2): the kernel's speed on a GPU is not yet measured.
_CONFIGS = [
    (64, 128, 64, 4, 3),
    (64, 256, 64, 8, 3),
    (128, 128, 32, 8, 3),
    (128, 64, 64, 8, 3),
    (64, 64, 64, 4, 3),
    (64, 128, 64, 8, 2),
    (32, 256, 64, 4, 3),
]
# Without autotuning (the interpreter on CPU, or a caller's fixed `config`).
_INTERPRET_CONFIG = {"BLOCK_N": 16, "BLOCK_B": 16, "BLOCK_D": 16}
_MIN_BLOCK_N = min(c[0] for c in _CONFIGS + [(_INTERPRET_CONFIG["BLOCK_N"],)])


def _build_kernels():
    """The Triton kernel (raw and autotuned), defined on first use so that importing refit never needs
    triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def _mmd2_kernel(
        z_ptr,
        sq_ptr,
        w_ptr,
        partial_ptr,
        n,
        d,
        n_perm,
        neg_gamma_log2e,
        n_bucket,
        d_bucket,
        b_bucket,
        PRECISION: tl.constexpr,
        CONTRACT_PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pid_i = tl.program_id(0)
        pid_b = tl.program_id(1)
        i0 = pid_i * BLOCK_N
        rows = i0 + tl.arange(0, BLOCK_N)
        perms = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < n
        perm_ok = perms < n_perm
        # Offsets in int64: row * d and row * n_perm pass 2^31 (int32 would wrap silently) once n·d or
        # n·B reaches 2.1e9, e.g. 2M rows of d 1024 or 200k rows with 10k+ permutations.
        rows64 = rows.to(tl.int64)
        sq_i = tl.load(sq_ptr + rows, mask=row_ok, other=0.0)
        acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
        # Column tiles from the diagonal one on: off-diagonal tiles count twice (K is symmetric).
        for j0 in range(i0, n, BLOCK_N):
            cols = j0 + tl.arange(0, BLOCK_N)
            col_ok = cols < n
            cols64 = cols.to(tl.int64)
            dot = tl.zeros((BLOCK_N, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, d, BLOCK_D):
                ks = k0 + tl.arange(0, BLOCK_D)
                k_ok = ks < d
                zi = tl.load(
                    z_ptr + rows64[:, None] * d + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
                )
                zj = tl.load(
                    z_ptr + cols64[:, None] * d + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0
                )
                dot += tl.dot(zi, tl.trans(zj), input_precision=PRECISION)
            sq_j = tl.load(sq_ptr + cols, mask=col_ok, other=0.0)
            d2 = tl.maximum(sq_i[:, None] + sq_j[None, :] - 2.0 * dot, 0.0)
            # The diagonal exactly (||z_i - z_i|| = 0): |z|^2 + |z|^2 - 2 z.z cancels to rounding noise of
            # about 1e-7 |z|^2, which a narrow bandwidth turns into K_ii visibly below 1.
            d2 = tl.where(rows[:, None] == cols[None, :], 0.0, d2)
            # Padded rows/columns hold finite values; their W rows are 0, so they add nothing.
            k_tile = tl.exp2(neg_gamma_log2e * d2) * (1.0 + (j0 > i0).to(tl.float32))
            w_j = tl.load(
                w_ptr + cols64[:, None] * n_perm + perms[None, :],
                mask=col_ok[:, None] & perm_ok[None, :],
                other=0.0,
            )
            acc += tl.dot(k_tile, w_j, input_precision=CONTRACT_PRECISION)
        w_i = tl.load(
            w_ptr + rows64[:, None] * n_perm + perms[None, :],
            mask=row_ok[:, None] & perm_ok[None, :],
            other=0.0,
        )
        partial = tl.sum(acc * w_i, axis=0)
        tl.store(partial_ptr + pid_i.to(tl.int64) * n_perm + perms, partial, mask=perm_ok)

    configs = [
        triton.Config({"BLOCK_N": bn, "BLOCK_B": bb, "BLOCK_D": bd}, num_warps=nw, num_stages=ns)
        for bn, bb, bd, nw, ns in _CONFIGS
    ]
    tuned = triton.autotune(
        configs=configs, key=["n_bucket", "d_bucket", "b_bucket", "PRECISION"], reset_to_zero=["partial_ptr"]
    )(_mmd2_kernel)
    return _mmd2_kernel, tuned


_KERNELS = None


def _bucket(x: int) -> int:
    """Power-of-two bucket of a size: one autotuning per bucket, not per exact window size."""
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def mmd2_permutations_triton(
    z: torch.Tensor,
    weights: torch.Tensor,
    bandwidth: float,
    precision: str = DEFAULT_PRECISION,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the fused kernel (on CUDA, or on CPU tensors under TRITON_INTERPRET=1).

    `config` fixes the block sizes ({"BLOCK_N", "BLOCK_B", "BLOCK_D"}, plus optional "num_warps") instead of
    autotuning; the autotuner's choice is in `_KERNELS[1].best_config` after a call.
    """
    global _KERNELS
    _check_precision(precision)
    if _KERNELS is None:
        _KERNELS = _build_kernels()
    raw, tuned = _KERNELS
    z = z.float()
    z = (z - z.mean(0)).contiguous()
    w = weights.float().contiguous()
    n, d = z.shape
    n_perm = w.shape[1]
    sq = (z * z).sum(1).contiguous()
    # One row of partial sums per row tile: sized for the smallest tile any config uses; rows a larger
    # tile leaves unwritten stay zero (the autotuner re-zeroes the buffer before each trial).
    partial = torch.zeros(
        ((n + _MIN_BLOCK_N - 1) // _MIN_BLOCK_N, n_perm), dtype=torch.float32, device=z.device
    )
    args = (
        z,
        sq,
        w,
        partial,
        n,
        d,
        n_perm,
        -math.log2(math.e) / (2.0 * bandwidth * bandwidth),
        _bucket(n),
        _bucket(d),
        _bucket(n_perm),
    )
    # The contraction with W: fp32-accurate either way; under the TF32 modes on three TF32 tensor-core passes
    # (tf32x3, error near fp32's) rather than on the much slower fp32 FMA path.
    contract = "ieee" if precision == "ieee" else "tf32x3"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if config is None and interpret:
        config = _INTERPRET_CONFIG
    if config is not None:
        meta = {"BLOCK_N": config["BLOCK_N"], "BLOCK_B": config["BLOCK_B"], "BLOCK_D": config["BLOCK_D"]}
        extra = {k: config[k] for k in ("num_warps", "num_stages") if k in config}
        grid = (
            (n + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],
            (n_perm + meta["BLOCK_B"] - 1) // meta["BLOCK_B"],
        )
        raw[grid](*args, PRECISION=precision, CONTRACT_PRECISION=contract, **meta, **extra)
    else:

        def grid(meta):
            return (
                (n + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],
                (n_perm + meta["BLOCK_B"] - 1) // meta["BLOCK_B"],
            )

        tuned[grid](*args, PRECISION=precision, CONTRACT_PRECISION=contract)
    return partial.sum(0)  # a fixed-order reduction: the same bits on every run


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def mmd2_permutations(
    z: torch.Tensor, weights: torch.Tensor, bandwidth: float, precision: str = DEFAULT_PRECISION
) -> torch.Tensor:
    """MMD^2 for every column of `weights`: the fused Triton kernel on CUDA, the chunked reference elsewhere
    (in IEEE fp32 on the CPU, where TF32 would only cost time)."""
    _check_precision(precision)
    if z.is_cuda and _triton_available():
        return mmd2_permutations_triton(z, weights, bandwidth, precision=precision)
    return mmd2_permutations_reference(z, weights, bandwidth)
