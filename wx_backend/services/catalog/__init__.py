"""The catalog of business types (用电报装服务), read from data files.

Each business type is one TOML file in ``wx_backend/catalog/`` (and, optionally, in the
folder named by ``WX_CATALOG_DIR``, whose files add types or replace them by code). The
shared applicant block, attachments, customer classes and tariff flags live in
``_common.toml``. Nothing here knows any particular type: adding a type is adding a file.

The files are checked once, at start-up; a malformed file stops the process with a
message naming the file and the field (``CatalogError``). ``docs/catalogue.md`` describes
the format.

- ``model``: a business type (``ServiceType``) and the loaded catalog (``Catalog``);
- ``declarations``: the TOML format of one file, checked;
- ``loader``: which folders and files are read (``load_catalog``, ``default_dirs``);
- ``forms``: a submission's values checked against the type's fields.
"""

from .loader import BUILTIN_DIR, default_dirs, load_catalog
from .model import Catalog, CatalogError, ServiceNotFound, ServiceType, StageNotFound

__all__ = [
    "BUILTIN_DIR",
    "Catalog",
    "CatalogError",
    "ServiceNotFound",
    "ServiceType",
    "StageNotFound",
    "default_dirs",
    "load_catalog",
]
