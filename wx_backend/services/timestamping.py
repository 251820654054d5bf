"""Trusted time for contract signatures: the RFC 3161 time-stamping authority and its roots.

``WX_TSA_URL`` names the TSA every signature's timestamp and the archive (document) timestamp
come from; ``WX_TSA_ROOTS`` a PEM file of the roots its certificate chains to, which the
verifier trusts for timestamps only. In dev and test, with no roots configured, the sandbox
TSA's root is trusted (``wx_backend/sandbox/tsa.py``: a fixed, public test root).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError

log = logging.getLogger(__name__)
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class Timestamping:
    url: str  # empty: no timestamps (signatures carry only the signer's claimed time)
    roots: tuple[bytes, ...]

    @classmethod
    def from_config(cls, config: Config) -> Timestamping:
        if config.tsa_roots:
            try:
                roots = tuple(_PEM.findall(Path(config.tsa_roots).read_bytes()))
            except OSError as exc:
                raise ConfigError(f"WX_TSA_ROOTS: cannot read {config.tsa_roots}: {exc}") from exc
            if not roots:
                raise ConfigError(f"WX_TSA_ROOTS: no PEM certificate in {config.tsa_roots}")
        elif config.env in ("dev", "test"):
            from ..sandbox.tsa import sandbox_root_pem

            roots = (sandbox_root_pem(),)
        elif config.tsa_url:
            raise ConfigError("WX_TSA_ROOTS is required with WX_TSA_URL (the TSA's root certificates, PEM)")
        else:
            roots = ()
        if not config.tsa_url and config.env not in ("dev", "test"):
            log.warning("WX_TSA_URL is not set: contract signatures get no trusted timestamp (PAdES B-B only)")
        return cls(url=config.tsa_url, roots=roots)
