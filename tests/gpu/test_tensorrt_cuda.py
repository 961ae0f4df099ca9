"""TensorRT builds an engine from refit's ONNX export and runs it with PyTorch's logits. Skipped unless
TensorRT is importable. Written against TensorRT's documented Python API; not yet run (no TensorRT on the
machines this was written on, nor on the GPU image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.gpu.conftest import NO_CUDA, token_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def test_tensorrt_builder_engine_matches_pytorch(tmp_path, tiny_bert):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (refit-ml[tensorrt], NVIDIA's index)")
    from refit.export.onnx import export_onnx
    from refit.export.tensorrt import Profile, TensorRTPredictor, build_engine

    onnx_path = export_onnx(tiny_bert, tmp_path / "model.onnx")
    plan = tmp_path / "model.plan"
    meta = build_engine(
        onnx_path, plan, precision="fp32", profile=Profile(opt_batch=4, max_batch=8, opt_seq=24, max_seq=64)
    )
    assert plan.is_file() and plan.stat().st_size > 0 and meta["precision"] == "fp32"
    batch = token_batch(8, 24)
    with torch.no_grad():
        want = tiny_bert.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = TensorRTPredictor(plan)(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    np.testing.assert_allclose(got, want.numpy(), atol=1e-3, rtol=1e-3)
