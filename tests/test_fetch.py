"""models.fetch: weights by name, against a loopback HTTP server (127.0.0.1, port 0) that serves files written in each
publisher's layout (tests/publishers.py) at demo size, under the table's real URLs through $TRASHSEG_WEIGHTS_MIRROR.
The server records every request and its Range header, can cut a transfer short, ignore Range, or hold a response.
Nothing here leaves the machine."""
import hashlib
import http.server
import io
import os
import queue
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest
import torch

from models import MODELS, load_model
from models import fetch as F
from publishers import hf_hub_upernet, mmseg_checkpoint, mmseg_upernet_from_hf_hub, official_convnext, randomise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "upernet_convnext_demo"
STAGES = ["stage1", "stage2", "stage3", "stage4"]


# ------------------------------------------------------------------------------------------------- the server

class Handler(http.server.BaseHTTPRequestHandler):
    """GET with single-range support (`bytes=N-`, 206 + Content-Range; 416 past the end). Per path, it can ignore the
    Range (200), answer another range (206 from byte 0), cut the body short once, or hold the response on a gate."""

    def do_GET(self):  # noqa: N802 - http.server's name
        s = self.server
        path = urllib.parse.urlsplit(self.path).path
        rng = self.headers.get("Range")
        s.requests.append((path, rng))
        gate = s.gates.get(path)
        if gate is not None:
            gate.wait(120)
        body = s.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and path not in s.ignore_range:
            start = 0 if path in s.wrong_range else int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = s.cut_after.pop(path, None)  # once: the next request gets the whole rest
        self.wfile.write(body[start:cut] if cut is not None else body[start:])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (the timeout test) leaves a broken pipe behind: expected


@pytest.fixture(scope="module")
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.gates, srv.ignore_range, srv.wrong_range, srv.cut_after = {}, [], {}, set(), set(), {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    for g in srv.gates.values():
        g.set()
    srv.shutdown()
    srv.server_close()


def mirror_path(url):
    """Where the mirror serves a publisher URL: /HOST/PATH."""
    u = urllib.parse.urlsplit(url)
    return f"/{u.netloc}{u.path}"


def serve(server, name, body):
    path = mirror_path(F.WEIGHTS[name].url)
    server.files[path] = body
    return path


def gets(server, path):
    return [r for r in server.requests if r[0] == path]


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    """A fresh cache and the mirror, for in-process calls and for subprocesses (os.environ)."""
    monkeypatch.setenv(F.HOME_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(F.MIRROR_ENV, server.base)
    for var in ("no_proxy", "NO_PROXY"):  # a proxy configured on the machine must not see the loopback requests
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    server.requests.clear()
    server.ignore_range.clear()
    server.wrong_range.clear()
    server.cut_after.clear()
    server.gates.clear()
    return tmp_path / "cache"


# ---------------------------------------------------------------------------- files in each publisher's layout

def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files():
    """The demo model's widths in three layouts: HF hub (openmmlab/upernet-*, 150 ADE20K labels), mmseg 1.x (the
    same weights through transformers' conversion run backwards) and an official ConvNeXt ImageNet classifier."""
    transformers = pytest.importorskip("transformers")
    timm = pytest.importorskip("timm")
    c = MODELS[DEMO]
    torch.manual_seed(0)
    hf = randomise(transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(hidden_sizes=list(c["dims"]), depths=list(c["depths"]),
                                                    out_features=STAGES),
        hidden_size=c["channels"], auxiliary_channels=c["aux_channels"], auxiliary_in_channels=c["dims"][2],
        num_labels=150))).eval()
    hub = hf_hub_upernet(hf)
    cls = randomise(timm.models.convnext.ConvNeXt(depths=c["depths"], dims=c["dims"], num_classes=1000)).eval()
    return {"hf": _bytes(hub), "hub": hub,
            "mmseg": _bytes(mmseg_checkpoint(mmseg_upernet_from_hf_hub(hub), 1, 150)),
            "official": _bytes(official_convnext(cls))}


def cli(*argv):
    return F.main(F.get_args_parser().parse_args([str(a) for a in argv]))


# ------------------------------------------------------------------------------------------------------ the table

def test_table_rows_fit_cite_and_carry_the_published_checksums():
    assert len(F.WEIGHTS) >= 40
    for name, w in F.WEIGHTS.items():
        assert w.model in MODELS, name
        swin = "swin" in urllib.parse.urlsplit(w.url).path
        assert swin == w.model.startswith("upernet_swin_"), name
        if swin:
            assert ("window12" in w.url or "swin-base" in name or "swin-large" in name) == w.model.endswith("_w12")
        assert w.url.startswith("https://") and w.listed and w.layout in ("official", "mmseg", "mmpretrain", "hf")
        if w.url.startswith("https://download.openmmlab.com/"):
            assert w.sha256 == w.url[-12:-4] and len(w.sha256) == 8, name  # OpenMMLab: -<sha256[:8]>.pth
        else:
            assert w.sha256 is None, name  # the official repositories and HF publish none
    assert F.source_url("https://h.example/a/b.pth", "http://127.0.0.1:9/m/") == \
        "http://127.0.0.1:9/m/h.example/a/b.pth"
    assert F.source_url("https://h.example/a/b.pth", "") == "https://h.example/a/b.pth"


