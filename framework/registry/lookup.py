"""`--version` for the recipes that read a version: a version folder, or an id or alias in a registry.

Checking production against the champion is the most common drift call of a maintained model, and
`refit drift --version champion` used to stop at "not a refit model version". The alias is resolved by
the registry itself (`Registry.get`: the audit log must agree with the alias row, and the version's files
must match what was registered), so a recipe never reads an alias some other way.
"""

from __future__ import annotations

from pathlib import Path

from refit.io import is_bare_name
from refit.registry.db import NoRegistry
from refit.registry.store import Registry


def version_folder(ref: str, root: str | Path, db: str | Path | None = None) -> tuple[Path, bool]:
    """(folder, from_registry) for a `--version` value.

    A path (anything with a separator, or a folder that exists here) is returned as given: the recipe's
    own load says what is wrong with it. A bare name is a version id or alias of the registry at `root`
    (`--registry.root`, default ./registry), opened read-only, resolved and verified by the registry.
    """
    if not is_bare_name(ref):
        return Path(ref), False
    try:
        registry = Registry(root, db, create=False)
    except NoRegistry as e:
        raise NoRegistry(
            f"--version {ref} is not a folder here, so it was looked up as a version id or alias of a "
            f"registry, but: {e} Give the version folder (e.g. runs/demo/version), or the registry that "
            "holds it with --registry.root (and --registry.db)."
        ) from None
    return registry.get(ref).path, True
