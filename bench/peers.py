#!/usr/bin/env python3
"""deltastore against its peers, side by side in one run (a benchmark: it prints figures, asserts nothing).

    /opt/deltastore/venv/bin/python bench/peers.py [--size-gb 1] [--reps 2] [--skip lossless,zipnn,...]

Sections (each can be skipped with --skip NAME):
  lossless      build/bench/codec_peers on the fixture pairs (bf16, f32) and on a generated bf16 pair
                (bench/gen_pair.py, --size-gb) and the small-delta pair (bench/gen_small_delta.py): zstd -1/-3/-9,
                byte planes + zstd-3, ours-max (adaptive float coder) and ours-fast (rANS, the default); base alone and
                finetune as a delta; one thread; per-tensor order-0 entropy of the base.
  zipnn         ZipNN (PyPI zipnn, threads=1) on the same inputs: each tensor's bytes with its dtype,
                base alone and the finetune in ZipNN's delta mode (delta_compressed_type="byte": XOR
                with the base, then its byte grouping + Huffman/zstd).
  streaming     deltastored on loopback with the generated pair: upload (curl, one request), version
                creation, download (curl to /dev/null) of the base version and of the delta version
                (first, then again; both read the file cache, the server's default, unless
                --server-arg=--file-cache-gb=0 makes them rebuild the file),
                against `cat file > /dev/null` and nginx (Debian's nginx-light, static file GET and
                WebDAV PUT on loopback); the server's peak RSS during ingest and during download
                (VmHWM, reset through /proc/<pid>/clear_refs between the phases).
  deltatensors  PyPI deltatensors' three modes (int4 + 1% outliers, sparse 90%, 1-bit "quantized") on
                the faceres pairs (f32, bf16) and the self-trained pairs (/tmp/deltastore-pairs, see
                bench/pairs): stored bytes, time, weight error, output error (random inputs, as
                build/bench/lossy_pair defines them), gain kept on the self-trained pairs.
  plots         PNGs in bench/results/: ratio vs compress throughput (lossless), gain kept vs ratio
                (lossy, from results/lossy_mlp_*.md and the deltatensors rows).

Writes bench/results/peers.md (the tables), bench/results/peers.json (every row) and the plots.
The lossy tables of bench/README.md are made by build/bench/lossy_pair and bench/lossy_bench.py; see
bench/run_all.sh, which runs those and this script.
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
FIXTURES = ROOT.parent / "shared" / "fixtures"
RESULTS = HERE / "results"
MB = 1e6
MiB = 1 << 20


def log(*a):
    print(*a, flush=True)


def reps_for(args, label):
    return args.gen_reps if label.startswith("generated") else args.reps


def best_of(reps, fn):
    best, out = None, None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return out, best


# --- inputs --------------------------------------------------------------------------------------------

def inputs(args):
    out = []
    for dt in ("bf16", "f32"):
        b, f = FIXTURES / f"faceres.{dt}.safetensors", FIXTURES / f"faceres-deep.{dt}.safetensors"
        if b.exists() and f.exists():
            out.append((f"faceres.{dt}", b, f))
        else:
            log(f"skipping faceres.{dt}: {b} or {f} missing")
    if args.size_gb > 0:
        import gen_pair

        gdir = pathlib.Path(args.gen_dir)
        log(f"generating {args.size_gb} GiB bf16 pair in {gdir} (bench/gen_pair.py) ...")
        b, f, _ = gen_pair.generate(gdir, args.size_gb, args.largest_mib, 1)
        out.append((f"generated-{args.size_gb:g}GiB.bf16", b, f))
    # The "small-delta" pair (issue 13): the faceres base with 1% noise per tensor, every weight touched.
    sdir = pathlib.Path(args.gen_dir) / "small-delta"
    if not (sdir / "finetune.bf16.safetensors").exists():
        log(f"generating the small-delta pair in {sdir} (bench/gen_small_delta.py) ...")
        subprocess.run([sys.executable, str(HERE / "gen_small_delta.py"), str(sdir)], check=True)
    for dt in ("bf16", "f32"):
        out.append((f"small-delta.{dt}", sdir / f"base.{dt}.safetensors", sdir / f"finetune.{dt}.safetensors"))
    return out


def read_tensors(path):
    """[(name, dtype, shape, bytes)] in data order, from a safetensors file."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        hdr = json.loads(fh.read(n))
        hdr.pop("__metadata__", None)
        start = 8 + n
        items = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
        for name, t in items:
            a, b = t["data_offsets"]
            fh.seek(start + a)
            yield name, t["dtype"], t["shape"], fh.read(b - a)