def test_unknown_name_suggests(env, capsys):
    assert cli("openmmlab/upernet-convnext-tinyy") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean openmmlab/upernet-convnext-tiny" in err


# ----------------------------------------------------------------------------------- download, convert, cache

def test_fetch_converts_reinitialises_the_ade20k_head_then_hits_the_cache(server, env, files, capsys):
    path = serve(server, "openmmlab/upernet-convnext-tiny", files["hf"])
    assert cli("openmmlab/upernet-convnext-tiny", "--model", DEMO) == 0
    out = capsys.readouterr().out
    assert "is published for upernet_convnext_tiny; converting it into upernet_convnext_demo" in out
    assert "source has 150 classes, target 11" in out and "re-initialised" in out  # models.convert says so
    dst = out.strip().splitlines()[-1]
    assert dst == str(env / "weights" / f"openmmlab--upernet-convnext-tiny--{DEMO}-11c.pt")
    assert open(env / "downloads" / "openmmlab--upernet-convnext-tiny" / "pytorch_model.bin", "rb").read() \
        == files["hf"]
    model = load_model(dst)
    assert model.num_classes == 11
    torch.testing.assert_close(model.state_dict()["backbone.downsample_layers.0.0.weight"],
                               files["hub"]["backbone.embeddings.patch_embeddings.weight"], rtol=0, atol=0)
    assert [r[1] for r in gets(server, path)] == [None]
    # The cache: the same call makes no request at all.
    server.requests.clear()
    assert cli("openmmlab/upernet-convnext-tiny", "--model", DEMO) == 0
    assert capsys.readouterr().out.strip() == dst
    assert server.requests == []
    # Another class count converts the cached download again: still no request.
    assert F.fetch("openmmlab/upernet-convnext-tiny", DEMO, 5, progress=False).endswith(f"{DEMO}-5c.pt")
    assert server.requests == [] and load_model(env / "weights" / f"openmmlab--upernet-convnext-tiny--{DEMO}-5c.pt"
                                                ).num_classes == 5


