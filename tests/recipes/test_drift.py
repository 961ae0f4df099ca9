"""`refit drift` end to end on a tiny version: windows, exit codes, reports, bad input, reference refresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from refit.cli import main
from refit.data import demo_dir
from refit.drift import embed, load_reference
from refit.drift.reference import reference_encoder
from refit.errors import ConfigError
from refit.models import verify_version
from tests.conftest import demo_finetune_args, write_jsonl

DRIFT_EXIT = 3


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("drift-version") / "run"
    args = ["--trainer.max_epochs", "2", "--data.batch_size", "16", "--data.max_length", "48"]
    args += ["--optim.lr", "2e-3", "--data.reference_size", "100"]
    assert main(demo_finetune_args(tiny_model_dir, out, *args)) == 0
    return out / "version"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


def _check(
    version: Path,
    data: str | Path,
    out: Path | None,
    *extra: str,
    tests: str = "[mmd]",
    tracking: bool = False,
) -> int:
    """`refit drift` of `data` against `version` with `tests`, into `out` (None: the default folder), W&B
    off unless `tracking`: the flags every check here repeats."""
    args = ["drift", "--version", str(version), "--data", str(data), "--tests", tests]
    args += [] if out is None else ["--output_dir", str(out)]
    args += [] if tracking else ["--tracking.wandb", "false"]
    return main([*args, *extra])


def _report(out: Path) -> dict:
    return json.loads((out / "drift.json").read_text())


def test_demo_windows_shifted_style_is_flagged(version, tmp_path, capsys):
    out = tmp_path / "drift"
    code = _check(version, "refit-demo", out, "--permutations", "300", tests="[mmd,ks,bbsd]")
    assert code == DRIFT_EXIT
    report = _report(out)
    by_name = {w["name"]: w for w in report["windows"]}
    assert by_name["shifted"]["drift"] and not by_name["test"]["drift"]
    mmd = by_name["shifted"]["results"]["mmd"]
    assert 0 < mmd["p_value"] <= 1 and mmd["threshold"] == pytest.approx(0.05 / 3)
    assert set(by_name["shifted"]["results"]) == {"mmd", "ks", "bbsd"}
    assert by_name["shifted"]["most_unlike"] and len(by_name["test"]["class_shares"]) == 2
    assert by_name["test"]["accuracy"] is not None  # the demo windows carry labels
    html = (out / "report.html").read_text()
    assert (
        html.count("<svg") >= 3 and "shifted" in html and "http" not in html.replace("http://www.w3.org", "")
    )
    assert "DRIFT" in capsys.readouterr().out


def test_folder_with_small_and_broken_files_is_checked_to_the_end(version, tmp_path):
    folder = tmp_path / "prod"
    write_jsonl(folder / "a-good.jsonl", _rows("test")[:60])
    write_jsonl(folder / "b-tiny.jsonl", _rows("test")[60:65])
    (folder / "c-broken.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe broken"}\n')
    write_jsonl(folder / "d-good.jsonl", _rows("test")[65:100])
    out = tmp_path / "drift"
    assert _check(version, folder, out, "--permutations", "200") == 0
    windows = {w["name"]: w for w in _report(out)["windows"]}
    assert windows["a-good"]["results"] and windows["d-good"]["results"]
    assert "fewer than the minimum of 20" in windows["b-tiny"]["skipped"]
    assert "c-broken.jsonl, line 2" in windows["c-broken"]["skipped"]


def test_fixed_size_and_time_windows(version, tmp_path):
    rows = [
        {**r, "timestamp": f"2026-11-{20 + i // 40:02d}T10:00:00"} for i, r in enumerate(_rows("test")[:80])
    ]
    rows += [{**r, "timestamp": "2026-11-22T10:00:00"} for r in _rows("shifted")[:40]]
    data = write_jsonl(tmp_path / "events.jsonl", rows)
    out = tmp_path / "by-time"
    code = _check(version, data, out, "--by_time", "day", "--permutations", "200")
    report = _report(out)
    assert code == (DRIFT_EXIT if report["drift"] else 0)
    names = [w["name"] for w in report["windows"]]
    assert names == ["2026-11-20", "2026-11-21", "2026-11-22"]
    out = tmp_path / "fixed"
    code = _check(version, data, out, "--window", "50", tests="[ks]")
    report = _report(out)
    assert code == (DRIFT_EXIT if report["drift"] else 0)
    sizes = [w["size"] for w in report["windows"]]
    assert sizes == [50, 50, 20]


def test_embed_api_matches_the_stored_reference(version):
    reference = load_reference(version)
    again = embed(version, reference.texts[:10], max_length=reference.meta["max_length"])
    torch.testing.assert_close(again, reference.embeddings[:10], rtol=1e-4, atol=1e-4)


def test_refresh_reference_rebuilds_embeddings_and_detector_state(version, tmp_path):
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(version, copy)
    holdout = write_jsonl(tmp_path / "holdout.jsonl", _rows("test")[:50])
    refresh = ["drift", "--version", str(copy), "--refresh_reference", "--reference_data", str(holdout)]
    assert main([*refresh, "--tracking.wandb", "false"]) == 0
    ref = load_reference(copy)
    assert len(ref.texts) == 50 and ref.embeddings.shape[0] == 50 and ref.probs.shape == (50, 2)
    assert (copy / "reference" / "detector.json").is_file()


def test_a_version_trained_without_a_reference_gets_its_first_one(tiny_model_dir, tmp_path, capsys):
    """`data.reference_size 0` writes no reference; `--refresh_reference --reference_data FILE` then makes
    one. Before, it refused, advising the very command that had been run."""
    out = tmp_path / "run"
    args = ["finetune", "--model", str(tiny_model_dir), "--data.dataset", "refit-demo"]
    args += ["--output_dir", str(out), "--trainer.max_epochs", "1", "--data.max_length", "48"]
    assert main([*args, "--tracking.wandb", "false", "--data.reference_size", "0"]) == 0
    v = out / "version"
    assert not (v / "reference").exists()
    holdout = write_jsonl(tmp_path / "holdout.jsonl", _rows("test")[:40])
    refresh = ["drift", "--version", str(v), "--refresh_reference", "--reference_data", str(holdout)]
    assert main([*refresh, "--tracking.wandb", "false"]) == 0
    ref = load_reference(v)
    assert len(ref.texts) == 40 and ref.meta["max_length"] == 48 and ref.meta["layer"] == 2
    verify_version(v)  # re-sealed with its new reference
    window = write_jsonl(tmp_path / "window.jsonl", _rows("test")[40:80])
    capsys.readouterr()
    drift = ["drift", "--version", str(v), "--data", str(window), "--output_dir", str(tmp_path / "d")]
    assert main([*drift, "--tracking.wandb", "false"]) == 0
    assert (tmp_path / "d" / "drift.json").is_file()


def test_bad_input_is_a_clear_error(version, tmp_path, capsys):
    assert main(["drift", "--version", str(tmp_path / "nope"), "--data", "x.jsonl"]) == 2
    assert "not a refit model version" in capsys.readouterr().err
    assert main(["drift", "--version", str(version), "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["drift", "--version", str(version), "--data", "x", "--tests", "[mmd,wasserstein]"]) == 2
    assert "wasserstein" in capsys.readouterr().err


def test_window_labels_outside_the_versions_set_are_refused_and_can_be_left_out(version, tmp_path, capsys):
    """A label the version does not know ('neutral', id 7 of two) is exit 2 naming it and the allowed
    labels, before any window is embedded (its accuracy was silently missing); --label_column null checks
    the same windows without labels."""
    folder = tmp_path / "prod"
    write_jsonl(folder / "a-names.jsonl", [{**r, "label": "neutral"} for r in _rows("test")[:30]])
    write_jsonl(folder / "b-ids.jsonl", [{**r, "label": 7} for r in _rows("test")[30:60]])
    out = tmp_path / "out"
    assert _check(version, folder, out, "--permutations", "100") == 2
    err = capsys.readouterr().err
    assert "window 'a-names'" in err and "label 'neutral'" in err and "negative, positive" in err, err
    assert "--label_column null" in err and "Traceback" not in err, err
    assert not (out / "drift.json").exists()
    (folder / "a-names.jsonl").unlink()
    assert _check(version, folder, out, "--permutations", "100") == 2
    assert "window 'b-ids'" in (err := capsys.readouterr().err) and "label 7" in err, err
    assert _check(version, folder, out, "--permutations", "100", "--label_column", "null") == 0
    (window,) = _report(out)["windows"]
    assert window["results"]["mmd"] and window.get("accuracy") is None


def test_tracked_drift_run_is_logged_offline(version, tmp_path):
    out = tmp_path / "tracked"
    code = _check(version, "refit-demo", out, tests="[ks]", tracking=True)
    assert code == (DRIFT_EXIT if _report(out)["drift"] else 0)
    assert list((out / "wandb").glob("offline-run-*"))


def test_fixed_encoder_reembeds_the_reference(version, tiny_model_dir, tmp_path):
    """--encoder re-embeds the reference with that encoder and refits the detector state; with the encoder
    the reference was made with (the base model, by default), the outcome must equal the plain check's."""
    assert load_reference(version).meta["encoder"] == str(tiny_model_dir)
    runs = {}
    for name, extra in (("plain", []), ("encoder", ["--encoder", str(tiny_model_dir)])):
        out = tmp_path / name
        code = _check(version, "refit-demo", out, "--permutations", "200", *extra, tests="[mmd,ks]")
        runs[name] = _report(out)
        assert code == (DRIFT_EXIT if runs[name]["drift"] else 0)
    assert runs["encoder"]["encoder"] == runs["plain"]["encoder"] == str(tiny_model_dir)
    for plain, enc in zip(runs["plain"]["windows"], runs["encoder"]["windows"]):
        assert plain["drift"] == enc["drift"]
        assert enc["results"]["mmd"]["p_value"] == pytest.approx(plain["results"]["mmd"]["p_value"], rel=0.05)
        # KS's reference half is drawn anew (seed 0 here, the training seed in the stored state): same verdict
        assert enc["results"]["ks"]["drift"] == plain["results"]["ks"]["drift"]


