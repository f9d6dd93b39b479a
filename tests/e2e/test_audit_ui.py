"""The storage-savings audit, /metrics and /ui against the real server: upload the fixtures (a base,
a lossless finetune, a lossy finetune and an identical pair), check that the audit's figures add up
per version, model, base and in total and match the chunk store, that Prometheus counters move, and
screenshot /ui in headless chromium."""
import math
import os
import pathlib
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from client_util import Client, assert_error


def _e2e_conftest():
    """This folder's conftest as a module (`import conftest` may find another folder's when pytest
    runs several test folders at once)."""
    import importlib.util
    import sys
    name = "deltastore_e2e_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name("conftest.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


FIXTURES, Server = _e2e_conftest().FIXTURES, _e2e_conftest().Server

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FIGURES = ("logical_bytes", "stored_bytes", "saved_dedup_bytes", "same_as_base_bytes", "saved_lossless_bytes",
           "saved_lossy_bytes", "versions")


def _sums_hold(f):
    assert f["logical_bytes"] == (f["stored_bytes"] + f["saved_dedup_bytes"] + f["saved_lossless_bytes"]
                                  + f["saved_lossy_bytes"]), f
    assert f["same_as_base_bytes"] <= f["saved_dedup_bytes"], f


def _add(rows):
    out = dict.fromkeys(FIGURES, 0)
    for f in rows:
        for k in FIGURES:
            out[k] += f[k]
    return out


