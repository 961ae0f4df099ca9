"""GPU kernels (Triton) with pure-PyTorch references; each public function picks the right one."""

from refit.kernels.mmd import mmd2_permutations, mmd2_permutations_reference, mmd2_permutations_triton

__all__ = ["mmd2_permutations", "mmd2_permutations_reference", "mmd2_permutations_triton"]