def _drift(version: Path, out: Path, *extra: str) -> tuple[int, dict | None]:
    code = _check(version, "refit-demo", out, *extra, tests="[mmd,bbsd]")
    return code, _report(out) if (out / "drift.json").is_file() else None


def test_the_base_encoder_embeds_while_the_version_predicts(version, tiny_model_dir, tmp_path):
    """A new version's reference is embedded by its base model (never fine-tuned; mean-pooled last layer,
    weights digest recorded) while BBSD and the class shares keep the version's own outputs: they equal
    those of the same version re-embedded with its own layers (--refresh_reference --encoder version),
    whose MMD sees other embeddings."""
    meta = load_reference(version).meta
    assert meta["encoder"] == str(tiny_model_dir) and meta["pooling"] == "mean" and meta["layer"] == -1
    assert len(meta["encoder_sha256"]) == 64
    own = tmp_path / "own"
    shutil.copytree(version, own)
    assert main(["drift", "--version", str(own), "--refresh_reference", "--encoder", "version"]) == 0
    own_meta = load_reference(own).meta
    assert "encoder" not in own_meta and "encoder_sha256" not in own_meta
    _, base = _drift(version, tmp_path / "base")
    _, mine = _drift(own, tmp_path / "mine")
    assert mine["encoder"] == str(own)
    for b, m in zip(base["windows"], mine["windows"], strict=True):
        assert b["results"]["bbsd"]["p_value"] == m["results"]["bbsd"]["p_value"]
        assert b["class_shares"] == m["class_shares"]
    assert [w["results"]["mmd"]["statistic"] for w in base["windows"]] != [
        w["results"]["mmd"]["statistic"] for w in mine["windows"]
    ]
    # the stored choice is followed by later checks with no flag; --layers needs the version's own layers
    code = main(["drift", "--version", str(version), "--refresh_reference", "--layers", "[0]"])
    assert code == 2


