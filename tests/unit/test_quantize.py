"""Quantisers (PyTorch and ONNX), the accuracy gate on a lossy one, and the TensorRT precision rules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from refit.compress.quantize import TORCH_QUANTIZERS
from refit.evaluate import AccuracyGateError, check_gate, score
from refit.export.quantize import ONNX_QUANTIZERS
from refit.export.tensorrt import builder_flags, onnx_for_precision
from refit.inference import Batch, OrtPredictor, TorchPredictor, predict_logits

pytest.importorskip("onnxruntime", reason="needs the [export] extra")
import onnx  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    rng = np.random.default_rng(1)
    ids = rng.integers(1000, 20000, size=(8, 32, 16)).astype(np.int64)
    return [Batch(i, np.ones_like(i)) for i in ids]


@pytest.fixture(scope="module")
def raw_onnx(model, tmp_path_factory) -> Path:
    from refit.export.onnx import export_onnx

    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", exporter="dynamo")


def test_torch_quantizers_run(model, batches):
    ref = predict_logits(TorchPredictor(model), batches[:1])
    for name, quantize in TORCH_QUANTIZERS.items():
        import copy

        out = predict_logits(TorchPredictor(quantize(copy.deepcopy(model)), name=name), batches[:1])
        assert out.shape == ref.shape and np.isfinite(out).all(), name
        assert np.abs(out - ref).max() < 0.1, name


@pytest.mark.parametrize("name", sorted(ONNX_QUANTIZERS))
def test_onnx_quantizers_on_a_dynamo_export(name, raw_onnx, model, batches, tmp_path):
    """The dynamo export is the one whose value_info breaks ORT's quantizer (FINDINGS.md)."""
    out = ONNX_QUANTIZERS[name](raw_onnx, tmp_path / f"{name}.onnx", batches[:2])
    onnx.checker.check_model(str(out))
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    logits = predict_logits(OrtPredictor(out), batches[:2])
    assert np.abs(logits - predict_logits(TorchPredictor(model), batches[:2])).max() < 0.1
    if name in ("static-int8", "qdq-tensorrt"):
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    if name == "qdq-tensorrt":  # TensorRT takes symmetric int8: every zero point is 0
        zero_points = [
            onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("zero_point")
        ]
        assert zero_points and all((z == 0).all() for z in zero_points)
    if name == "fp16":
        assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)


def test_gate_trips_on_a_lossy_method_with_zero_tolerance(model, batches, tmp_path):
    """A model whose decision boundary runs through the middle of its inputs (classifier bias shifted by
    the median logit gap), scored against its own float32 predictions (accuracy 1.0): int8 rounding flips
    the nearest ties, so a 0-point tolerance must refuse the int8 model."""
    import copy

    from refit.export.onnx import export_onnx

    edgy = copy.deepcopy(model)
    gap = np.diff(predict_logits(TorchPredictor(edgy), batches), axis=-1)
    with torch.no_grad():
        edgy.classifier.bias[1] -= float(np.median(gap))
    ref = predict_logits(TorchPredictor(edgy), batches)
    labels = ref.argmax(-1)
    int8 = ONNX_QUANTIZERS["dynamic-int8"](export_onnx(edgy, tmp_path / "m.onnx"), tmp_path / "int8.onnx", ())
    candidate = score(predict_logits(OrtPredictor(int8), batches), labels, 2)
    baseline = score(ref, labels, 2)
    assert baseline["accuracy"] == 1.0 and candidate["accuracy"] < 1.0
    with pytest.raises(AccuracyGateError, match="max_accuracy_drop=0") as err:
        check_gate("onnx-int8", baseline, candidate, 0.0)
    assert err.value.report["passed"] is False and err.value.report["accuracy_drop_points"] > 0
    assert check_gate("onnx-int8", baseline, candidate, 100.0)["passed"]


@pytest.mark.parametrize(
    "precision,major,graph,flags",
    [
        ("fp32", 10, "fp32", []),
        ("fp16", 10, "fp32", ["FP16"]),
        ("int8", 10, "qdq", ["FP16", "INT8"]),
        ("fp32", 11, "fp32", []),
        ("fp16", 11, "fp16", []),
        ("int8", 11, "qdq", []),
    ],
)
def test_tensorrt_precision_comes_from_flags_on_10_and_from_the_graph_on_11(precision, major, graph, flags):
    assert onnx_for_precision(precision, major) == graph
    assert builder_flags(precision, major) == flags


def test_torch_dynamic_int8_leaves_the_original_alone(model):
    before = model.classifier.weight.clone()
    TORCH_QUANTIZERS["dynamic-int8"](model)
    assert isinstance(model.classifier, torch.nn.Linear) and torch.equal(model.classifier.weight, before)


@pytest.fixture(scope="module")
def fused_onnx(model, tmp_path_factory) -> Path:
    """The graph dynamic int8 starts from: TorchScript export, then ORT's BERT fusions (Attention etc.)."""
    from refit.export.onnx import export_onnx, optimize_transformer

    work = tmp_path_factory.mktemp("fused")
    raw = export_onnx(model, work / "raw.onnx")
    assert optimize_transformer(raw, work / "fused.onnx", model.config)["Attention"] == 2
    return work / "fused.onnx"


