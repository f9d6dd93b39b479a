import requests


def test_health_and_readiness(server):
    r = requests.get(server.url + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    r = requests.get(server.url + "/readyz", timeout=5)
    assert r.status_code == 200
    # libtorch is loaded by the first lossy job, not at start (it costs ~370 MB resident)
    assert r.json()["compute_device"] in ("loaded on first lossy job", "cpu", "cuda:0")


def test_unknown_route_is_a_json_404(server):
    r = requests.get(server.url + "/v1/nope", timeout=5)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "NOT_FOUND"


def test_restart_keeps_serving_the_same_data_dir(server):
    server.stop()
    server.start()
    assert requests.get(server.url + "/healthz", timeout=5).ok
