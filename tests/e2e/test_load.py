"""A tiny bounded run of bench/load_test.py: parallel uploads, version jobs and downloads against one
server, every download checked against its source's sha256. No timing is asserted (figures:
bench/README.md)."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_test_module():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "bench" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parallel_clients_get_no_errors_and_verified_downloads(server, fixtures):
    load_test = _load_test_module()
    clients, rounds, per_round = 4, 2, 2
    res = load_test.run(server.url, server.proc.pid, fixtures, clients=clients, rounds=rounds,
                        downloads_per_round=per_round, time_limit=600, fixture_set="small")
    assert res["errors"] == [], res["errors"]
    assert res["versions_created"] == clients * rounds, res
    assert res["downloads_verified"] == clients * rounds * per_round, res
    assert res["server_peak_rss_mib"] is not None and res["server_peak_rss_mib"] > 0, res
