"""ONNX Runtime's CUDA provider runs refit's exported graph with the logits of PyTorch. Skipped unless
onnxruntime-gpu (CUDAExecutionProvider) is installed: the GPU image's onnxruntime is the CPU build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.gpu.conftest import NO_CUDA, token_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def test_ort_cuda_provider_matches_pytorch(tmp_path, tiny_bert):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (refit-ml[export])")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(
            f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    from refit.export.onnx import export_onnx
    from refit.inference import OrtPredictor

    path = export_onnx(tiny_bert, tmp_path / "model.onnx")
    predictor = OrtPredictor(path, device="cuda")
    assert predictor.session.get_providers()[0] == "CUDAExecutionProvider"
    batch = token_batch(8, 24)
    with torch.no_grad():
        want = tiny_bert.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = predictor(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    np.testing.assert_allclose(got, want.numpy(), atol=1e-3, rtol=1e-3)
