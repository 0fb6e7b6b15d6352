"""A stand-in for `curl`, for the README test on machines without one (a minimal Debian
with python3 and uv has none).

It takes exactly the options the README's API block uses — `-s`, `-i`, `-X METHOD`,
`-H HEADER`, `-d DATA`, `-w FORMAT` (only `%{http_code}` and `\\n`), bundled short
options like `-sH` included — with curl's meaning: `-d` makes a POST and, without a
`Content-Type` header, sends `application/x-www-form-urlencoded`; a non-2xx answer is
printed like any other (no `-f`); `-i` prints the status line and headers first. Any
other option is refused with exit code 2, so the README cannot start relying on one
this does not implement.

    python tests/curl_stand_in.py -sH "Authorization: Bearer k" http://127.0.0.1:8000/healthz
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from http.client import HTTPResponse

FLAGS = {"s", "i"}
WITH_VALUE = {"X", "H", "d", "w"}


class Usage(Exception):
    pass


def parse(argv: list[str]) -> tuple[dict[str, list[str]], set[str], str]:
    values: dict[str, list[str]] = {k: [] for k in WITH_VALUE}
    flags: set[str] = set()
    urls: list[str] = []
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            urls.append(arg)
            continue
        letters = arg[1:]
        for pos, letter in enumerate(letters):
            if letter in FLAGS:
                flags.add(letter)
            elif letter in WITH_VALUE:
                rest = letters[pos + 1 :]
                value = rest if rest else next(args, None)
                if value is None:
                    raise Usage(f"option -{letter} needs a value")
                values[letter].append(value)
                break
            else:
                raise Usage(f"option -{letter} is not implemented by this stand-in ({arg})")
    if len(urls) != 1:
        raise Usage(f"expected one URL, got {urls}")
    return values, flags, urls[0]


def main(argv: list[str]) -> int:
    try:
        values, flags, url = parse(argv)
    except Usage as e:
        print(f"curl stand-in: {e}", file=sys.stderr)
        return 2
    data = values["d"][-1].encode() if values["d"] else None
    method = values["X"][-1] if values["X"] else ("POST" if data is not None else "GET")
    req = urllib.request.Request(url, data=data, method=method)
    for header in values["H"]:
        name, _, value = header.partition(":")
        req.add_header(name.strip(), value.strip())
    if data is not None and not req.has_header("Content-type"):
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    resp: HTTPResponse | urllib.error.HTTPError | None
    try:
        resp = urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:  # a non-2xx answer: printed like any other, as curl does
        resp = e
    except OSError as e:
        if "s" not in flags:
            print(f"curl: {e}", file=sys.stderr)
        resp = None
    out = sys.stdout.buffer
    code = 0
    if resp is not None:
        code = resp.status or 0
        if "i" in flags:
            out.write(f"HTTP/1.1 {resp.status} {resp.reason}\r\n".encode())
            for name, value in resp.headers.items():
                out.write(f"{name}: {value}\r\n".encode())
            out.write(b"\r\n")
        out.write(resp.read())
    for fmt in values["w"]:
        out.write(fmt.replace("%{http_code}", f"{code:03d}").replace("\\n", "\n").encode())
    out.flush()
    return 0 if resp is not None else 7  # curl's "failed to connect"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
