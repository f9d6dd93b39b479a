"""Constants and helpers shared by the client's modules."""
import hashlib
import os
import re
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:8080"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout,
                  requests.exceptions.ChunkedEncodingError)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MiB = 1 << 20


def _q(segment):
    return quote(str(segment), safe=":@")


def sha256_file(path, block=8 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def _code(r):
    try:
        return (r.json().get("errors") or [{}])[0].get("code")
    except ValueError:
        return None


def _unlink(p):
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