def test_interrupted_download_resumes_with_range(server, env, files, capsys):
    name = "convnext_tiny_1k_224"
    body = files["official"]
    path = serve(server, name, body)
    half = len(body) // 2
    server.cut_after[path] = half  # the first transfer breaks off half-way
    assert cli(name, "--model", DEMO, "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "broke off" in err and "run the same command again to resume" in err
    part = env / "downloads" / name / "convnext_tiny_1k_224.pth.part"
    assert part.stat().st_size == half and not part.with_suffix("").exists()
    assert cli(name, "--model", DEMO, "--no-progress") == 0
    assert f"resuming at byte {half}" in capsys.readouterr().out
    assert [r[1] for r in gets(server, path)] == [None, f"bytes={half}-"]
    raw = part.with_suffix("")
    assert raw.read_bytes() == body and not part.exists()
    load_model(env / "weights" / f"{name}--{DEMO}-11c.pt")


def test_server_that_ignores_refuses_or_misanswers_range_restarts_cleanly(server, env, files, capsys):
    name = "convnext_small_1k_224"
    body = files["official"]
    path = serve(server, name, body)
    part = env / "downloads" / name / "convnext_small_1k_224.pth.part"
    part.parent.mkdir(parents=True)
    stale = b"not the file's first bytes" * 100
    part.write_bytes(stale)  # a stale part: the 200 replaces it, never appended to
    server.ignore_range.add(path)
    assert cli(name, "--model", DEMO, "--no-progress") == 0
    assert "did not resume" in capsys.readouterr().out
    assert part.with_suffix("").read_bytes() == body
    assert [r[1] for r in gets(server, path)] == [f"bytes={len(stale)}-"]
    # 416: a part longer than the file is dropped and the file read from the start.
    name = "convnext_base_1k_224"
    path = serve(server, name, body)
    part = env / "downloads" / name / "convnext_base_1k_224.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(body) + 10))
    assert cli(name, "--model", DEMO, "--no-progress") == 0
    assert "refused to resume" in capsys.readouterr().out
    assert part.with_suffix("").read_bytes() == body
    assert [r[1] for r in gets(server, path)] == [f"bytes={len(body) + 10}-", None]
    # 206 for a range that was not asked for: dropped, and the file read from the start.
    name = "convnext_tiny_1k_224_ema"
    path = serve(server, name, body)
    part = env / "downloads" / name / "convnext_tiny_1k_224_ema.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:100])
    server.wrong_range.add(path)
    assert cli(name, "--model", DEMO, "--no-progress") == 0
    assert "another range" in capsys.readouterr().out
    assert part.with_suffix("").read_bytes() == body
    assert [r[1] for r in gets(server, path)] == ["bytes=100-", None]


def test_checksum_mismatch_deletes_and_names_url_expected_and_got(server, env, files, capsys, monkeypatch):
    name = "mmseg/upernet_convnext_tiny_ade20k"
    serve(server, name, files["mmseg"])  # a demo-size file under the real name: not the published bytes
    assert cli(name, "--model", DEMO, "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    got = hashlib.sha256(files["mmseg"]).hexdigest()
    url = F.source_url(F.WEIGHTS[name].url)
    assert "\n" not in err and url in err and "expected cad485de" in err and f"got {got[:8]}" in err
    folder = env / "downloads" / "mmseg--upernet_convnext_tiny_ade20k"
    assert os.listdir(folder) == [] and not (env / "weights").exists()
    # A file whose name carries its true prefix passes, and mmseg's 150-class head is re-initialised for 11.
    url = f"https://download.openmmlab.com/test/upernet_demo_ade20k-{got[:8]}.pth"
    monkeypatch.setitem(F.WEIGHTS, "test/mmseg_demo", F.Weights(url, "mmseg", DEMO, F.ADE, "test fixture", got[:8]))
    server.files[mirror_path(url)] = files["mmseg"]
    assert cli("test/mmseg_demo", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "source layout: mmseg" in out and "source has 150 classes, target 11" in out
    assert load_model(out.strip().splitlines()[-1]).num_classes == 11


def test_offline_bad_url_or_timeout_exit_2_with_one_line(server, env, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv(F.MIRROR_ENV, closed)
    name = "swin_tiny_patch4_window7_224"
    assert cli(name, "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    raw = env / "downloads" / name / "swin_tiny_patch4_window7_224.pth"
    assert "\n" not in err and f"{closed}/github.com/SwinTransformer/" in err and "refused" in err.lower()
    assert f"curl -L -o {raw} '{F.WEIGHTS[name].url}'" in err
    assert f"python -m models.convert {raw} " in err and "--model upernet_swin_tiny --num-classes 11" in err
    assert "--init " in err
    monkeypatch.setenv(F.MIRROR_ENV, server.base)  # nothing served there: HTTP 404
    assert cli("swin_small_patch4_window7_224", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HTTP 404" in err and "curl -L -o" in err
    name = "swin_base_patch4_window7_224"
    path = serve(server, name, b"x")
    server.gates[path] = threading.Event()  # headers held back past the timeout
    assert cli(name, "--no-progress", "--timeout", "0.5") == 2
    server.gates[path].set()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "timed out" in err and "curl -L -o" in err


# -------------------------------------------------------------------------------------- train.py and torchrun

@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data(train=4, val=2, test=1, extra=1, size=64, seed=3)


def test_train_init_by_name(server, env, files, demo, tmp_path):
    serve(server, "openmmlab/upernet-convnext-tiny", files["hf"])
    cmd = [sys.executable, "train.py", "--data-root", demo, "--out", str(tmp_path / "run"), "--model", DEMO,
           "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--iters", "2", "--eval-interval", "1000",
           "--log-interval", "1", "--no-progress", "--init", "openmmlab/upernet-convnext-tiny"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dst = env / "weights" / f"openmmlab--upernet-convnext-tiny--{DEMO}-11c.pt"
    assert "source has 150 classes, target 11" in r.stdout and "init: loaded" in r.stdout and str(dst) in r.stdout
    assert "iter 2/2" in r.stdout and os.path.exists(tmp_path / "run" / "last.pt")


def test_one_process_downloads_while_the_other_waits_on_the_lock(server, env, files):
    """Two real processes (LOCAL_RANK 0 and 1, as torchrun starts them on one node) fetch the same name into one
    cache. The server holds the first GET until the second process reports that it waits on the lock; then exactly
    one download has happened and both print the same converted file."""
    name = "convnext_tiny_22k_224"
    path = serve(server, name, files["official"])
    server.gates[path] = threading.Event()
    procs, readers, lines = [], [], queue.Queue()
    for rank in (0, 1):
        p = subprocess.Popen([sys.executable, "-m", "models.fetch", name, "--model", DEMO, "--no-progress",
                              "--timeout", "300"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1",
                                             "PYTHONUNBUFFERED": "1"})
        procs.append(p)
        readers.append(threading.Thread(target=lambda p=p, r=rank: [lines.put((r, ln)) for ln in p.stdout],
                                        daemon=True))
        readers[-1].start()
    out = {0: [], 1: []}
    try:
        while not any("waiting for another process" in ln for o in out.values() for ln in o):
            rank, ln = lines.get(timeout=120)
            out[rank].append(ln)
    finally:
        server.gates[path].set()
    for p, t in zip(procs, readers):
        assert p.wait(timeout=300) == 0, out
        t.join(timeout=10)
    while not lines.empty():
        rank, ln = lines.get()
        out[rank].append(ln)
    assert len(gets(server, path)) == 1
    dst = str(env / "weights" / f"{name}--{DEMO}-11c.pt")
    assert [o[-1].strip() for o in out.values()] == [dst, dst]
    assert sum("downloading" in ln for o in out.values() for ln in o) == 1
    load_model(dst)
