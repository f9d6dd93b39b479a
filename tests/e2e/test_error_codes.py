"""The error vocabulary is written down where clients read it: every wire code of common/errors.h is in
the OpenAPI enum and in docs/http_api.md's table with its HTTP status, and nothing else is."""
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def table():
    text = (ROOT / "common" / "errors.h").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'X\(\w+, "([A-Z_]+)", \w+, (\d+)\)', text)}


def test_every_code_is_in_the_openapi_enum_and_nothing_else():
    spec = yaml.safe_load((ROOT / "api" / "openapi.yaml").read_text())
    enum = spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert sorted(enum) == sorted(table())


def test_every_code_is_in_the_docs_with_its_http_status():
    text = (ROOT / "docs" / "http_api.md").read_text()
    documented = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([A-Z_]+)` \| (\d{3}) \|", text, re.M)}
    assert documented == table()
