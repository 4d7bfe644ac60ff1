"""visualize.py / viz/: pixel-exact overlays and error maps, the site built from a tiny fixture (data, run, CSV,
pseudo-labels, augmentations), clear errors for missing inputs, the report's mIoU against infer.py --eval's on a
trained checkpoint, the augmentation preview, and the page checked in headless Chromium.

The browser test opens index.html?selftest=1 with `chromium --headless --dump-dom`: the page's own check (every
image decoded, class filter changes what is shown, sort orders, opacity slider, no error / console.error) writes
JSON into <pre id="selftest">; Chromium's console log on stderr is checked too. The same test breaks the site twice
(an image deleted, a script that throws) and requires the check to fail, so a pass means something.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE
from viz import draw
from viz.report import pick

# ------------------------------------------------------------------------------------------------ pixels


def test_overlay_colours_by_hand():
    img = np.full((2, 3, 3), 100, np.uint8)
    img[1, 2] = (10, 200, 30)
    mask = np.array([[0, 1, 2], [255, 10, 6]], np.uint8)
    out = draw.overlay(img, mask, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]            # background untouched
    assert out[0, 1].tolist() == [146, 50, 114]             # (100 + (192, 0, 128)) / 2
    assert out[0, 2].tolist() == [50, 114, 146]             # Paper (0, 128, 192)
    assert out[1, 0].tolist() == [178, 178, 178]            # ignored blends with white: (100 + 255) / 2 = 177.5 → 178
    assert out[1, 1].tolist() == [114, 50, 146]             # Clothing (128, 0, 192)
    assert out[1, 2].tolist() == [37, 100, 111]             # Plastic (64, 0, 192) over (10, 200, 30)
    out = draw.overlay(img, mask, alpha=0.25)
    assert out[0, 1].tolist() == [123, 75, 107]             # 0.75·100 + 0.25·(192, 0, 128)
    assert img[0, 1].tolist() == [100, 100, 100]            # input not modified


def test_colour_layers_follow_palette():
    mask = np.array([[c for c in range(NUM_CLASSES)] + [IGNORE_INDEX, 77]], np.uint8)
    rgb = draw.colorize(mask)
    assert [tuple(v) for v in rgb[0, :NUM_CLASSES].tolist()] == [tuple(p) for p in PALETTE]
    assert rgb[0, NUM_CLASSES].tolist() == [255, 255, 255]
    assert rgb[0, NUM_CLASSES + 1].tolist() == [255, 0, 255]  # not a class: magenta, never mistaken for background
    rgba = draw.mask_rgba(mask)
    assert rgba[0, 0, 3] == 0 and (rgba[0, 1:, 3] == 255).all()
    assert (rgba[..., :3] == rgb).all()


def test_error_map_by_hand():
    gt = np.array([[0, 0, 3, 3], [255, 255, 5, 0]], np.uint8)
    pred = np.array([[0, 2, 3, 4], [0, 7, 5, 9]], np.uint8)
    em = draw.error_map(gt, pred)
    want = [[draw.ERR_RIGHT_BG, draw.ERR_WRONG, draw.ERR_RIGHT, draw.ERR_WRONG],
            [draw.ERR_IGNORED, draw.ERR_IGNORED, draw.ERR_RIGHT, draw.ERR_WRONG]]
    assert em.tolist() == [[list(c) for c in row] for row in want]
    assert len({draw.ERR_RIGHT, draw.ERR_RIGHT_BG, draw.ERR_WRONG, draw.ERR_IGNORED}) == 4


def test_pick_is_class_balanced():
    classes = [[2, 8]] * 300 + [[9]] * 3 + [[]] * 50
    idx = pick(classes, 40, seed=0)
    assert len(idx) == 40 and idx == sorted(set(idx))
    assert len({300, 301, 302} & set(idx)) == 2  # n / 20 per class: the rare class is never sampled away
    assert {300, 301, 302} <= set(pick(classes, 60, seed=0))
    assert pick(classes[:10], 40, seed=0) == list(range(10))


# ------------------------------------------------------------------------------------------------ fixture
H, W = 48, 64  # not square, so a swapped width/height shows


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _ann(aid, image_id, cat, x0, y0, x1, y1):
    rle = mask_utils.frPyObjects(_poly(x0, y0, x1, y1), H, W)
    area = float(mask_utils.area(mask_utils.merge(rle)))
    return {"id": aid, "image_id": image_id, "category_id": cat, "segmentation": _poly(x0, y0, x1, y1),
            "area": area, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}


def _coco(images, anns=None):
    cats = [{"id": 100 + c, "name": CLASSES[c]} for c in range(1, NUM_CLASSES)]  # ids ≠ class ids on purpose
    out = {"images": images, "categories": cats}
    if anns is not None:
        out["annotations"] = anns
    return out


def make_fixture(root):
    """4 labelled train images (classes chosen so a filter splits them), 2 test images, a run with a real demo-model
    checkpoint, a submission CSV and a pseudo-label folder."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "data", "batch_01_vt"))
    os.makedirs(os.path.join(root, "data", "batch_03"))
    data = os.path.join(root, "data")
    layout = [[(2, 4, 4, 40, 30), (9, 20, 10, 30, 20)],           # Paper with a Battery on top
              [(8, 0, 0, 63, 47), (2, 10, 10, 30, 30), (6, 35, 5, 60, 25)],
              [(8, 5, 20, 50, 45)],
              [(10, 10, 5, 55, 40), (4, 20, 15, 28, 25)]]
    images, anns, aid = [], [], 1
    for k, objs in enumerate(layout):
        fn = f"batch_01_vt/{k + 1:04d}.jpg"
        img = rng.integers(60, 200, (H, W, 3), np.uint8)
        cv2.imwrite(os.path.join(data, fn), img)
        images.append({"id": 1000 + 7 * k, "file_name": fn, "width": W, "height": H})
        for c, *box in objs:
            anns.append(_ann(aid, 1000 + 7 * k, 100 + c, *box))
            aid += 1
    train = _coco(images, anns)
    for name in ("train.json", "val.json"):
        with open(os.path.join(data, name), "w") as f:
            json.dump(train, f)
    test_images = []
    for k in range(2):
        fn = f"batch_03/{k + 1:04d}.png"  # PNG on purpose
        cv2.imwrite(os.path.join(data, fn), rng.integers(0, 255, (H, W, 3), np.uint8))
        test_images.append({"id": 5 + k, "file_name": fn, "width": W, "height": H})
    with open(os.path.join(data, "test.json"), "w") as f:
        json.dump(_coco(test_images), f)

    # submission: row 1 has Paper + Metal, row 2 only Glass
    sub = [np.zeros((256, 256), np.uint8) for _ in range(2)]
    sub[0][10:100, 20:200] = 2
    sub[0][150:200, 150:250] = 4
    sub[1][50:250, 0:100] = 5
    csv = os.path.join(root, "submission.csv")
    with open(csv, "w") as f:
        f.write("image_id,PredictionString\n")
        for im, m in zip(test_images, sub):
            f.write(im["file_name"] + "," + " ".join(map(str, m.ravel().tolist())) + "\n")

    # pseudo-labels over the test images, with ignored pixels
    pdir = os.path.join(root, "pseudo")
    os.makedirs(os.path.join(pdir, "masks"))
    pimgs = []
    for k, im in enumerate(test_images):
        m = np.zeros((H, W), np.uint8)
        m[5:30, 5:40] = 7 if k == 0 else 3
        m[30:40, :] = IGNORE_INDEX
        cv2.imwrite(os.path.join(pdir, "masks", f"{k}.png"), m)
        pimgs.append({**im, "mask_file": f"masks/{k}.png"})
    with open(os.path.join(pdir, "pseudo.json"), "w") as f:
        json.dump({"images": pimgs, "categories": _coco([])["categories"], "teachers": ["runs/x/best.pt"],
                   "threshold": 0.7}, f)

    # a run: args.json, metrics.jsonl, and a real checkpoint of the demo model (random weights)
    import torch

    from models import build_model
    run = os.path.join(root, "run")
    os.makedirs(run)
    torch.manual_seed(0)
    model = build_model("upernet_convnext_demo")
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": NUM_CLASSES},
               os.path.join(run, "best.pt"))
    with open(os.path.join(run, "args.json"), "w") as f:
        json.dump({"model": "upernet_convnext_demo", "data_root": data, "iters": 40,
                   "train_json": [os.path.join(data, "train.json")], "val_json": os.path.join(data, "val.json")}, f)
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for it in range(0, 41, 5):
            f.write(json.dumps({"iter": it, "loss": 2.0 / (1 + it / 10), "loss_aux": 0.8 / (1 + it / 10),
                                "lr": 1e-3 * (1 - it / 40), "samples_per_s": 30.0, "data_wait_s": 0.01,
                                "mem_gb": 0.1}) + "\n")
            if it % 20 == 0 and it:
                f.write(json.dumps({"iter": it, "miou": 0.1 + it / 400, "acc": 0.5, "macc": 0.2,
                                    "iou": [0.5, 0.1, None, 0.2, 0.0, 0.0, 0.1, 0.0, 0.3, None, 0.05]}) + "\n")
    return {"data": data, "csv": csv, "pseudo": pdir, "run": run}