# --- lossless ------------------------------------------------------------------------------------------

def run_lossless(args, ins, rows):
    exe = pathlib.Path(args.build_dir) / "bench" / "codec_peers"
    if not exe.exists():
        log(f"lossless: {exe} missing (cmake --build build --target codec_peers)")
        return
    for label, b, f in ins:
        jpath = pathlib.Path(tempfile.mktemp(suffix=".jsonl"))
        cmd = [str(exe), str(b), str(f), "--label", label, "--reps", str(reps_for(args, label)), "--json", str(jpath)]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, check=False)
        if jpath.exists():
            for line in jpath.read_text().splitlines():
                r = json.loads(line)
                r["section"] = "lossless"
                rows.append(r)
            jpath.unlink()


ZIPNN_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def run_zipnn(args, ins, rows):
    try:
        import zipnn
    except ImportError as e:
        log(f"zipnn: not installed ({e}); pip install -r bench/requirements.txt")
        return
    version = getattr(zipnn, "__version__", None)
    if version is None:
        from importlib.metadata import version as v

        version = v("zipnn")
    for label, bpath, fpath in ins:
        for case in ("base", "delta"):
            raw = stored = 0
            enc_s = dec_s = 0.0
            ok = True
            base_iter = read_tensors(bpath)
            for name, dtype, shape, data in read_tensors(fpath if case == "delta" else bpath):
                bdata = next(base_iter)[3] if case == "delta" else None
                zdt = ZIPNN_DTYPES.get(dtype, "float32")  # I32 shape tensors: 4-byte words
                kw = dict(input_format="byte", bytearray_dtype=zdt, threads=1)
                if case == "delta":
                    kw["delta_compressed_type"] = "byte"
                z = zipnn.ZipNN(**kw)
                # ZipNN 0.5.4 reorders the bits of its input buffer in place (even of a `bytes` object),
                # so every timed call gets its own copy, made outside the timer.
                te = td = None
                for _ in range(reps_for(args, label)):
                    src = bytearray(data)
                    t0 = time.perf_counter()
                    enc = bytes(z.compress(src, delta_second_data=bdata) if bdata else z.compress(src))
                    t1 = time.perf_counter()
                    del src
                    enc_in = bytearray(enc)
                    t2 = time.perf_counter()
                    dec = z.decompress(enc_in, delta_second_data=bdata) if bdata else z.decompress(enc_in)
                    t3 = time.perf_counter()
                    te = t1 - t0 if te is None else min(te, t1 - t0)
                    td = t3 - t2 if td is None else min(td, t3 - t2)
                ok &= bytes(dec) == data
                raw += len(data)
                stored += len(enc)
                enc_s += te
                dec_s += td
            r = dict(section="lossless", input=label, case=case, method=f"zipnn-{version}", raw=raw,
                     stored=stored, enc_s=enc_s, dec_s=dec_s, ok=ok)
            rows.append(r)
            log(f"{label:28s} {case:6s} {r['method']:14s} {raw / stored:7.3f}x "
                f"{raw / enc_s / MB:8.1f} {raw / dec_s / MB:8.1f} MB/s{'' if ok else '  ROUND TRIP FAILED'}")


# --- streaming -----------------------------------------------------------------------------------------

