"""MMD^2 of a pooled sample under many permutations at once, without ever storing the n x n kernel matrix.

For pooled rows z_1..z_n and a weight matrix W (n x B) whose column b holds +1/n_x for the rows permutation b
assigns to X and -1/n_y for those it assigns to Y, the biased (V-statistic) MMD^2 of permutation b is

    MMD2[b] = W[:, b]^T K W[:, b],   K[i, j] = exp(-||z_i - z_j||^2 / (2 bandwidth^2)).

The biased statistic is used because the permutation test only needs the same statistic for the observed
split and for the permuted ones; it keeps every permutation one contraction with K.

- `_mmd2_kernel` (Triton): each program owns a tile of rows and of permutations, builds kernel tiles on the
  fly from Z (tl.dot for the inner products), multiplies them into W, and adds its share of
  sum_i W[i, b] * (K W)[i, b] to the output with an atomic add. Memory: O(n d + n B).
- `mmd2_permutations_reference` (PyTorch): the same contraction over row chunks; O(chunk n + n B) memory.
- `mmd2_permutations`: Triton on CUDA, the reference elsewhere.
"""

from __future__ import annotations

import torch

__all__ = ["mmd2_permutations", "mmd2_permutations_reference", "mmd2_permutations_triton"]


def mmd2_permutations_reference(
    z: torch.Tensor, weights: torch.Tensor, bandwidth: float, chunk: int = 1024
) -> torch.Tensor:
    """float32 [B]: W[:, b]^T K W[:, b] for every column b, computing K chunk by chunk of rows."""
    z = z.float()
    w = weights.float()
    sq = (z * z).sum(1)
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    out = torch.zeros(w.shape[1], dtype=torch.float32, device=z.device)
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        d2 = (sq[start : start + chunk, None] + sq[None, :] - 2.0 * zc @ z.T).clamp_min_(0.0)
        kw = torch.exp(-gamma * d2) @ w  # [chunk, B]
        out += (kw * w[start : start + chunk]).sum(0)
    return out


def _kernel():
    """The Triton kernel, defined on first use so that importing refit never needs triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def _mmd2_kernel(
        z_ptr,
        sq_ptr,
        w_ptr,
        out_ptr,
        n,
        d,
        n_perm,
        gamma,
        BLOCK_I: tl.constexpr,
        BLOCK_J: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_B: tl.constexpr,
    ):
        pid_i = tl.program_id(0)
        pid_b = tl.program_id(1)
        rows = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
        perms = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < n
        perm_ok = perms < n_perm
        sq_i = tl.load(sq_ptr + rows, mask=row_ok, other=0.0)
        acc = tl.zeros((BLOCK_I, BLOCK_B), dtype=tl.float32)
        for j0 in range(0, n, BLOCK_J):
            cols = j0 + tl.arange(0, BLOCK_J)
            col_ok = cols < n
            dot = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
            for k0 in range(0, d, BLOCK_D):
                ks = k0 + tl.arange(0, BLOCK_D)
                k_ok = ks < d
                zi = tl.load(
                    z_ptr + rows[:, None] * d + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0
                )
                zj = tl.load(
                    z_ptr + cols[:, None] * d + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0
                )
                dot += tl.dot(zi, tl.trans(zj), input_precision="ieee")
            sq_j = tl.load(sq_ptr + cols, mask=col_ok, other=0.0)
            d2 = tl.maximum(sq_i[:, None] + sq_j[None, :] - 2.0 * dot, 0.0)
            k_tile = tl.exp(-gamma * d2)
            k_tile = tl.where(row_ok[:, None] & col_ok[None, :], k_tile, 0.0)
            w_j = tl.load(
                w_ptr + cols[:, None] * n_perm + perms[None, :],
                mask=col_ok[:, None] & perm_ok[None, :],
                other=0.0,
            )
            acc += tl.dot(k_tile, w_j, input_precision="ieee")
        w_i = tl.load(
            w_ptr + rows[:, None] * n_perm + perms[None, :],
            mask=row_ok[:, None] & perm_ok[None, :],
            other=0.0,
        )
        partial = tl.sum(acc * w_i, axis=0)
        tl.atomic_add(out_ptr + perms, partial, mask=perm_ok)

    return _mmd2_kernel


_KERNEL = None


def mmd2_permutations_triton(z: torch.Tensor, weights: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Launch the fused kernel (on CUDA, or on CPU tensors under TRITON_INTERPRET=1)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _kernel()
    z = z.float().contiguous()
    w = weights.float().contiguous()
    n, d = z.shape
    n_perm = w.shape[1]
    sq = (z * z).sum(1).contiguous()
    out = torch.zeros(n_perm, dtype=torch.float32, device=z.device)
    block_i, block_j, block_b, block_d = 32, 32, 32, 32
    grid = ((n + block_i - 1) // block_i, (n_perm + block_b - 1) // block_b)
    _KERNEL[grid](
        z,
        sq,
        w,
        out,
        n,
        d,
        n_perm,
        1.0 / (2.0 * bandwidth * bandwidth),
        BLOCK_I=block_i,
        BLOCK_J=block_j,
        BLOCK_D=block_d,
        BLOCK_B=block_b,
    )
    return out


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def mmd2_permutations(z: torch.Tensor, weights: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """MMD^2 for every column of `weights`: the fused Triton kernel on CUDA, the chunked reference elsewhere."""
    if z.is_cuda and _triton_available():
        return mmd2_permutations_triton(z, weights, bandwidth)
    return mmd2_permutations_reference(z, weights, bandwidth)