def build(fx, out, extra=()):
    import visualize
    argv = ["--data-root", fx["data"], "--json", "train.json", "--run", fx["run"], "--csv", fx["csv"],
            "--pseudo", fx["pseudo"], "--preview-aug", "--aug-n", "3", "--aug-crop-size", "64", "--thumb", "128",
            "--out", out, *extra]
    return visualize.main(visualize.get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("viz"))
    fx = make_fixture(root)
    out = os.path.join(root, "site")
    build(fx, out)
    return fx, out


def _srcs(html):
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def test_site_is_complete_and_offline(site):
    fx, out = site
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    for anchor in ("data", "run0", "submission", "pseudo", "aug"):
        assert f'<section id="{anchor}">' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "network asset in the page"
    refs = _srcs(html)
    assert len(refs) > 30
    for r in refs:
        assert os.path.isfile(os.path.join(out, r)), r
    for dirpath, _, files in os.walk(out):
        assert not [f for f in files if f.endswith(".tmp") or f.startswith(".")], "temp file left behind"
    # the gallery's filter data: image 1 holds Paper and Battery, image 3 only Plastic bag
    assert 'data-classes=" 2 9 "' in html and 'data-classes=" 8 "' in html
    # the submission decoded: row 1 Paper + Metal, row 2 Glass only
    sub = html[html.index('<section id="submission">'):html.index('<section id="pseudo">')]
    assert 'data-classes=" 2 4 "' in sub and 'data-classes=" 5 "' in sub
    assert "Rows match" in sub
    pseudo = html[html.index('<section id="pseudo">'):]
    assert "&quot;threshold&quot;: 0.7" in pseudo and 'data-classes=" 7 "' in pseudo
    # the worst-image panels: ground truth, prediction and error map for every evaluated image
    run = html[html.index('<section id="run0">'):html.index('<section id="submission">')]
    assert run.count('alt="errors"') == 4 and "confusion matrix" in run