NGINX_CONF = """daemon off;
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  sendfile on;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location /up/ {{ dav_methods PUT; create_full_put_path on; }}
  }}
}}
"""


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def curl(*a):
    """Runs curl, returns (seconds, bytes moved) from its own timers."""
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w",
                          "%{time_total} %{size_download} %{size_upload} %{http_code}", *a],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2]), out[3]


def curl_json(*a):
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "-w", "\n%{time_total}", *a], check=True,
                         capture_output=True, text=True).stdout
    body, t = out.rsplit("\n", 1)
    return json.loads(body), float(t)


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(16 * MiB):
            h.update(b)
    return h.hexdigest()


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (/proc/<pid>/stat): a figure that load moves less than MB/s."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def server_steps(args, tag, binary, data_dir, label, bpath, fpath, size, reps, shas, add, rows, procs):
    """Upload, version creation and downloads through one deltastored binary (a fresh data dir)."""
    import requests
    from http_throughput import Server, create_version

    srv = Server(binary, data_dir, data_dir.parent / "server.log", args.server_arg)
    srv.start()
    procs.append(srv)
    url = srv.url
    pid = srv.proc.pid
    s = requests.Session()
    versions = {}
    reset_peak(pid)
    for name, p, base in (("base", bpath, None), ("finetune", fpath, "base")):
        sha = shas.setdefault(name, sha256_file(p))
        doc, t = curl_json("-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", str(p),
                           f"{url}/v1/uploads?digest=sha256:{sha}")
        add(f"{tag}upload {name} (curl, one request, sha256 checked)", t, size)
        t0, c0 = time.perf_counter(), cpu_seconds(pid)
        v, info = create_version(s, url, "bench", doc["id"], {"model": "bench", "version": versions[base]} if base else None, 3600)
        add(f"{tag}create {name} version ({'delta' if base else 'standalone'} job)", time.perf_counter() - t0, size,
            f"stored {info.get('stored_bytes', '?')} B; server CPU {(cpu_seconds(pid) - c0) / (size / 1e9):.2f} s/GB")
        versions[name] = v
    rss_ingest = srv.peak_rss()
    rows.append(dict(section="streaming", input=label, step=f"{tag}peak RSS upload + ingest", bytes=rss_ingest))
    log(f"{tag}peak RSS during upload + ingest: {rss_ingest / MiB:.1f} MiB")
    reset_peak(pid)
    # The server's file cache is on unless --server-arg=--file-cache-gb=0 (its default is auto).
    cache = not any(a.replace(" ", "=") == "--file-cache-gb=0" for a in args.server_arg or [])
    for name in ("base", "finetune"):
        u = f"{url}/v1/models/bench/versions/{versions[name]}/files/model.safetensors"
        # Without a file cache (--server-arg=--file-cache-gb=0) every download rebuilds the file. With one,
        # these lossless versions entered it when they were created, so even the first reads it.
        for which, n_reps in (("first", 1), ("again", max(1, reps - 1))):
            ts = []
            c0 = cpu_seconds(pid)
            for _ in range(n_reps):
                t, n, _, code = curl(u)
                if n != size:
                    raise RuntimeError(f"download of {name}: {n} bytes, expected {size}")
                ts.append(t)
            cpu = (cpu_seconds(pid) - c0) / (n_reps * size / 1e9)
            how = ("from the file cache, its XXH3-128 checked on the way" if cache
                   else "rebuilt, sha256 checked on the way")
            add(f"{tag}download {name} version, {which} (curl > /dev/null)", min(ts), size,
                f"{how}; server CPU {cpu:.2f} s/GB")
    rss_dl = srv.peak_rss()
    rows.append(dict(section="streaming", input=label, step=f"{tag}peak RSS download", bytes=rss_dl))
    log(f"{tag}peak RSS during downloads: {rss_dl / MiB:.1f} MiB")
    srv.stop()
    procs.remove(srv)
    shutil.rmtree(data_dir, ignore_errors=True)