def test_an_encoder_that_now_loads_other_weights_is_refused(version, tiny_model_dir, tmp_path):
    """Fail closed: the reference records its encoder's weights digest; if the encoder folder changes
    (retrained, replaced), windows are refused instead of compared in another embedding space, the
    reference is untouched, and --refresh_reference re-embeds with the weights as they now are."""
    from transformers import AutoModel, AutoTokenizer

    enc = tmp_path / "encoder"
    shutil.copytree(tiny_model_dir, enc)
    copy = tmp_path / "v"
    shutil.copytree(version, copy)
    assert main(["drift", "--version", str(copy), "--refresh_reference", "--encoder", str(enc)]) == 0
    stored = load_reference(copy).meta["encoder_sha256"]
    model = AutoModel.from_pretrained(enc)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(0.01)
    model.save_pretrained(enc)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(enc)
    code, report = _drift(copy, tmp_path / "refused")
    assert code == 2 and report is None
    assert load_reference(copy).meta["encoder_sha256"] == stored
    assert main(["drift", "--version", str(copy), "--refresh_reference"]) == 0
    assert load_reference(copy).meta["encoder_sha256"] != stored
    code, report = _drift(copy, tmp_path / "after")
    assert code in (0, DRIFT_EXIT) and report["windows"]


def test_reference_encoder_choice(version, tiny_model_dir):
    """'base' is the fine-tune's base model, or a parent version's own encoder (one space per lineage);
    'version' is none; a version is no encoder to name."""
    assert reference_encoder("base", "minilm") == "minilm"
    assert reference_encoder("base", str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert reference_encoder("base", str(version)) == str(tiny_model_dir)
    assert reference_encoder("version", "minilm") is None
    assert reference_encoder("org/some-model", "minilm") == "org/some-model"
    with pytest.raises(ConfigError, match="refit version"):
        reference_encoder(str(version), "minilm")


def test_default_output_folder_is_beside_the_cwd_never_inside_the_version(
    version, tmp_path, monkeypatch, capsys
):
    """The version is immutable once written (the registry copies and verifies it whole): drift runs go to
    runs/drift/<version id>-<time> under the current folder, and the path is printed."""
    before = sorted(p.relative_to(version) for p in version.rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert _check(version, demo_dir() / "test.jsonl", None, tests="[ks]") == 0
    assert sorted(p.relative_to(version) for p in version.rglob("*")) == before
    vid = json.loads((version / "refit.json").read_text())["version_id"]
    runs = list((tmp_path / "runs" / "drift").glob(f"{vid}-*"))
    assert len(runs) == 1 and (runs[0] / "drift.json").is_file() and (runs[0] / "report.html").is_file()
    assert str(Path("runs") / "drift" / runs[0].name / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize(
    "files",
    [
        {"empty.jsonl": ""},
        {"other-column.jsonl": "".join(json.dumps({"body": f"text {i}"}) + "\n" for i in range(40))},
        {
            "tiny.jsonl": "".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(5)),
            "empty.jsonl": "",
            "broken.jsonl": "{not json\n",
        },
    ],
    ids=["empty file", "no text column", "every window skipped"],
)
def test_nothing_tested_is_an_error_not_no_drift(version, tmp_path, files, capsys):
    folder = tmp_path / "prod"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    out = tmp_path / "drift"
    code = _check(version, folder, out)
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert "Nothing to test" in captured.err and "no drift" not in captured.out
    assert all(name.split(".")[0] in captured.err for name in files)
    assert not (out / "drift.json").exists()


def test_version_stores_its_calibrator_and_drift_reports_estimated_accuracy(version, tmp_path, capsys):
    """refit.estimate end to end: calibration.json sealed in the version, ECE before/after in refit.json, and
    an estimated accuracy with its interval per window beside the tests (drift.json, table, report.html)."""
    from refit.estimate import load_calibration
    from refit.models import verify_version

    verify_version(version)  # calibration.json is covered by the manifest
    manifest = json.loads((version / "manifest.json").read_text())
    assert "calibration.json" in {f["path"] for f in manifest["files"]}
    cal = load_calibration(version)
    meta = json.loads((version / "refit.json").read_text())
    assert meta["metrics"]["calibration"]["temperature"] == pytest.approx(cal.temperature)
    assert cal.accuracy == pytest.approx(meta["metrics"]["validation"]["accuracy"], abs=1e-6)
    assert meta["metrics"]["calibration"]["ece_before"] == pytest.approx(
        meta["metrics"]["validation"]["ece"], abs=0.02
    )
    out = tmp_path / "drift"
    _check(version, "refit-demo", out, tests="[ks]")
    printed = capsys.readouterr().out
    report = _report(out)
    for w in report["windows"]:
        # twoview too: the version's reference encoder (its base model) stored a probe at fine-tune time
        assert set(w["estimate"]) == {"cbpe", "atc", "doc", "cbpe_ls", "twoview"}
        for e in w["estimate"].values():
            assert 0 <= e["low"] <= e["value"] <= e["high"] <= 1 and e["n"] == w["size"]
    test = {w["name"]: w for w in report["windows"]}["test"]
    assert abs(test["estimate"]["cbpe"]["value"] - test["accuracy"]) < 0.15  # in-domain: calibration holds
    assert printed.count("est.acc=") == len(report["windows"])
    assert printed.count("est.acc [low, high]: 95% for the window's sampling only") == 1  # said once, under
    assert "estimated accuracy" in (out / "report.html").read_text()
    # under a one-off fixed encoder the probabilities are still the version's: the same estimates, but no
    # twoview (its probe reads the reference encoder's embeddings, not another encoder's)
    _check(version, "refit-demo", tmp_path / "enc", "--encoder", str(version), tests="[ks]")
    fixed = _report(tmp_path / "enc")["windows"]
    own = [{k: v for k, v in w["estimate"].items() if k != "twoview"} for w in report["windows"]]
    assert [w["estimate"] for w in fixed] == own
