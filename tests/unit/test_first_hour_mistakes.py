"""The first mistakes a new user makes with the README's commands: each exits 2 with a message that names
the key or path and says what to give instead, never a traceback (found by running every README command).

- `--version runs/demo`: the fine-tune's run folder instead of the version inside it.
- a shipped config whose data paths are relative (`../shared/datasets/...`) run from another folder.
- `--model runs/my-model` that does not exist: one slash reads like a hub id (org/name).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refit.cli import main


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_model_dir) -> Path:
    """A run folder laid out as `refit finetune` leaves it: the version is OUTPUT_DIR/version."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    root = tmp_path_factory.mktemp("first-hour") / "run"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    write_version(root / "version", model, tok, {"version_id": "v-first-hour", "recipe": "test"})
    return root


@pytest.mark.parametrize(
    "argv",
    [
        ["benchmark", "--version"],
        ["export", "--format", "onnx", "--version"],
        ["drift", "--data", "refit-demo", "--tracking.wandb", "false", "--version"],
    ],
    ids=["benchmark", "export", "drift"],
)
def test_run_folder_given_as_version_points_at_the_version_inside(run_folder, argv, capsys):
    code = main([*argv, str(run_folder)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert f"{run_folder} is not a refit model version" in err
    assert f"its model version is {run_folder / 'version'}" in err


def test_missing_version_folder_says_what_to_give(tmp_path, capsys):
    code = main(["benchmark", "--version", str(tmp_path / "nosuch" / "version")])
    err = capsys.readouterr().err
    assert code == 2 and "no such folder" in err and "Model version:" in err


def test_shipped_config_with_relative_data_paths_names_the_key(tmp_path, monkeypatch):
    """configs/finetune/minilm-sst2.yaml points at ../shared/datasets: from a folder where that is absent the
    message names the key, the absolute path looked for and that relative paths follow the current folder."""
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "refit", "finetune", "--config", "configs/finetune/minilm-sst2.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    looked = (tmp_path / "../shared/datasets/sst2/train.jsonl").absolute()
    assert "'data.train'" in proc.stderr and str(looked) in proc.stderr
    assert "current folder" in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written on bad input"


def test_missing_relative_model_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch, toy_data, capsys):
    """`--model runs/my-model` (absent) while `runs/` exists: a local path, refused as such before any
    hub lookup (which offline would fail with an unrelated connection message)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    argv = ["finetune", "--model", "runs/my-model", "--data.train", str(toy_data["train"])]
    code = main([*argv, "--output_dir", str(tmp_path / "out"), "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Model folder not found: runs/my-model" in err and "'model' takes 'minilm'" in err
    assert "huggingface.co" not in err


def test_maintain_with_a_misspelt_registry_root_creates_nothing(tmp_path, capsys):
    """`refit maintain --registry.root regsitry`: refused by name, and no empty registry is left behind
    (it was created, then the cycle stopped on 'no champion yet')."""
    root = tmp_path / "regsitry"
    code = main(
        ["maintain", "--config", "configs/maintain/demo.yaml", "--once", "--registry.root", str(root)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"No registry at {root}" in err and "refit registry register" in err
    assert "Check --registry.root (and --registry.db)" in err  # maintain's flag, not `refit registry`'s
    assert "--root " not in err
    assert not root.exists()


@pytest.fixture(scope="module")
def demo_trained(tmp_path_factory, tiny_model_dir) -> Path:
    """A version whose refit.json says it was trained on the bundled demo set (as the quickstart's is)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    meta = {
        "version_id": "v-demo-trained",
        "recipe": "finetune",
        "labels": ["negative", "positive"],
        "config": {"data": {"dataset": "refit-demo", "max_length": 32}},
        "metrics": {"validation": {"accuracy": 0.5}},
    }
    return write_version(tmp_path_factory.mktemp("demo-trained") / "version", model, tok, meta)


def test_validation_file_is_used_for_a_version_trained_on_the_demo_set(demo_trained, tmp_path):
    """`--validation FILE` on a version trained on `data.dataset: refit-demo` was silently replaced by the
    demo's own validation split (the dataset name won over the file)."""
    from refit.evaluate import evaluation_texts
    from refit.models import read_version
    from tests.conftest import write_jsonl

    # one kind of label per file (refit.data.labels): names here
    rows = [
        {"text": "my own positive row", "label": "positive"},
        {"text": "my own negative row", "label": "negative"},
    ]
    own = write_jsonl(tmp_path / "own.jsonl", rows)
    texts, labels = evaluation_texts(read_version(demo_trained), "validation", str(own))
    assert texts == ["my own positive row", "my own negative row"] and labels == [1, 0]


@pytest.mark.parametrize("recipe", ["compress", "export", "benchmark"])
def test_missing_validation_file_is_refused_not_ignored(demo_trained, tmp_path, recipe, capsys):
    argv = [recipe, "--version", str(demo_trained), "--validation", str(tmp_path / "nosuch.jsonl")]
    if recipe == "compress":
        argv += ["--output_dir", str(tmp_path / "out"), "--tracking.wandb", "false"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--validation {tmp_path / 'nosuch.jsonl'}: no such file" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_drift_data_that_does_not_exist_names_the_flag_and_what_it_takes(demo_trained, tmp_path, capsys):
    code = main(["drift", "--version", str(demo_trained), "--data", str(tmp_path / "production")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--data {tmp_path / 'production'}" in err and "a folder of them" in err and "refit-demo" in err


def test_registry_given_a_folder_where_it_takes_an_id_says_how_to_register_it(run_folder, tmp_path, capsys):
    from refit.registry import Registry

    Registry(tmp_path / "registry").register(run_folder / "version")
    folder = str(run_folder / "version")
    code = main(["registry", "show", "--root", str(tmp_path / "registry"), "--version", folder])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"Invalid version id or alias '{folder}'" in err
    assert f"refit registry register --version {folder}" in err and "refit registry list" in err


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_the_installed_version(flag, capsys):
    """`refit --version` (what a new user types to check the install) was 'unknown command', exit 2."""
    from importlib.metadata import version

    code = main([flag])
    out = capsys.readouterr().out
    assert code == 0 and out.strip() == f"refit {version('refit-ml')}"


def test_finetune_without_data_says_how_to_give_some(tmp_path, capsys):
    """Plain `refit finetune` named the keys only; a new user also needs the bundled demo and --config."""
    code = main(["finetune", "--output_dir", str(tmp_path / "out"), "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "'data.train'" in err and "'refit-demo'" in err and "refit configs" in err
    assert not (tmp_path / "out").exists()


def test_csv_with_other_column_names_names_both_keys_at_once(tmp_path, capsys):
    """A CSV of `sentence,sentiment` lacks both default columns: one message names both keys."""
    data = tmp_path / "reviews.csv"
    data.write_text("sentence,sentiment\na fine film,positive\na dull film,negative\n")
    argv = ["finetune", "--data.train", str(data), "--output_dir", str(tmp_path / "out")]
    code = main([*argv, "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no text column 'text' and no label column 'label'" in err
    assert "Columns found: sentence, sentiment" in err
    assert "'data.text_column' and 'data.label_column'" in err


def test_training_rows_without_a_label_are_located(tmp_path, capsys):
    """'some rows have no label' left the user to search the file: the message now gives the first row."""
    from tests.conftest import write_jsonl

    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "meh", "label": None}]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    code = main(["finetune", "--data.train", str(data), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "1 row(s) have no label (row 3 first)" in err and "'data.label_column'" in err


@pytest.fixture
def champion_registry(run_folder, tmp_path) -> Path:
    from refit.registry import Registry

    registry = Registry(tmp_path / "registry")
    registry.promote(registry.register(run_folder / "version").id, reason="first release")
    return tmp_path / "registry"


def _maintain(root: Path, *overrides: str) -> list[str]:
    cfg = ["maintain", "--config", "configs/maintain/demo.yaml", "--once"]
    return [*cfg, "--registry.root", str(root), "--tracking.wandb", "false", *overrides]


def test_maintain_without_an_inbox_folder_points_at_what_serve_captured(champion_registry, tmp_path, capsys):
    """The README's loop serves (captures into REGISTRY/inbox), then runs configs/maintain/demo.yaml, whose
    inbox is ./production: the message said only 'Inbox folder not found: production (inbox.windows)'."""
    (champion_registry / "inbox").mkdir()
    code = main(_maintain(champion_registry, "--inbox.windows", str(tmp_path / "production")))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"'inbox.windows' is {tmp_path / 'production'}" in err
    assert f"--inbox.windows {champion_registry / 'inbox'}" in err


def test_maintain_without_a_golden_set_says_what_one_is(champion_registry, tmp_path, capsys):
    (tmp_path / "production").mkdir()
    argv = _maintain(champion_registry, "--inbox.windows", str(tmp_path / "production"))
    code = main([*argv, "--inbox.golden", str(tmp_path / "golden.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"'inbox.golden' is {tmp_path / 'golden.jsonl'}" in err and "labelled file" in err


def test_a_dataset_folder_given_as_data_train_lists_its_files(tmp_path, capsys):
    """`--data.train datasets/sst2` (the folder the README's datasets come in): the files inside are named."""
    from tests.conftest import write_jsonl

    for split in ("train", "validation"):
        write_jsonl(tmp_path / "sst2" / f"{split}.jsonl", [{"text": "a", "label": 0}])
    code = main(["finetune", "--data.train", str(tmp_path / "sst2"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "a folder, not a data file" in err and "It holds train.jsonl, validation.jsonl." in err


def test_drift_on_a_file_with_other_column_names_reads_cleanly(demo_trained, tmp_path, capsys):
    data = tmp_path / "prod.csv"
    data.write_text("sentence,sentiment\na fine film,positive\n")
    code = main(["drift", "--version", str(demo_trained), "--data", str(data), "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no text in column 'text' (columns: sentence, sentiment). Check" in err and ".." not in err


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_model_dir):
    """One real 1-epoch fine-tune of the tiny model: (its CLI arguments, its stdout)."""
    from tests.conftest import finetune_args, toy_rows, write_jsonl

    root = tmp_path_factory.mktemp("finetuned")
    data = {
        s: write_jsonl(root / "data" / f"{s}.jsonl", toy_rows(n, o))
        for s, n, o in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2))
    }
    args = finetune_args(tiny_model_dir, data, root / "run", "--trainer.max_epochs", "1")
    proc = subprocess.run([sys.executable, "-m", "refit", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return args, proc.stdout, root


def test_finetune_table_says_what_its_train_row_is(finetuned):
    """The train row (the last epoch's running metrics) sat below validation (the best checkpoint) with
    nothing to say so: a new user read 0.59 train vs 0.78 validation accuracy as a broken run."""
    _, out, _ = finetuned
    assert "train: averaged over the last epoch's batches" in out and "the best checkpoint" in out


def test_rerunning_a_finished_finetune_says_it_is_finished(finetuned, capsys):
    """The quickstart's command run twice said "already holds a run ... Continue it with --resume", and
    --resume then said "Nothing to resume: the run is finished"."""
    args, _, root = finetuned
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{root / 'run'} already holds a finished run" in err and "--resume" not in err
    assert f"its model version is {root / 'run' / 'version'}" in err and "new --output_dir" in err


def test_a_retrain_without_enough_labels_is_one_line_not_two(finetuned, tmp_path, capsys):
    """The cycle logged "retrain because drift ..." and then "only 1 new labelled rows ...: not retraining"."""
    from refit.registry import Registry
    from tests.conftest import write_jsonl

    registry = Registry(tmp_path / "registry")
    registry.promote(registry.register(finetuned[2] / "run" / "version").id, reason="first release")
    write_jsonl(tmp_path / "production" / "day1.jsonl", [{"text": "a fine film", "label": 1}])
    golden = write_jsonl(tmp_path / "golden.jsonl", [{"text": "a dull film", "label": 0}])
    argv = _maintain(registry.root, "--inbox.windows", str(tmp_path / "production"))
    code = main([*argv, "--inbox.golden", str(golden), "--policy.always_retrain", "true"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "a retrain is called for (" in captured.out
    assert "but only 1 new labelled rows (min 20)" in captured.out and "retrain because" not in captured.out


def test_serve_on_a_port_in_use_exits_2_naming_the_port(run_folder, capsys):
    """uvicorn found the taken port only after the model loaded and exited 3 under its own log line."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code = main(["serve", "--version", str(run_folder / "version"), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "shut down" not in err


def test_drift_prints_its_numbers_as_p_values(finetuned, tmp_path, capsys):
    """`mmd=0.002  bbsd=0.42` did not say whether it was a statistic or a p-value."""
    from tests.conftest import toy_rows, write_jsonl

    data = write_jsonl(tmp_path / "prod.jsonl", toy_rows(12, 3))
    version = finetuned[2] / "run" / "version"
    argv = ["drift", "--version", str(version), "--data", str(data), "--output_dir", str(tmp_path / "d")]
    code = main([*argv, "--tracking.wandb", "false"])
    out = capsys.readouterr().out
    assert code in (0, 3), out
    assert "mmd p=" in out and "bbsd p=" in out and "mmd=" not in out


@pytest.fixture
def finetuned_champion(finetuned, tmp_path) -> tuple[Path, Path]:
    """(registry root, the champion's folder in it): the fine-tuned version registered and promoted."""
    from refit.registry import Registry

    registry = Registry(tmp_path / "registry")
    champion = registry.register(finetuned[2] / "run" / "version")
    registry.promote(champion.id, reason="first release")
    return registry.root, champion.path


def test_drift_checks_production_against_the_champion_by_alias(finetuned_champion, tmp_path, capsys):
    """`refit drift --version champion` was refused ("not a refit model version"): the most common drift call
    of a maintained model needed `refit registry show` first to find the champion's folder."""
    import json

    from tests.conftest import toy_rows, write_jsonl

    root, folder = finetuned_champion
    data = write_jsonl(tmp_path / "prod.jsonl", toy_rows(12, 3))
    argv = ["drift", "--version", "champion", "--registry.root", str(root), "--data", str(data)]
    code = main([*argv, "--output_dir", str(tmp_path / "d"), "--tracking.wandb", "false"])
    captured = capsys.readouterr()
    assert code in (0, 3), captured.err
    assert f"--version champion: {folder}" in captured.out
    report = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert report["version"]["path"] == str(folder)


def test_refresh_reference_of_the_champion_stays_refused_saying_what_to_do(
    finetuned_champion, tmp_path, capsys
):
    from refit.registry import Registry, verify_registry

    root, folder = finetuned_champion
    before = (folder / "manifest.json").read_bytes()
    argv = ["drift", "--version", "champion", "--registry.root", str(root), "--refresh_reference"]
    code = main([*argv, "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"--version champion ({folder}) is registered in the registry {root}" in err
    assert f"cp -r {folder} my-copy" in err and "--encoder MODEL" in err
    assert (folder / "manifest.json").read_bytes() == before
    assert not [f for f in verify_registry(Registry(root, create=False)) if not f.ok]


def test_a_copy_of_the_champion_refreshes_as_the_refusal_advises(finetuned_champion, tmp_path, capsys):
    """The refusal's advice, followed: the copy outside the registry is refreshed and checked."""
    import shutil

    _, folder = finetuned_champion
    copy = tmp_path / "my-copy"
    shutil.copytree(folder, copy)
    code = main(["drift", "--version", str(copy), "--refresh_reference", "--tracking.wandb", "false"])
    assert code == 0, capsys.readouterr().err
    assert "Reference refreshed" in capsys.readouterr().out
    # and what the refusal says cannot be done (its old advice was "register the copy as a new version")
    code = main(["registry", "register", "--root", str(finetuned_champion[0]), "--version", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and f"A different version with id {folder.name} is already registered" in err


@pytest.mark.parametrize("recipe", ["drift", "benchmark"])
def test_an_alias_without_a_registry_says_where_it_was_looked_up(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main([recipe, "--version", "champion", "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert (
        "--version champion is not a folder here" in err and f"No registry at {tmp_path / 'registry'}" in err
    )
    assert "--registry.root" in err
    assert not (tmp_path / "registry").exists(), "a lookup creates nothing"


def test_a_misspelt_alias_lists_the_registry_aliases(finetuned_champion, tmp_path, capsys):
    root, _ = finetuned_champion
    code = main(["drift", "--version", "champoin", "--registry.root", str(root), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "No version or alias 'champoin'" in err and "(aliases: champion)" in err


def test_benchmark_of_the_champion_by_alias_writes_beside_it(finetuned_champion, tmp_path, capsys):
    """The registered version stays as registered: the results go to --output_dir."""
    import json

    root, folder = finetuned_champion
    out = tmp_path / "bench"
    argv = ["benchmark", "--version", "champion", "--registry.root", str(root), "--formats", "[pytorch]"]
    code = main([*argv, "--iters", "3", "--output_dir", str(out), "--tracking.wandb", "false"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "benchmark.json").read_text())
    assert results["version_id"] == folder.name and [r["format"] for r in results["rows"]] == ["pytorch"]
    assert not (folder / "exports" / "benchmark.json").exists()


def test_a_csv_without_a_header_line_says_to_add_one(tmp_path, capsys):
    """`great film,1` as the first line became the column names; 'Set data.text_column' could not help."""
    data = tmp_path / "reviews.csv"
    data.write_text("great film,1\nawful film,0\nfine film,1\n")
    code = main(["finetune", "--data.train", str(data), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "Columns found: great film, 1" in err and "add a header line (e.g. text,label)" in err


def test_a_csv_with_other_column_names_gets_no_header_hint(tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\ngreat film,1\n")
    assert main(["finetune", "--data.train", str(data), "--output_dir", str(tmp_path / "out")]) == 2
    assert "header line" not in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["export", "compress"])
def test_an_alias_where_a_folder_is_expected_says_where_aliases_go(recipe, tmp_path, monkeypatch, capsys):
    """`refit export --version champion` said only "champion is not a refit model version (no such folder)"."""
    monkeypatch.chdir(tmp_path)
    extra = ["--output_dir", str(tmp_path / "out")] if recipe == "compress" else []
    code = main([recipe, "--version", "champion", *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "If 'champion' is a registry alias or id" in err
    assert "refit registry show --version champion" in err and "--registry.root" in err
    assert "refit serve (an alias) as --alias" in err


def test_drift_without_data_says_what_data_to_give(demo_trained, capsys):
    """'needs --data (a file or folder of production inputs)' left a new user without one to try."""
    code = main(["drift", "--version", str(demo_trained), "--tracking.wandb", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--data refit-demo" in err and "REGISTRY/inbox" in err


def test_drift_finds_a_champion_whose_database_is_elsewhere(finetuned, tmp_path, capsys):
    """`--registry.db` as for serve and maintain; without it the registry's marker names the database."""
    import json

    from refit.registry import Registry
    from tests.conftest import toy_rows, write_jsonl

    root, db = tmp_path / "registry", tmp_path / "db" / "registry.db"
    registry = Registry(root, db)
    registry.promote(registry.register(finetuned[2] / "run" / "version").id, reason="first release")
    data = write_jsonl(tmp_path / "prod.jsonl", toy_rows(12, 3))
    argv = ["drift", "--version", "champion", "--registry.root", str(root), "--data", str(data)]
    argv += ["--output_dir", str(tmp_path / "d"), "--tracking.wandb", "false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"Give it with --db {db}" in err and "--registry.db for serve, maintain, drift and benchmark" in err
    )
    code = main([*argv, "--registry.db", str(db)])
    assert code in (0, 3), capsys.readouterr().err
    assert json.loads((tmp_path / "d" / "drift.json").read_text())["version"]["path"].startswith(str(root))