def run_streaming(args, ins, rows):
    import requests

    gen = [i for i in ins if i[0].startswith("generated")]
    if not gen:
        log("streaming: needs the generated pair (--size-gb > 0)")
        return
    label, bpath, fpath = gen[-1]
    reps = args.gen_reps
    size = bpath.stat().st_size
    work = pathlib.Path(tempfile.mkdtemp(prefix="ds-peers-", dir=args.work_dir))
    work.chmod(0o755)  # nginx's workers read the files through it
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = []

    def add(step, seconds, nbytes, note=""):
        r = dict(section="streaming", input=label, step=step, seconds=seconds, bytes=nbytes,
                 mbps=nbytes / seconds / MB if seconds else None, note=note)
        rows.append(r)
        log(f"{step:44s} {r['mbps']:9.1f} MB/s  {seconds:8.2f} s  {note}")

    try:
        for name, p in (("base", bpath), ("finetune", fpath)):
            _, t = best_of(max(reps, 2), lambda: subprocess.run(f"cat '{p}' > /dev/null", shell=True, check=True))
            add(f"cat {name} > /dev/null", t, size)
        # nginx: static GET and WebDAV PUT on loopback.
        if os.path.exists(nginx_bin):
            nd = work / "nginx"
            (nd / "www" / "up").mkdir(parents=True)
            os.symlink(bpath, nd / "www" / "base.safetensors")
            os.symlink(fpath, nd / "www" / "finetune.safetensors")
            port = free_port()
            (nd / "nginx.conf").write_text(NGINX_CONF.format(d=nd, port=port, user="user root;" if os.geteuid() == 0 else ""))
            ng = subprocess.Popen([nginx_bin, "-c", str(nd / "nginx.conf"), "-e", str(nd / "error.log")],
                                  stderr=subprocess.DEVNULL)
            procs.append(ng)
            for _ in range(100):
                try:
                    requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.05)
            nver = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
            best = min(curl(f"http://127.0.0.1:{port}/finetune.safetensors")[0] for _ in range(max(reps, 2)))
            add("nginx GET raw finetune (curl > /dev/null)", best, size, nver)
            best = min(curl("-T", str(fpath), f"http://127.0.0.1:{port}/up/ft.safetensors")[0]
                       for _ in range(max(reps, 2)))
            add("nginx PUT raw finetune (WebDAV, curl -T)", best, size, nver)
            (nd / "www" / "up" / "ft.safetensors").unlink(missing_ok=True)
        else:
            log(f"streaming: {nginx_bin} missing (apt-get install nginx-light); nginx rows skipped")

        servers = [("", pathlib.Path(args.build_dir) / "server" / "deltastored")]
        if args.baseline_server:
            servers.append((f"[{args.baseline_label}] ", pathlib.Path(args.baseline_server)))
        shas = {}
        for tag, binary in servers:
            server_steps(args, tag, binary, work / f"data{len(tag)}", label, bpath, fpath, size, reps, shas, add,
                         rows, procs)
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                p.terminate()
                p.wait()
            else:
                p.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- deltatensors --------------------------------------------------------------------------------------

def load_sd(path):
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in load_file(str(path)).items()}


def quality(base, ft, rec, rng):
    """Weight and output error over 2-D+ float tensors, as build/bench/lossy_pair defines them:
    sqrt(sum ||rec - ft||^2 / sum ||ft - base||^2), and the same for (.) @ X with X ~ N(0,1), 64 columns."""
    e2 = d2 = o2 = dx2 = 0.0
    for k, b in base.items():
        if b.ndim < 2 or b.shape[0] < 2 or b.size // b.shape[0] < 2:
            continue
        rows = b.shape[0]
        D = (ft[k] - b).reshape(rows, -1).astype(np.float64)
        E = (rec[k].astype(np.float32) - ft[k]).reshape(rows, -1).astype(np.float64)
        X = rng.standard_normal((D.shape[1], 64))
        e2 += (E ** 2).sum()
        d2 += (D ** 2).sum()
        o2 += ((E @ X) ** 2).sum()
        dx2 += ((D @ X) ** 2).sum()
    return float(np.sqrt(e2 / d2)), float(np.sqrt(o2 / dx2))


