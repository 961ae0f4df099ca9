"""The runtime table: one factory per runtime, all returning the same Predictor (refit.inference).

TensorRT engines live here (not in refit.inference) because building and loading them is export's job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from refit.errors import ExportError
from refit.inference import OrtPredictor, Predictor, TorchPredictor

__all__ = ["RUNTIMES", "make_predictor"]


def _tensorrt(source: str | Path, device: str = "cuda", **kwargs) -> Predictor:
    from refit.export.tensorrt import TensorRTPredictor

    return TensorRTPredictor(source, **kwargs)


# runtime name -> factory(source, device, **options). A new runtime is one class and one line here.
RUNTIMES: dict[str, Callable[..., Predictor]] = {
    "pytorch": TorchPredictor,
    "onnxruntime": OrtPredictor,
    "tensorrt": _tensorrt,
}


def make_predictor(runtime: str, source, device: str = "cpu", **options) -> Predictor:
    """A Predictor for `source` (a model for 'pytorch', a file path otherwise) on `device`."""
    if runtime not in RUNTIMES:
        raise ExportError(f"Unknown runtime '{runtime}'; use one of {', '.join(RUNTIMES)}.")
    return RUNTIMES[runtime](source, device, **options)