def _int8_weights(path: Path) -> dict[str, np.ndarray]:
    return {
        t.name: onnx.numpy_helper.to_array(t)
        for t in onnx.load(str(path)).graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and t.dims
    }


def test_dynamic_int8_choices_reach_the_graph(fused_onnx, model, batches, tmp_path):
    """Each knob of dynamic_int8 changes the graph the way it claims, and every variant still computes the
    model (logits within int8 rounding of PyTorch's)."""
    from refit.export.quantize import dynamic_int8

    def build(name, **kw):
        out = dynamic_int8(fused_onnx, tmp_path / f"{name}.onnx", **kw)
        logits = predict_logits(OrtPredictor(out), batches[:2])
        assert np.abs(logits - predict_logits(TorchPredictor(model), batches[:2])).max() < 0.1, name
        return out, {n.op_type for n in onnx.load(str(out)).graph.node}

    matmul, ops = build("matmul", op_types=("MatMul",))
    assert "QAttention" not in ops and "Attention" in ops and "MatMulInteger" in ops
    _, ops = build("attention", op_types=("MatMul", "Attention"))
    assert "QAttention" in ops and "Attention" not in ops
    everything, ops = build("all", op_types=None)  # also the embedding tables (Gather / EmbedLayerNorm)
    assert everything.stat().st_size < matmul.stat().st_size

    def scales(path):  # the weight scales: one per output column when per-channel
        return [
            onnx.numpy_helper.to_array(t)
            for t in onnx.load(str(path)).graph.initializer
            if t.name.endswith("_scale") and t.data_type == onnx.TensorProto.FLOAT
        ]

    per_tensor, _ = build("per_tensor", op_types=("MatMul",), per_channel=False)
    assert max(s.size for s in scales(matmul)) > 1 and max(s.size for s in scales(per_tensor)) == 1
    reduced, _ = build("reduced", op_types=("MatMul",), reduce_range=True)  # 7-bit weights
    assert max(np.abs(w).max() for w in _int8_weights(reduced).values()) <= 64
    assert max(np.abs(w).max() for w in _int8_weights(matmul).values()) > 64


def test_ort_session_settings(raw_onnx):
    """The session options OrtPredictor promises: intra-op threads = physical cores, one inter-op thread,
    all graph optimisations, spinning unless turned off (a server)."""
    import onnxruntime as ort

    from refit.errors import ExportError
    from refit.inference import physical_cores

    assert 1 <= physical_cores() <= os.cpu_count()
    opts = OrtPredictor(raw_onnx).session.get_session_options()
    assert opts.intra_op_num_threads == physical_cores() and opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    opts = OrtPredictor(
        raw_onnx, threads=1, spinning=False, opt_level="extended"
    ).session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ExportError, match="opt_level 'fastest'; use one of basic, extended, all"):
        OrtPredictor(raw_onnx, opt_level="fastest")


def test_skip_layer_norm_stays_unfused_on_cpu(model, batches, tmp_path):
    """ORT 1.32's CPU SkipLayerNormalization is slower than the Add + LayerNormalization it replaces
    (scripts/results/export.md): optimize_transformer leaves it out unless asked, and OrtPredictor's
    session does not fuse it back, while the logits stay those of the fused graph."""
    from refit.export.onnx import export_onnx, optimize_transformer

    raw = export_onnx(model, tmp_path / "raw.onnx")
    plain = optimize_transformer(raw, tmp_path / "plain.onnx", model.config)
    fused = optimize_transformer(raw, tmp_path / "sln.onnx", model.config, skip_layer_norm=True)
    assert "SkipLayerNormalization" not in plain and fused["SkipLayerNormalization"] == 4
    assert plain["Attention"] == fused["Attention"] == 2

    ran = OrtPredictor(tmp_path / "plain.onnx", save_optimized=tmp_path / "ran.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "ran.onnx")).graph.node}
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops and "Attention" in ops
    ref = predict_logits(OrtPredictor(tmp_path / "sln.onnx"), batches[:2])
    assert np.abs(predict_logits(ran, batches[:2]) - ref).max() < 1e-4


def test_static_int8_choices_reach_the_graph(raw_onnx, model, batches, tmp_path):
    """int8 symmetric activations have zero points 0; uint8 asymmetric ones are uint8; per-channel weights
    have one scale per output column; the histogram calibrator runs on equal-length batches. Each variant
    still computes the model."""
    from refit.export.quantize import static_int8

    ref = predict_logits(TorchPredictor(model), batches[:2])

    def build(name, **kw):
        out = static_int8(raw_onnx, tmp_path / f"{name}.onnx", batches[:2], **kw)
        assert np.abs(predict_logits(OrtPredictor(out), batches[:2]) - ref).max() < 0.1, name
        return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}

    sym = build("s8", activation_type="int8", symmetric=True, per_channel=True)
    zero_points = [v for k, v in sym.items() if k.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and (z == 0).all() for z in zero_points)
    assert max(v.size for k, v in sym.items() if k.endswith("_scale")) > 1  # per-channel weight scales
    asym = build("u8", activation_type="uint8", symmetric=False, per_channel=False, method="percentile")
    assert any(v.dtype == np.uint8 for k, v in asym.items() if k.endswith("zero_point"))
    assert max(v.size for k, v in asym.items() if k.endswith("_scale")) == 1