def run_deltatensors(args, rows):
    try:
        import deltatensors as dt
    except ImportError as e:
        log(f"deltatensors: not installed ({e}); pip install -r bench/requirements.txt")
        return
    import contextlib
    import io

    pairs = []
    for d in ("f32", "bf16"):
        b, f = FIXTURES / f"faceres.{d}.safetensors", FIXTURES / f"faceres-deep.{d}.safetensors"
        if b.exists():
            pairs.append((f"faceres.{d}", b, f, None))
    pdir = pathlib.Path(args.pairs_dir)
    for p in ("mlp", "tfm"):
        if (pdir / f"{p}.base.safetensors").exists():
            pairs.append((p, pdir / f"{p}.base.safetensors", pdir / f"{p}.ft.safetensors", p))
        else:
            log(f"deltatensors: {pdir}/{p}.* missing (bench/pairs/make_pairs.py); pair skipped")
    modes = [("int4", {"outlier_fraction": 0.01}), ("sparse", {"sparsity": 0.9}), ("quantized", {})]
    rng_seed = 7
    for label, bp, fp, pair in pairs:
        base, ft = load_sd(bp), load_sd(fp)
        acc = None
        if pair:
            sys.path.insert(0, str(HERE / "pairs"))
            from evaluate import accuracy_state_dict as accuracy

            acc = (accuracy(pair, base, args.pairs_dir), accuracy(pair, ft, args.pairs_dir))
        for mode, kw in modes:
            out = pathlib.Path(tempfile.mktemp(suffix=".wdelta"))
            note = ""
            fsd, bsd = ft, base
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    dt.save_delta(out, fsd, bsd, strategy=mode, use_gpu=False, **kw)
            except ValueError as e:
                # deltatensors 0.2.0 int4: "zero-size array to reduction operation minimum" on one-value
                # tensors (its single outlier leaves nothing to quantize). Those tensors are left out.
                fsd = {k: v for k, v in ft.items() if v.size >= 2}
                bsd = {k: base[k] for k in fsd}
                note = f"{len(ft) - len(fsd)} one-value tensors left out ({type(e).__name__}: {e})"
            with contextlib.redirect_stdout(io.StringIO()):
                _, te = best_of(args.reps, lambda: dt.save_delta(out, fsd, bsd, strategy=mode, use_gpu=False, **kw))
                rec, td = best_of(args.reps, lambda: dt.load_delta(out, bsd))
            rec = {**{k: ft[k] for k in ft if k not in rec}, **rec}
            stored = out.stat().st_size
            out.unlink()
            we, oe = quality(base, ft, rec, np.random.default_rng(rng_seed))
            r = dict(section="deltatensors", input=label, method=f"deltatensors {mode}",
                     params=kw, ft_bytes=fp.stat().st_size, stored=stored, enc_s=te, dec_s=td,
                     weight_err=we, output_err=oe, note=note)
            if acc:
                a = accuracy(pair, rec, args.pairs_dir)
                r.update(acc_base=acc[0], acc_ft=acc[1], acc=a, gain_kept=(a - acc[0]) / (acc[1] - acc[0]))
            rows.append(r)
            log(f"{label:12s} {mode:9s} stored {stored:11d} B ({r['ft_bytes'] / stored:6.2f}x of the finetune file) "
                f"enc {te:6.2f} s dec {td:6.2f} s  weight err {we:.3f} output err {oe:.3f}"
                + (f"  gain kept {100 * r['gain_kept']:.1f}%" if acc else "") + (f"  [{note}]" if note else ""))


# --- tables and plots ----------------------------------------------------------------------------------