def test_site_layers_match_labels(site):
    """The label layer written for a gallery image is the palette colour of the painted mask, pixel for pixel."""
    fx, out = site
    from data.coco import CocoSegDataset
    ds = CocoSegDataset(fx["data"], [os.path.join(fx["data"], "train.json")])
    layer = cv2.imread(os.path.join(out, "img/data/0000_batch_01_vt_0001_m.png"), cv2.IMREAD_UNCHANGED)
    assert layer is not None and layer.shape == (H, W, 4)
    rgba = cv2.cvtColor(layer, cv2.COLOR_BGRA2RGBA)
    assert (rgba == draw.mask_rgba(ds.load_mask(0))).all()


def test_rebuild_prunes_stale_files(site, tmp_path):
    fx, out = site
    out2 = str(tmp_path / "s")
    shutil.copytree(out, out2)
    stale = os.path.join(out2, "img", "data", "9999_gone.jpg")
    open(stale, "wb").write(b"x")
    import visualize
    visualize.main(visualize.get_args_parser().parse_args(
        ["--data-root", fx["data"], "--json", "train.json", "--out", out2, "--thumb", "64"]))
    assert not os.path.exists(stale)
    assert not os.path.exists(os.path.join(out2, "img", "aug"))  # a section not built this time leaves no files
    html = open(os.path.join(out2, "index.html")).read()
    assert all(os.path.isfile(os.path.join(out2, r)) for r in _srcs(html))


