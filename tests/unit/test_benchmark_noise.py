"""`refit benchmark` says when its timings are noisy: one run on a machine doing other work showed ONNX
Runtime fp32 at 0.44x eager where 1.5x was true (first-hour walkthrough), with nothing in the table but a
pytorch-int8 p95 of 379 ms to show it. Rows are refit.export.benchmark's own, the Markdown its writer's."""

from __future__ import annotations

from refit.export.benchmark import NOISY_P95_OVER_P50, Row, add_speedups, noise_warning, to_markdown

HOST = {"cpu": "test cpu", "cores": 2, "torch_threads": 2, "gpu": None, "load_average_1m": 3.9, "torch": "x"}


def _row(fmt: str, p50: float, p95: float) -> Row:
    return Row(fmt, "model.onnx", 1.0, 0.9, p50, p95, 100.0)


def test_a_quiet_run_has_no_warning():
    rows = add_speedups([_row("pytorch", 12.0, 13.5), _row("onnx", 8.0, 9.9)])
    assert noise_warning(rows, HOST) is None
    assert "Noisy" not in to_markdown(rows, "t", {}, HOST)


def test_a_row_whose_p95_is_far_over_its_p50_is_named_with_the_load():
    rows = add_speedups([_row("pytorch", 12.4, 14.0), _row("onnx", 28.4, 28.4 * (NOISY_P95_OVER_P50 + 6))])
    warning = noise_warning(rows, HOST)
    assert warning is not None and "onnx 8.0x" in warning and "pytorch" not in warning
    assert "load average 3.9 on 2 cores" in warning
    assert f"**{warning}**" in to_markdown(rows, "t", {}, HOST)


def test_skipped_rows_are_not_judged():
    rows = [_row("pytorch", 12.0, 13.0), Row("tensorrt", None, None, None, None, None, None, note="skipped")]
    assert noise_warning(rows, HOST) is None
