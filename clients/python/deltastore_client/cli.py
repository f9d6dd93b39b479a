"""`deltastore` command line: upload, download, ls, tag, untag, rm, stats, job, gc, audit."""
import argparse
import json
import os
import sys

from .client import DEFAULT_URL, Client, MiB, parse_ref
from .errors import ConnectionFailed, DeltastoreError


def _human(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _print_json(doc):
    print(json.dumps(doc, indent=2, sort_keys=True))


def _print_table(rows, headers):
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for r in [headers] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _version_line(v):
    logical, stored = v.get("logical_bytes") or 0, v.get("stored_bytes") or 0
    ratio = f"{logical / stored:.2f}x" if stored else "-"
    base = v.get("base")
    base_s = f"{base['model']}@{base['digest'][:19]}" if base else "-"
    return [v.get("digest", ""), ",".join(v.get("tags") or []) or "-", v.get("mode", "-"),
            base_s, _human(logical), _human(stored), ratio, v.get("created_at", "")]


def cmd_upload(c, a):
    policy = None
    if a.lossy is not None:
        policy = {"mode": "lossy", "ratio": a.lossy}
    if a.allow_mismatched_shapes:
        policy = dict(policy or {"mode": "lossless"}, allow_mismatched_shapes=True)
    out = c.upload(a.path, a.model, base=a.base, policy=policy, tags=a.tag or None,
                   files=a.file or None, wait=not a.no_wait, progress=not a.quiet,
                   piece_size=int(a.piece_size * MiB))
    if a.json:
        out.pop("manifest", None)
        _print_json(out)
    elif a.no_wait:
        print(f"job {out['id']} {out['state']} (follow it with: deltastore job {out['id']})")
    else:
        s = out.get("stats") or {}
        logical, stored = out.get("logical_bytes") or 0, out.get("stored_bytes") or 0
        print(f"{out['model']}@{out['digest']}")
        print(f"  tags: {', '.join(out.get('tags') or []) or '-'}  mode: {out.get('mode')}  "
              f"files: {len(out.get('files') or [])}  tensors: {s.get('tensors', 0)} "
              f"(delta {s.get('tensors_delta', 0)}, same {s.get('tensors_same', 0)}, "
              f"standalone {s.get('tensors_standalone', 0)})")
        print(f"  {_human(logical)} logical, {_human(stored)} stored"
              + (f" ({logical / stored:.2f}x), {_human(s.get('new_bytes'))} new" if stored else ""))
    return 0


def cmd_download(c, a):
    model, ref = parse_ref(a.target, default_ref=None)
    if a.tensors:
        if a.delta or (a.file and len(a.file) > 1):
            raise ValueError("--tensors takes at most one --file (a path, not a glob) and no --delta")
        names = [n for n in a.tensors.split(",") if n]
        out = c.download_tensors(model, ref, names, a.dest, file=a.file[0] if a.file else None,
                                 progress=not a.quiet)
        if a.json:
            _print_json(out)
        else:
            for f in out["files"]:
                print(f"{f['path']}  {_human(f['size'])}  {f['sha256']}  ({len(f['tensors'])} tensor(s) "
                      f"of {f['file']}, {f['chunks_read']} chunk(s) read)")
        return 0
    form = "delta" if a.delta else "checkpoint"
    out = c.download(model, ref, a.dest, form=form, files=a.file or None, parallel=a.parallel,
                     progress=not a.quiet)
    if a.json:
        _print_json(out)
    elif form == "delta":
        print(f"{out['path']}  {_human(out['size'])}  ({model}@{out.get('version') or ref})")
    else:
        for f in out["files"]:
            note = "already present" if f["status"] == "present" else (
                f"resumed from {_human(f['resumed_from'])}" if f["resumed_from"] else "")
            print(f"{f['path']}  {_human(f['size'])}  {f['sha256']}" + (f"  ({note})" if note else ""))
        print(f"{model}@{out['version']}: {len(out['files'])} file(s) verified in {out['dest']}")
    return 0


def cmd_ls(c, a):
    if a.model is None:
        models = c.models()
        if a.json:
            _print_json(models)
        elif not models:
            print("(no models)")
        else:
            _print_table([[m["name"], m.get("versions", ""), m.get("created_at", "")] for m in models],
                         ["MODEL", "VERSIONS", "CREATED"])
        return 0
    versions = c.versions(a.model)
    if a.json:
        _print_json(versions)
    elif not versions:
        print(f"({a.model} has no versions)")
    else:
        _print_table([_version_line(v) for v in versions],
                     ["DIGEST", "TAGS", "MODE", "BASE", "LOGICAL", "STORED", "RATIO", "CREATED"])
    return 0


def cmd_show(c, a):
    model, ref = parse_ref(a.target, default_ref=None)
    v = c.version(model, ref or c.default_ref(model))
    if not a.manifest:
        v.pop("manifest", None)
    _print_json(v)
    return 0


def cmd_tag(c, a):
    out = c.tag(a.model, a.tag, a.version)
    if a.json:
        _print_json(out)
    else:
        print(f"{a.model}:{a.tag} -> {out.get('version', a.version)}")
    return 0


def cmd_untag(c, a):
    c.untag(a.model, a.tag)
    print(f"removed tag {a.model}:{a.tag}")
    return 0


def cmd_rm(c, a):
    model, ref = parse_ref(a.target, default_ref=None) if "@" in a.target else (a.target, None)
    if ref is None:
        raise ValueError("rm needs MODEL@REF (a tag or digest): deleting whole models is not supported")
    out = c.delete(model, ref)
    if a.json:
        _print_json(out)
    else:
        print(f"deleted {model}@{out.get('deleted')} (freed {_human(out.get('freed_bytes'))})")
    return 0


def cmd_stats(c, a):
    s = c.stats()
    if a.json:
        _print_json(s)
    else:
        print(f"models: {s.get('models')}  versions: {s.get('versions')}  chunks: {s.get('chunks')}  "
              f"stored: {_human(s.get('stored_bytes'))}")
    return 0


def cmd_job(c, a):
    job = c.wait_job(a.id, progress=not a.quiet) if a.wait else c.job(a.id)
    _print_json(job)
    return 0


def cmd_token(c, a):
    if a.token_cmd == "create":
        out = c.create_token(a.scope, name=a.name or "")
        if a.json:
            _print_json(out)
        else:
            print(out["token"])
            print(f"token {out['id']} ({out['scope']} scope) created; it is not shown again", file=sys.stderr)
    elif a.token_cmd == "ls":
        out = c.tokens()
        if a.json:
            _print_json(out)
        else:
            for t in out:
                print(f"{t['id']}  {t['scope']:<5}  {t.get('created_at', '')}  {t.get('name', '')}")
    else:
        c.revoke_token(a.id)
        print(f"token {a.id} revoked", file=sys.stderr)
    return 0


def cmd_gc(c, a):
    out = c.gc()
    if a.json:
        _print_json(out)
    else:
        print(f"deleted {out.get('chunks_deleted')} chunk(s), freed {_human(out.get('bytes_freed'))}")
    return 0


def _signed(n):
    return ("-" + _human(-n)) if (n or 0) < 0 else _human(n)


def _figure_cells(f):
    logical, stored = f.get("logical_bytes") or 0, f.get("stored_bytes") or 0
    ratio = f"{logical / stored:.2f}x" if stored else ("-" if not logical else "inf")
    return [_human(logical), _human(stored), _human(f.get("saved_dedup_bytes")),
            _signed(f.get("saved_lossless_bytes")), _signed(f.get("saved_lossy_bytes")), ratio]


FIGURE_HEADS = ["LOGICAL", "STORED", "DEDUP", "LOSSLESS", "LOSSY", "REDUCTION"]


def _quality(q):
    if not q:
        return "-"
    return (f"ratio {q.get('ratio', 0):.2f}x (lossy tensors {q.get('lossy_ratio', 0):.1f}x), "
            f"weight err {q.get('weight_error', 0):.4f}, output err {q.get('output_error', 0):.4f}")


def cmd_audit(c, a):
    try:
        if a.history:
            out = c.audit_history()
        else:
            out = c.audit(model=a.model)
    except DeltastoreError as e:
        if e.status == 404 and e.code == "NOT_FOUND":
            print(f"deltastore: the registry at {c.url} has no audit (GET /v1/audit answered "
                  f"404 {e.code}); it needs a server version with auditing", file=sys.stderr)
            return 1
        raise
    if a.json:
        _print_json(out)
        return 0
    if a.history:
        rows = [[s.get("at", ""), (s.get("event") or {}).get("event", ""),
                 (s.get("event") or {}).get("model", "-")] + _figure_cells(s.get("totals") or {})
                for s in out]
        _print_table(rows, ["AT", "EVENT", "MODEL"] + FIGURE_HEADS)
        return 0
    if a.model:
        print(f"{out['model']}: " + "  ".join(f"{h.lower()} {v}" for h, v in
                                               zip(FIGURE_HEADS, _figure_cells(out["figures"]))))
        rows = [[v["digest"][:19], ",".join(v.get("tags") or []) or "-", v.get("mode", "-")]
                + _figure_cells(v["figures"]) + [_quality(v.get("quality"))] for v in out["versions"]]
        _print_table(rows, ["VERSION", "TAGS", "MODE"] + FIGURE_HEADS + ["QUALITY"])
        return 0
    t, store = out["totals"], out.get("store") or {}
    print(f"total: {t['versions']} version(s) in {len(out['models'])} model(s); "
          + "  ".join(f"{h.lower()} {v}" for h, v in zip(FIGURE_HEADS, _figure_cells(t))))
    print(f"chunk store: {_human(store.get('chunk_bytes'))} in {store.get('chunks', 0)} chunk(s)")
    print()
    rows = [[m["model"], m["figures"]["versions"]] + _figure_cells(m["figures"]) for m in out["models"]]
    _print_table(rows, ["MODEL", "VERSIONS"] + FIGURE_HEADS)
    print()
    rows = [[f"{b['base']['model']}@{b['base']['digest'][:19]}", ",".join(b["models"]),
             b["figures"]["versions"]] + _figure_cells(b["figures"]) for b in out["bases"]]
    _print_table(rows, ["BASE", "MODELS", "VERSIONS"] + FIGURE_HEADS)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="deltastore", description="deltastore model registry client")
    p.add_argument("--url", default=os.environ.get("DELTASTORE_URL", DEFAULT_URL),
                   help="registry URL (default: $DELTASTORE_URL or %(default)s)")
    p.add_argument("--token", default=os.environ.get("DELTASTORE_TOKEN"),
                   help="bearer token (default: $DELTASTORE_TOKEN)")
    p.add_argument("--ca-cert", default=os.environ.get("DELTASTORE_CA_BUNDLE"),
                   help="PEM CA bundle to trust for an https URL (default: $DELTASTORE_CA_BUNDLE, else the system's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per network operation")
    p.add_argument("--retries", type=int, default=5,
                   help="retries of a request on connection errors and 5xx answers (with backoff)")
    p.add_argument("--json", action="store_true", help="print JSON documents")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    u = sub.add_parser("upload", help="upload a file or a checkpoint directory as a new version")
    u.add_argument("path", help="a file, or a directory (every file in it, e.g. a sharded checkpoint)")
    u.add_argument("--model", "-m", required=True)
    u.add_argument("--base", help="MODEL@REF (or MODEL for its latest) to store the version as a delta against")
    u.add_argument("--lossy", type=float, metavar="RATIO", help="lossy policy with this target ratio")
    u.add_argument("--allow-mismatched-shapes", action="store_true",
                   help="store tensors whose shape differs from the base's standalone")
    u.add_argument("--tag", "-t", action="append", help="tag for the new version (repeatable)")
    u.add_argument("--file", action="append", help="only files matching this glob (repeatable)")
    u.add_argument("--piece-size", type=float, default=64, metavar="MiB", help="bytes per request (MiB)")
    u.add_argument("--no-wait", action="store_true", help="return once the job is queued")
    u.set_defaults(func=cmd_upload)

    d = sub.add_parser("download", help="download a version's files (verified), or its delta container")
    d.add_argument("target", metavar="MODEL[@REF]",
                   help="REF is a tag or digest (default: the tag latest, else the newest version)")
    d.add_argument("dest", help="destination directory (or file, for --delta)")
    d.add_argument("--delta", action="store_true", help="the compressed container instead of the files")
    d.add_argument("--file", action="append", help="only files matching this glob (repeatable)")
    d.add_argument("--parallel", type=int, default=4, help="parallel byte ranges per large file")
    d.add_argument("--tensors", metavar="A,B,...",
                   help="only these tensors, as safetensors file(s) rebuilt from their chunks alone "
                        "(with --file: of that file; DEST: a file, or a directory for several shards)")
    d.set_defaults(func=cmd_download)

    ls = sub.add_parser("ls", help="list models, or the versions of one")
    ls.add_argument("model", nargs="?")
    ls.set_defaults(func=cmd_ls)

    sh = sub.add_parser("show", help="a version summary as JSON")
    sh.add_argument("target", metavar="MODEL[@REF]")
    sh.add_argument("--manifest", action="store_true", help="include the manifest")
    sh.set_defaults(func=cmd_show)

    t = sub.add_parser("tag", help="point a tag at a version")
    t.add_argument("model")
    t.add_argument("tag")
    t.add_argument("version", metavar="DIGEST", help="the version's digest (or another tag)")
    t.set_defaults(func=cmd_tag)

    ut = sub.add_parser("untag", help="remove a tag")
    ut.add_argument("model")
    ut.add_argument("tag")
    ut.set_defaults(func=cmd_untag)

    rm = sub.add_parser("rm", help="delete a version")
    rm.add_argument("target", metavar="MODEL@REF")
    rm.set_defaults(func=cmd_rm)

    st = sub.add_parser("stats", help="store-wide counters")
    st.set_defaults(func=cmd_stats)

    j = sub.add_parser("job", help="a version-creation job")
    j.add_argument("id")
    j.add_argument("--wait", action="store_true", help="follow it until it ends")
    j.set_defaults(func=cmd_job)

    tk = sub.add_parser("token", help="create, list and revoke bearer tokens (needs an admin token)")
    tks = tk.add_subparsers(dest="token_cmd", metavar="ACTION")
    tks.required = True
    tc = tks.add_parser("create", help="create a token and print it (shown only once)")
    tc.add_argument("--scope", choices=["read", "write", "admin"], default="read",
                    help="read, write or admin; each includes the ones before (default: read)")
    tc.add_argument("--name", help="what the token is for")
    tks.add_parser("ls", help="list tokens (never their secrets)")
    tr = tks.add_parser("revoke", help="revoke a token")
    tr.add_argument("id", help="the token's id (the 16 hex after dst_)")
    tk.set_defaults(func=cmd_token)

    g = sub.add_parser("gc", help="delete chunks no version references")
    g.set_defaults(func=cmd_gc)

    au = sub.add_parser("audit", help="storage savings: logical vs stored bytes, dedup, lossless and lossy "
                                      "savings, per model and base (or per version with --model)")
    au.add_argument("--model", "-m", help="one model's figures and its versions', with lossy quality")
    au.add_argument("--history", action="store_true", help="the totals recorded at each ingest, deletion and GC")
    au.set_defaults(func=cmd_audit)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    client = Client(args.url, token=args.token, timeout=args.timeout, retries=args.retries,
                    verify=args.ca_cert or None)
    try:
        return args.func(client, args)
    except ConnectionFailed as e:
        print(f"deltastore: error: {e.message}", file=sys.stderr)
        return 1
    except DeltastoreError as e:
        print(f"deltastore: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `deltastore show … | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as e:
        print(f"deltastore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deltastore: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