@pytest.mark.parametrize("case", ["root", "json", "run", "csv", "pseudo", "csv_image", "metrics", "out"])
def test_missing_inputs_exit_2(site, tmp_path, case, capsys):
    fx, _ = site
    import visualize
    data, run, csv, pseudo, json_ = fx["data"], fx["run"], None, None, "train.json"
    if case == "root":
        data = str(tmp_path / "nope")
    elif case == "json":
        json_ = "missing.json"
    elif case == "run":
        run = str(tmp_path / "norun")
    elif case == "csv":
        csv = str(tmp_path / "none.csv")
    elif case == "pseudo":
        pseudo = str(tmp_path)
    elif case == "csv_image":  # a CSV row whose image is not under the data root
        csv = str(tmp_path / "s.csv")
        with open(fx["csv"]) as f, open(csv, "w") as g:
            g.write(f.read().replace("batch_03/0002.png", "batch_03/9999.png"))
    elif case == "metrics":
        run = str(tmp_path / "emptyrun")
        os.makedirs(run)
    elif case == "out":  # a non-empty folder that is not a report: never written into (stale files get pruned)
        os.makedirs(tmp_path / "site" / "img")
        open(tmp_path / "site" / "img" / "precious.jpg", "w").close()
    argv = ["--data-root", data, "--json", json_, "--out", str(tmp_path / "site")]
    argv += ["--run", run] if case in ("run", "metrics") else []
    argv += ["--csv", csv] if csv else []
    argv += ["--pseudo", pseudo] if pseudo else []
    with pytest.raises(SystemExit) as e:
        visualize.main(visualize.get_args_parser().parse_args(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    named = {"root": "nope", "json": "missing.json", "run": "norun", "csv": "none.csv", "pseudo": "pseudo.json",
             "csv_image": "9999.png", "metrics": "metrics.jsonl", "out": "site"}[case]
    assert named in err, err
    if case == "out":
        assert os.path.exists(tmp_path / "site" / "img" / "precious.jpg")


def test_unloadable_checkpoint_costs_only_the_predictions(site, tmp_path, capsys):
    fx, _ = site
    run = str(tmp_path / "run")
    shutil.copytree(fx["run"], run)
    open(os.path.join(run, "best.pt"), "wb").write(b"not a checkpoint")
    import visualize
    index = visualize.main(visualize.get_args_parser().parse_args(
        ["--data-root", fx["data"], "--json", "train.json", "--run", run, "--out", str(tmp_path / "s")]))
    html = open(index).read()
    assert "no predictions:" in html and "best.pt: cannot load checkpoint" in html and "training loss" in html
    assert "best.pt: cannot load checkpoint" in capsys.readouterr().err


@pytest.mark.heavy
def test_report_miou_is_infer_eval_miou(tmp_path, demo_data):
    """The report predicts through engine.predict with infer.py's settings and scores through csrc.ops: on a tiny
    trained checkpoint over demo images whose side is no multiple of 32, its mIoU and per-class IoU are
    infer.py --eval's, bit for bit (padded to a multiple of 32 instead, these 100-px images score differently:
    0.087 against 0.077 on the development machine)."""
    import sys

    import torch

    import infer
    import visualize
    from csrc import ops
    from data.coco import CocoSegDataset
    from viz.report import Ctx, read_run
    from viz.run_section import evaluate_run
    from viz.site import SiteWriter
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = str(tmp_path / "run")
    demo = demo_data(train=8, val=4, test=1, extra=0, size=100, seed=4, fresh=True)
    r = subprocess.run([sys.executable, "train.py", "--data-root", demo, "--out", run, "--model",
                        "upernet_convnext_demo", "--iters", "150", "--batch-size", "4", "--crop-size", "96",
                        "--workers", "0", "--lr", "3e-3", "--warmup-iters", "5", "--eval-interval", "150",
                        "--log-interval", "20", "--no-progress"], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    want = infer.main(infer.get_args_parser().parse_args(
        ["--ckpt", os.path.join(run, "best.pt"), "--data-root", demo, "--json", "val.json", "--eval", "--out", "",
         "--workers", "0"]))["single"]
    assert int((want["iou"][1:] > 0).sum()) >= 2 and want["miou"] < 1  # trained: objects found, not all right

    site = str(tmp_path / "site")
    args = visualize.get_args_parser().parse_args(["--data-root", demo, "--json", "val.json", "--run", run,
                                                   "--out", site, "--thumb", "64"])
    html = open(visualize.main(args), encoding="utf-8").read()
    assert f"<td>{want['miou']:.4f}</td>" in html[html.index('<section id="run0">'):]
    ds = CocoSegDataset(demo, os.path.join(demo, "val.json"))
    got = evaluate_run(Ctx(SiteWriter(str(tmp_path / "s2")), demo), read_run(run), ds, "val.json", args)
    assert got["scores"]["miou"] == want["miou"] and len(got["per"]) == len(ds)
    assert torch.equal(ops.miou(torch.from_numpy(got["cm"]))["iou"].nan_to_num(-1), want["iou"].nan_to_num(-1))


# ------------------------------------------------------------------------------------------------ preview
def test_preview_grid_and_atomic_write(tmp_path):
    from test_transforms import FakeDataset
    from viz.preview import preview_grid, write_picture
    ds = FakeDataset(n=3)
    samples = [(ds[i]["image"], ds[i]["mask"]) for i in range(3)]
    grid = preview_grid(samples, cell=64, titles=ds.image_ids)
    assert grid.dtype == np.uint8 and grid.shape[1] == 2 * (2 * 64 + 4) and grid.shape[0] > 2 * 64
    present = sorted({int(c) for _, m in samples for c in np.unique(m)})
    legend = draw.legend([c for c in present if c < NUM_CLASSES], ignore=IGNORE_INDEX in present)
    assert (grid[-legend.shape[0]:, :legend.shape[1]] == legend).all()  # the legend lists the classes shown
    out = tmp_path / "sub" / "grid.jpg"
    write_picture(str(out), grid)
    assert cv2.imread(str(out)) is not None
    assert [p for p in os.listdir(out.parent) if p != "grid.jpg"] == []


def test_preview_cli(tmp_path):
    import sys
    root = tmp_path / "root"
    (root / "batch_01_vt").mkdir(parents=True)
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(3):
        name = f"batch_01_vt/{i:04d}.jpg"
        cv2.imwrite(str(root / name), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        images.append(dict(id=10 + i, file_name=name, height=64, width=64))
        anns.append(dict(id=100 + i, image_id=10 + i, category_id=2, iscrowd=0, area=400.0,
                         segmentation=[[10, 10, 30, 10, 30, 30, 10, 30]], bbox=[10, 10, 20, 20]))
        anns.append(dict(id=200 + i, image_id=10 + i, category_id=9, iscrowd=0, area=100.0,
                         segmentation=[[40, 40, 50, 40, 50, 50, 40, 50]], bbox=[40, 40, 10, 10]))
    cats = [dict(id=2, name="Paper"), dict(id=9, name="Battery")]
    (root / "train.json").write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    out = tmp_path / "grid.jpg"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "viz.preview", "--data-root", str(root), "--json", "train.json",
                        "--n", "3", "--out", str(out), "--copy-paste", "--crop-size", "64"],
                       cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)) is not None
    r = subprocess.run([sys.executable, "-m", "viz.preview", "--data-root", str(root), "--json", "nope.json"],
                       cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "nope.json" in r.stderr


# ------------------------------------------------------------------------------------------------ browser
def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def run_selftest(browser, index, shot=None, timeout=60):
    """Open index.html?selftest=1 headless; return (parsed selftest JSON or None, console lines, raw stderr)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--hide-scrollbars", "--window-size=1400,1800", "--virtual-time-budget=20000", "--dump-dom"]
        if shot:
            cmd.append(f"--screenshot={shot}")
        cmd.append("file://" + os.path.abspath(index) + "?selftest=1")
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="selftest">(.*?)</pre>', p.stdout, re.S)
    res = None
    if m:
        import html as _html
        res = json.loads(_html.unescape(m.group(1)))
    console = [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]
    return res, console, p.stderr


@pytest.fixture(scope="module")
def browser():
    b = find_chromium()
    if b is None:
        msg = ("NO BROWSER: chromium not found, the in-browser test of the report is SKIPPED "
               "(apt-get install -y chromium; .ci/run installs it)")
        print("\n" + msg)
        pytest.skip(msg)
    return b


def test_site_in_headless_chromium(browser, site, tmp_path):
    fx, out = site
    shot = str(tmp_path / "report.png")
    res, console, stderr = run_selftest(browser, os.path.join(out, "index.html"), shot)
    assert res is not None, "the page's self-test wrote nothing (script broken?):\n" + stderr[-3000:]
    failed = [c for c in res["checks"] if not c["ok"]]
    assert res["ok"], json.dumps({"broken": res["broken"], "errors": res["errors"], "failed": failed}, indent=1)
    assert res["images"] > 30 and not console, console
    names = {c["name"] for c in res["checks"]}
    assert {"data: filter class 9", "submission: filter class 5", "pseudo: filter class 3"} <= names
    assert os.path.getsize(shot) > 10_000
    print(f"\nscreenshot of the report: {shot}")

    # the check must be able to fail: a missing image ...
    broken = str(tmp_path / "broken")
    shutil.copytree(out, broken)
    victim = os.path.join(broken, "img", "submission")
    victim = os.path.join(victim, sorted(f for f in os.listdir(victim) if f.endswith("_m.png"))[0])
    os.unlink(victim)
    res, _, _ = run_selftest(browser, os.path.join(broken, "index.html"))
    assert res is not None and not res["ok"] and any(os.path.basename(victim) in b for b in res["broken"]), res

    # ... and a script error
    page = os.path.join(out, "index.html")
    bad = str(tmp_path / "bad.html")
    shutil.copytree(os.path.join(out, "img"), str(tmp_path / "img"))
    html = open(page, encoding="utf-8").read().replace("</main>", "<script>undefinedFunction();</script></main>")
    open(bad, "w", encoding="utf-8").write(html)
    res, console, _ = run_selftest(browser, bad)
    assert res is not None and not res["ok"] and any("undefinedFunction" in e for e in res["errors"]), res
    assert console