def tables(rows, args):
    md = []
    loss = [r for r in rows if r["section"] == "lossless"]
    for label in dict.fromkeys(r["input"] for r in loss):
        for case in ("base", "delta"):
            sel = [r for r in loss if r["input"] == label and r["case"] == case]
            if not sel:
                continue
            md.append(f"\n**{label}, {'base alone' if case == 'base' else 'finetune as a delta of the base'}** "
                      f"({sel[0]['raw']:,} tensor bytes)\n")
            md.append("| method | stored B | ratio | compress MB/s | decompress MB/s |")
            md.append("|---|---|---|---|---|")
            for r in sel:
                if r["method"] == "order0-entropy":
                    md.append(f"| per-tensor order-0 entropy (limit) | {r['stored']:,.0f} | {r['raw'] / r['stored']:.3f}x | | |")
                    continue
                md.append(f"| {r['method']}{'' if r['ok'] else ' (ROUND TRIP FAILED)'} | {r['stored']:,} | "
                          f"{r['raw'] / r['stored']:.3f}x | {r['raw'] / r['enc_s'] / MB:.1f} | {r['raw'] / r['dec_s'] / MB:.1f} |")
    st = [r for r in rows if r["section"] == "streaming"]
    if st:
        md.append(f"\n**Streaming over loopback, {st[0]['input']}** (best of {args.gen_reps})\n")
        md.append("| step | MB/s | seconds | note |")
        md.append("|---|---|---|---|")
        for r in st:
            if "seconds" in r:
                md.append(f"| {r['step']} | {r['mbps']:.1f} | {r['seconds']:.2f} | {r['note']} |")
        for r in st:
            if "seconds" not in r:
                md.append(f"| {r['step']} | {r['bytes'] / MiB:.1f} MiB | | |")
    dtr = [r for r in rows if r["section"] == "deltatensors"]
    if dtr:
        md.append("\n**deltatensors** (ratio = finetune file bytes / .wdelta bytes)\n")
        md.append("| pair | mode | stored B | ratio | save s | load s | weight err | output err | gain kept | note |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in dtr:
            g = f"{100 * r['gain_kept']:.1f}%" if "gain_kept" in r else ""
            md.append(f"| {r['input']} | {r['method']} | {r['stored']:,} | {r['ft_bytes'] / r['stored']:.2f}x | "
                      f"{r['enc_s']:.2f} | {r['dec_s']:.2f} | {r['weight_err']:.3f} | {r['output_err']:.3f} | {g} | {r.get('note', '')} |")
    return "\n".join(md) + "\n"


def parse_lossy_md(path):
    """{method: [(ratio over the whole file, gain kept %)]} from a bench/lossy_bench.py markdown table."""
    out = {}
    if not path.exists():
        return out
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    if len(lines) < 3:
        return out
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    for l in lines[2:]:
        cells = dict(zip(head, (c.strip().replace("*", "") for c in l.strip("|").split("|"))))
        try:
            out.setdefault(cells["method"], []).append(
                (float(cells["ratio_all"].rstrip("x")), float(cells["gain kept"].rstrip("%"))))
        except (KeyError, ValueError):
            pass
    return out


def plots(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    loss = [r for r in rows if r["section"] == "lossless" and r["method"] != "order0-entropy"]
    made = []
    if loss:
        labels = list(dict.fromkeys(r["input"] for r in loss))
        fig, axes = plt.subplots(len(labels), 2, figsize=(11, 3.6 * len(labels)), squeeze=False)
        for i, label in enumerate(labels):
            for j, case in enumerate(("base", "delta")):
                ax = axes[i][j]
                for r in loss:
                    if r["input"] != label or r["case"] != case:
                        continue
                    x, y = r["raw"] / r["enc_s"] / MB, r["raw"] / r["stored"]
                    ours = r["method"].startswith("ours")
                    ax.scatter([x], [y], s=60 if ours else 30, marker="*" if ours else "o")
                    ax.annotate(r["method"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                    ax.scatter([r["raw"] / r["dec_s"] / MB], [y], s=12, marker="x", color="gray")
                ent = [r for r in rows if r.get("method") == "order0-entropy" and r["input"] == label]
                if case == "base" and ent:
                    ax.axhline(ent[0]["raw"] / ent[0]["stored"], ls="--", lw=0.8, color="gray")
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_title(f"{label} {case}", fontsize=9)
                ax.set_xlabel("compress MB/s, one thread (x: decompress)", fontsize=8)
                ax.set_ylabel("ratio", fontsize=8)
        fig.tight_layout()
        p = RESULTS / "lossless_ratio_vs_speed.png"
        fig.savefig(p, dpi=110)
        made.append(p)
    lossy = {}
    for k, v in parse_lossy_md(RESULTS / "lossy_mlp_before_rule.md").items():
        lossy[f"{k}, first version (before the 2-bit rule)" if k.startswith("deltadq") else k] = v
    for k, v in parse_lossy_md(RESULTS / "lossy_mlp_ours.md").items():
        lossy[f"ours: {k}"] = v
    dtr = [r for r in rows if r["section"] == "deltatensors" and "gain_kept" in r and r["input"] == "mlp"]
    if lossy or dtr:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, pts in lossy.items():
            pts = sorted(pts)
            ours, old = k.startswith("ours"), k.startswith("deltadq")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=2.2 if ours else 1,
                    ls="-" if ours else ":" if old else "--", label=k)
        for r in dtr:
            ax.scatter([r["ft_bytes"] / r["stored"]], [100 * r["gain_kept"]], marker="s", s=40, label=r["method"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ratio over the whole finetune file")
        ax.set_ylabel("gain kept, % (mlp pair)")
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = RESULTS / "lossy_gain_vs_ratio.png"
        fig.savefig(p, dpi=110)
        made.append(p)
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0, help="generated bf16 pair size (0: none)")
    ap.add_argument("--largest-mib", type=int, default=256)
    ap.add_argument("--gen-dir", default=os.path.join(tempfile.gettempdir(), "deltastore-genpair"))
    ap.add_argument("--pairs-dir", default="/tmp/deltastore-pairs")
    ap.add_argument("--reps", type=int, default=2, help="timed runs of each step, best kept")
    ap.add_argument("--gen-reps", type=int, default=1, help="--reps for the generated pair (large, slow)")
    ap.add_argument("--build-dir", default=os.environ.get("DS_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--baseline-server", help="a second deltastored binary measured in the same run (streaming)")
    ap.add_argument("--baseline-label", default="baseline")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--only", default="", help="comma-separated sections to run (default all)")
    ap.add_argument("--out", default=str(RESULTS / "peers.md"))
    args = ap.parse_args()
    sections = ["lossless", "zipnn", "streaming", "deltatensors", "plots"]
    if args.only:
        sections = [s for s in sections if s in args.only.split(",")]
    sections = [s for s in sections if s not in args.skip.split(",")]
    RESULTS.mkdir(exist_ok=True)
    jpath = pathlib.Path(args.out).with_suffix(".json")
    rows = json.loads(jpath.read_text()) if args.only and jpath.exists() else []
    if args.only:  # refresh the sections run now, keep the others from the last run
        rows = [r for r in rows if r["section"] not in sections
                and not (r["section"] == "lossless" and "zipnn" in sections and r["method"].startswith("zipnn"))
                and not (r["section"] == "lossless" and "lossless" in sections and not r["method"].startswith("zipnn"))]
    log(f"# bench/peers.py on {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; sections {sections}")
    ins = inputs(args) if any(s in sections for s in ("lossless", "zipnn", "streaming")) else []
    for name, fn in (("lossless", lambda: run_lossless(args, ins, rows)), ("zipnn", lambda: run_zipnn(args, ins, rows)),
                     ("streaming", lambda: run_streaming(args, ins, rows)),
                     ("deltatensors", lambda: run_deltatensors(args, rows))):
        if name not in sections:
            continue
        try:
            fn()
        except Exception as e:  # one broken section must not lose the others' figures
            import traceback

            traceback.print_exc()
            log(f"{name}: FAILED ({type(e).__name__}: {e})")
        jpath.write_text(json.dumps(rows, indent=1))
    md = tables(rows, args)
    pathlib.Path(args.out).write_text(md)
    print(md)
    if "plots" in sections:
        for p in plots(rows):
            log(f"wrote {p}")


if __name__ == "__main__":
    main()
