"""The nginx front: render the repository's ``nginx.conf`` for other ports, paths and networks.

``nginx.conf`` holds the production values. The lines a deployment or a test changes sit between
``# BEGIN render:<name>`` and ``# END render:<name>``; :func:`render` replaces the contents of
named blocks and leaves every other byte alone, so a test or a staging host runs the production
file itself with its own ports, upstreams, certificate, allow list and file locations.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .embedded import ROOT

NGINX_CONF = ROOT / "nginx.conf"

_BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN render:(?P<name>[a-z_]+)\s*$")
_END = re.compile(r"^\s*# END render:(?P<name>[a-z_]+)\s*$")


class RenderError(ValueError):
    """The template's markers are unbalanced or a value names no block."""


def blocks(text: str) -> dict[str, list[str]]:
    """The renderable blocks of ``text``: name -> the lines between its markers."""
    found: dict[str, list[str]] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if current is not None:
                raise RenderError(f"line {number}: block {begin['name']!r} opens inside {current!r}")
            current = begin["name"]
            if current in found:
                raise RenderError(f"line {number}: block {current!r} appears twice")
            found[current] = []
        elif end:
            if end["name"] != current:
                raise RenderError(f"line {number}: END {end['name']!r} does not close {current!r}")
            current = None
        elif current is not None:
            found[current].append(line)
    if current is not None:
        raise RenderError(f"block {current!r} is never closed")
    return found


def render(text: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """``text`` with the named blocks' contents replaced by ``values`` (directive lines).

    A value is one directive or a list of them, without indentation (the block's is used).
    Blocks not named keep their production contents; a name with no block is an error.
    """
    unknown = set(values) - set(blocks(text))
    if unknown:
        raise RenderError(f"no such block in the template: {', '.join(sorted(unknown))}")
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        begin = _BEGIN.match(line)
        if begin and begin["name"] in values:
            out.append(line)
            value = values[begin["name"]]
            for directive in [value] if isinstance(value, str) else value:
                out.append(f"{begin['indent']}{directive}\n")
            skipping = True
            continue
        if skipping and _END.match(line):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


def local_values(
    prefix: Path,
    *,
    http_port: int,
    https_port: int,
    upstreams: Iterable[str],
    certificate: Path,
    certificate_key: Path,
    internal_allow: Iterable[str],
    bind: str = "127.0.0.1",
) -> dict[str, str | list[str]]:
    """Values for an unprivileged copy on loopback: every file under ``prefix``.

    ``upstreams`` are ``host:port`` of the app processes; ``internal_allow`` are the addresses
    or networks allowed to reach ``/internal/`` (everything else gets 403).
    """
    prefix = Path(prefix)
    temp = prefix / "temp"
    return {
        # as root, workers would otherwise switch to nobody and lose access to the prefix
        "user": f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else "# user: unprivileged run",
        "worker_processes": "worker_processes 1;",
        "pid": f"pid {prefix / 'nginx.pid'};",
        "error_log": f"error_log {prefix / 'error.log'} info;",
        "temp_paths": [
            f"{name}_temp_path {temp / short};"
            for name, short in (
                ("client_body", "body"),
                ("proxy", "proxy"),
                ("fastcgi", "fastcgi"),
                ("uwsgi", "uwsgi"),
                ("scgi", "scgi"),
            )
        ],
        "access_log": f"access_log {prefix / 'access.log'} wx;",
        "listen_http": f"listen {bind}:{http_port} default_server;",
        "listen_https": f"listen {bind}:{https_port} ssl http2 default_server;",
        "tls_certificate": [f"ssl_certificate     {certificate};", f"ssl_certificate_key {certificate_key};"],
        "upstream": [f"server {server} max_fails=1 fail_timeout=10s;" for server in upstreams],
        "internal_allow": [f"allow {network};" for network in internal_allow],
    }


def render_file(values: Mapping[str, str | Sequence[str]], out: Path, template: Path = NGINX_CONF) -> Path:
    """Render ``template`` (the repository's nginx.conf) with ``values`` into ``out``."""
    out = Path(out)
    out.write_text(render(template.read_text(encoding="utf-8"), values), encoding="utf-8")
    return out