def _upload_fixtures(client, fixtures, lossy=True):
    out = {}
    _, out["base"] = client.register("faceres", fixtures / "faceres.bf16.safetensors", tags=["v1"])
    _, out["ft"] = client.register("faceres-deep", fixtures / "faceres-deep.bf16.safetensors",
                                   base={"model": "faceres", "version": "v1"}, tags=["latest"])
    if lossy:
        _, out["lossy"] = client.register("faceres-deep-lossy", fixtures / "faceres-deep.bf16.safetensors",
                                          base={"model": "faceres", "version": "v1"},
                                          policy={"mode": "lossy", "ratio": 16}, tags=["latest"])
    _, out["bf"] = client.register("blazeface", fixtures / "blazeface.f32.safetensors", tags=["v1"])
    _, out["bf_back"] = client.register("blazeface-back", fixtures / "blazeface-back.f32.safetensors",
                                        tags=["v1"])
    return out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One server with the fixtures uploaded (the lossy job is the slow part: done once per module)."""
    if not (FIXTURES / "faceres.bf16.safetensors").exists():
        pytest.skip(f"fixtures missing at {FIXTURES}")
    server = Server(tmp_path_factory.mktemp("audit") / "data").start()
    client = Client(server.url)
    versions = _upload_fixtures(client, FIXTURES)
    yield client, versions
    server.stop()


def test_ui_page_screenshot(loaded, tmp_path):
    client, _ = loaded
    r = client.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for needle in ("Savings per model", "faceres-deep-lossy", "Quality of lossy versions", "<svg", "saved by dedup"):
        assert needle in html, needle
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")  # no external assets
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the screenshot check needs it")
    png = tmp_path / "ui.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                           "--window-size=1280,1600", f"{client.base}/ui"],
                          capture_output=True, timeout=120)
    assert png.exists(), proc.stderr.decode(errors="replace")[-2000:]
    width, height, rows = read_png(png, max_rows=700)
    assert (width, height) == (1280, 1600)
    # The savings chart sits under the title and cards: its bars are the four legend colours.
    colours = {"stored": (0x3b, 0x42, 0x52), "dedup": (0x1f, 0x77, 0xb4), "lossless": (0x2c, 0xa0, 0x2c),
               "lossy": (0xff, 0x7f, 0x0e)}
    counts = dict.fromkeys(colours, 0)
    non_white = 0
    for row in rows:
        for px in row:
            if px != (255, 255, 255):
                non_white += 1
            for name, c in colours.items():
                if all(abs(p - q) <= 8 for p, q in zip(px, c)):
                    counts[name] += 1
    assert non_white > 0.02 * 1280 * 700, non_white
    for name, n in counts.items():
        assert n > 200, (name, counts)  # every kind of saving is drawn
    if os.environ.get("DS_SAVE_UI_SCREENSHOT"):
        shutil.copy(png, os.environ["DS_SAVE_UI_SCREENSHOT"])


def test_audit_figures_add_up_and_match_the_store(loaded):
    client, v = loaded
    fixtures = FIXTURES
    a = client.get("/v1/audit").json()
    totals, store = a["totals"], a["store"]
    _sums_hold(totals)
    # Every chunk in the store is attributed to exactly one version: the totals are the store's bytes.
    assert totals["stored_bytes"] == store["chunk_bytes"] == client.stats()["stored_bytes"], a
    assert store["unattributed_bytes"] == 0
    assert totals["versions"] == 5 and a["models"] and len(a["models"]) == 5
    # Per model and per base add up to the totals.
    by_model = {m["model"]: m["figures"] for m in a["models"]}
    for f in by_model.values():
        _sums_hold(f)
    assert _add(by_model.values()) == totals
    for b in a["bases"]:
        _sums_hold(b["figures"])
    assert _add(b["figures"] for b in a["bases"]) == totals
    families = {b["base"]["model"]: b for b in a["bases"]}
    assert sorted(families["faceres"]["models"]) == ["faceres", "faceres-deep", "faceres-deep-lossy"]
    assert families["faceres"]["base"]["digest"] == v["base"]["digest"]
    # Logical bytes are the uploaded file sizes.
    assert by_model["faceres"]["logical_bytes"] == (fixtures / "faceres.bf16.safetensors").stat().st_size
    # What each path saved, on these fixtures: the base compresses losslessly; the finetune saves by
    # delta coding (lossless) and by tensors equal to the base's (dedup); the lossy version by lossy
    # compression; blazeface-back is byte-identical to blazeface, so it stores nothing new at all.
    assert by_model["faceres"]["saved_lossless_bytes"] > 0 and by_model["faceres"]["same_as_base_bytes"] == 0
    assert by_model["faceres-deep"]["saved_lossless_bytes"] > 0
    assert by_model["faceres-deep-lossy"]["saved_lossy_bytes"] > 0
    back = by_model["blazeface-back"]
    assert back["stored_bytes"] == 0 and back["saved_dedup_bytes"] == back["logical_bytes"], back
    assert by_model["blazeface"]["stored_bytes"] > 0

    # Per model: the versions' figures add up to the model's; quality for lossy versions only.
    m = client.get("/v1/audit/models/faceres-deep-lossy").json()
    assert m["figures"] == by_model["faceres-deep-lossy"]
    (lv,) = m["versions"]
    assert lv["digest"] == v["lossy"]["digest"] and lv["mode"] == "lossy" and lv["tags"] == ["latest"]
    q = lv["quality"]
    assert q["tensors_lossy"] > 0 and q["ratio"] > 1 and q["weight_error"] > 0 and q["output_error"] > 0, q
    assert q["weight_error"] == v["lossy"]["quality"]["weight_error"]
    assert "tensors" not in q  # the per-tensor list stays with the version
    one = client.get("/v1/audit/models/faceres-deep/versions/latest").json()
    assert one["quality"] is None and one["base"] == v["base"]["digest"] and one["family"] == v["base"]["digest"]
    _sums_hold(one["figures"])
    assert one["figures"] == by_model["faceres-deep"]

    # Pagination of a model's versions.
    client.register("faceres-deep", fixtures / "faceres.bf16.safetensors", tags=["same-as-base"],
                    base={"model": "faceres", "version": "v1"})
    p1 = client.get("/v1/audit/models/faceres-deep?limit=1").json()
    assert len(p1["versions"]) == 1 and p1["next"] == p1["versions"][0]["digest"]
    p2 = client.get(f"/v1/audit/models/faceres-deep?limit=1&after={p1['next']}").json()
    assert len(p2["versions"]) == 1 and p2["next"] is None
    same = p2["versions"][0]["figures"]  # every tensor equals the base's: only its header is not dedup
    assert same["same_as_base_bytes"] > 0.99 * same["logical_bytes"], same

    # Errors.
    assert_error(client.get("/v1/audit/models/nope"), 404, "MODEL_UNKNOWN")
    assert_error(client.get("/v1/audit/models/faceres/versions/nope"), 404, "TAG_UNKNOWN")
    assert_error(client.get("/v1/audit/models/faceres?limit=0"), 400)
    assert_error(client.get("/v1/audit/models/faceres?after=x"), 400)


def test_audit_history_records_ingests_deletions_and_gc(client, fixtures):
    _, base = client.register("blazeface", fixtures / "blazeface.f32.safetensors", tags=["v1"])
    _, back = client.register("blazeface-back", fixtures / "blazeface-back.f32.safetensors")
    r = client.s.delete(client.url("/v1/models/blazeface/versions/v1"))
    assert r.status_code == 200, r.text
    r = client.s.post(client.url("/v1/gc"))
    assert r.status_code == 200, r.text
    h = client.get("/v1/audit/history").json()
    snaps = h["snapshots"]
    events = [s["event"]["event"] for s in snaps]
    assert events == ["ingest", "ingest", "delete", "gc"], events
    assert [s["id"] for s in snaps] == sorted(s["id"] for s in snaps)  # time order
    assert snaps[0]["event"]["version"] == base["digest"] and snaps[1]["event"]["model"] == "blazeface-back"
    for s in snaps:
        _sums_hold(s["totals"])
        assert s["totals"]["stored_bytes"] + s["store"]["unattributed_bytes"] == s["store"]["chunk_bytes"]
    # After the second (identical) upload the logical total doubled and the stored bytes did not move.
    assert snaps[1]["totals"]["logical_bytes"] == 2 * snaps[0]["totals"]["logical_bytes"]
    assert snaps[1]["totals"]["stored_bytes"] == snaps[0]["totals"]["stored_bytes"]
    # Deleting the first owner moves its chunks to the copy that remains: nothing was freed.
    assert snaps[2]["event"]["bytes_freed"] == 0
    assert snaps[2]["totals"]["stored_bytes"] == snaps[0]["totals"]["stored_bytes"]
    a = client.get("/v1/audit").json()
    assert a["models"][0]["model"] == "blazeface-back" and a["models"][0]["figures"]["saved_dedup_bytes"] == 0
    # Pagination.
    p1 = client.get("/v1/audit/history?limit=3").json()
    assert len(p1["snapshots"]) == 3 and p1["next"] == p1["snapshots"][-1]["id"]
    p2 = client.get(f"/v1/audit/history?limit=3&after={p1['next']}").json()
    assert [s["id"] for s in p2["snapshots"]] == [snaps[3]["id"]] and p2["next"] is None


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(text):
    """A strict reader of the text format 0.0.4: returns {(name, frozenset(labels)): value} and the
    declared types; fails on anything malformed."""
    samples, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, line
        name, labels = m.group(1), {}
        if m.group(3):
            pos, body = 0, m.group(3)
            while pos < len(body):
                lm = LABEL.match(body, pos)
                assert lm, line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} before its # TYPE"
        value = float(m.group(4))  # accepts +Inf/NaN as Prometheus writes them
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = value
    return samples, types


def _get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_are_prometheus_text_and_counters_move(client, fixtures):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    before, types = parse_prometheus(r.text)
    assert types["deltastore_http_requests_total"] == "counter"
    assert types["deltastore_http_request_duration_seconds"] == "histogram"
    _, version = client.register("faceres", fixtures / "faceres.bf16.safetensors", tags=["v1"])
    for _ in range(3):
        assert client.get("/v1/models/faceres").status_code == 200
    assert client.get("/v1/nothing-here").status_code == 404
    after, _ = parse_prometheus(client.get("/metrics").text)
    route = "/v1/models/{model}"
    assert _get(after, "deltastore_http_requests_total", method="GET", route=route, status="200") - \
        _get(before, "deltastore_http_requests_total", method="GET", route=route, status="200") == 3
    assert _get(after, "deltastore_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    up = _get(after, "deltastore_http_request_body_bytes_total", method="POST", route="/v1/uploads")
    assert up == (fixtures / "faceres.bf16.safetensors").stat().st_size
    assert _get(after, "deltastore_http_response_body_bytes_total", method="GET", route=route) > 0
    # The histogram is cumulative and its +Inf bucket is its count.
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "deltastore_http_request_duration_seconds_bucket"
                     and dict(k[1])["route"] == route and dict(k[1])["method"] == "GET")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and math.isinf(buckets[-1][0])
    assert buckets[-1][1] == _get(after, "deltastore_http_request_duration_seconds_count", method="GET",
                                  route=route)
    # Store gauges agree with the audit.
    a = client.get("/v1/audit").json()
    assert _get(after, "deltastore_stored_bytes") == a["totals"]["stored_bytes"] > 0
    assert _get(after, "deltastore_chunk_store_bytes") == a["store"]["chunk_bytes"]
    assert _get(after, "deltastore_logical_bytes") == a["totals"]["logical_bytes"]
    assert _get(after, "deltastore_saved_bytes", kind="lossless") == a["totals"]["saved_lossless_bytes"]
    assert _get(after, "deltastore_model_logical_bytes", model="faceres") == version["logical_bytes"]
    assert _get(after, "deltastore_jobs_queued") == 0 and _get(after, "deltastore_jobs_running") == 0
    assert _get(after, "deltastore_audit_up") == 1


def read_png(path, max_rows=None):
    """Decodes an 8-bit RGB/RGBA, non-interlaced PNG with the standard library: (width, height, rows),
    rows as lists of RGB tuples (the first `max_rows` only, when given)."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = ihdr
    assert depth == 8 and color in (2, 6) and interlace == 0, ihdr
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(min(height, max_rows or height)):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows
