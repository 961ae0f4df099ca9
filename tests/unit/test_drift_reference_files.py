"""refit.drift.reference.load_reference on a detector state that does not parse: a VersionError naming the
file and the way out, never a traceback. Before: detector.json cut short (or edited, then the version
re-sealed) raised json.JSONDecodeError / KeyError / AttributeError from deep inside the loader."""

from __future__ import annotations

import pytest
import torch

from refit.drift.reference import Reference, fit_states, load_reference
from refit.errors import VersionError


@pytest.fixture
def version(tmp_path):
    embeddings = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    fit_states(Reference(embeddings, None, [f"t{i}" for i in range(60)], {}), seed=0).save(
        tmp_path / "reference"
    )
    return tmp_path


@pytest.mark.parametrize(
    "text",
    ['{"seed": 0, "states": {"mmd"', '{"states": [1, 2]}', '["not", "an", "object"]', '{"states": {}}'],
    ids=["cut-short", "states-not-a-mapping", "not-an-object", "no-seed"],
)
def test_a_detector_json_that_does_not_parse_is_a_version_error_naming_it(version, text):
    meta = version / "reference" / "detector.json"
    meta.write_text(text)
    with pytest.raises(VersionError) as e:
        load_reference(version)
    msg = str(e.value)
    assert str(meta) in msg and "--refresh_reference" in msg, msg
    assert load_reference(version, finite=False).states == {}  # the refresh (the way out) still reads it


def test_a_cut_detector_safetensors_names_that_file(version):
    tensors = version / "reference" / "detector.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(VersionError, match="detector.safetensors cannot be read"):
        load_reference(version)
