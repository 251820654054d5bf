"""Render the repository's nginx.conf for a local or staging run on other ports and paths.

    python -m scripts.render_nginx --prefix var/nginx --http-port 8080 --https-port 8443 \\
        --upstream 127.0.0.1:8000 --upstream 127.0.0.1:8001 \\
        --cert var/tls/cert.pem --key var/tls/key.pem --allow 127.0.0.1
    nginx -p var/nginx -c "$PWD/var/nginx/nginx.conf" -g 'daemon off;'

Production uses nginx.conf as it is (docs/deploy.md); this changes only the marked blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wx_backend.front import local_values, render_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=Path, required=True, help="folder for the config, logs, pid, temp files")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--upstream", action="append", default=[], help="host:port of an app process (repeat)")
    parser.add_argument("--cert", type=Path, required=True, help="certificate chain (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="certificate key (PEM)")
    parser.add_argument("--allow", action="append", default=[], help="network allowed to reach /internal/ (repeat)")
    args = parser.parse_args()
    prefix = args.prefix.resolve()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    values = local_values(
        prefix,
        http_port=args.http_port,
        https_port=args.https_port,
        bind=args.bind,
        upstreams=args.upstream or ["127.0.0.1:8000"],
        certificate=args.cert.resolve(),
        certificate_key=args.key.resolve(),
        internal_allow=args.allow,
    )
    out = render_file(values, prefix / "nginx.conf")
    print(out)


if __name__ == "__main__":
    main()
