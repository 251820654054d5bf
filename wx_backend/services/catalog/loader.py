"""Which catalog files are read, and in which order: the built-in folder, then the one named
by ``WX_CATALOG_DIR`` (whose files add business types or replace them by code)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .declarations import load_common, load_type
from .model import COMMON_FILE, Catalog, CatalogError, ServiceType

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "catalog"  # the data files: wx_backend/catalog/


def load_catalog(*dirs: str | Path | None) -> Catalog:
    """Read the catalogue from these folders, in order; a later folder adds types or replaces
    them (same ``code``), and its ``_common.toml``, if any, replaces the shared block.

    Raises ``CatalogError`` naming the file and the field at the first problem.
    """
    folders = [Path(d) for d in dirs if d]
    for folder in folders:
        if not folder.is_dir():
            raise CatalogError(f"catalogue folder {folder} does not exist")
    common_path = None
    for folder in folders:
        if (folder / COMMON_FILE).is_file():
            common_path = folder / COMMON_FILE
    if common_path is None:
        raise CatalogError(f"no {COMMON_FILE} in the catalogue folders")
    common = load_common(common_path)
    types: dict[str, ServiceType] = {}
    for folder in folders:
        seen_here: dict[str, str] = {}
        for path in sorted(folder.glob("*.toml")):
            if path.name.startswith("_"):
                continue
            service = load_type(path, common)
            if service.code in seen_here:
                raise CatalogError(
                    f"catalogue file {path.name}: code: {service.code!r} is also declared in {seen_here[service.code]}"
                )
            seen_here[service.code] = path.name
            types[service.code] = service
    if not types:
        raise CatalogError("the catalogue has no business types")
    return Catalog(common, types)


def default_dirs(extra: str | None) -> Iterable[Path | str | None]:
    """The built-in folder, then the configured extra/override folder (``WX_CATALOG_DIR``)."""
    return (BUILTIN_DIR, extra or None)
