"""Data-pipeline throughput per worker process: JPEG decode + mask + train augmentation at 512 + collate.

    python bench/bench_data.py                                  # generates 512 px demo data into a temp dir
    python bench/bench_data.py --data-root demo_data --json train.json --n 200 --rounds 3
    python bench/bench_data.py --loader-workers 4               # also: end-to-end DataLoader with 4 workers

Runs ours (data/transforms/) and torchvision.transforms.v2 doing the same steps, in the same process, interleaved
round by round, on the same decoded samples (decode and mask are data.coco.CocoSegDataset's for both). Pinned to one
thread (torch and OpenCV), as a DataLoader worker is. Reports samples per CPU-second (what one core sustains, least
disturbed by other processes) and wall samples/s (best round). Target: ≥ 100 samples/s per core including decode.

torchvision v2 has no mmseg brightness (+δ), cat_max_ratio crop, box or motion blur: the v2 rows use the nearest v2
equivalents (multiplicative brightness, plain RandomCrop, GaussianBlur of 3/5/7), and a torch.rot90 transform for
RandomRotate90, which v2 lacks.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.loader import TrainSet, build_train_loader, collate  # noqa: E402
from data.transforms import build_transform  # noqa: E402


def make_data(out: str, n: int, size: int) -> None:
    cmd = [sys.executable, "-m", "data.demo", "--out", out, "--train", str(n), "--val", "1", "--test", "1",
           "--extra", "0", "--size", str(size)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def tv2_pipeline(crop: int, ratio_range):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    class RandomRotate90(v2.Transform):
        def __init__(self, p: float):
            super().__init__()
            self.p = p

        def make_params(self, flat_inputs):
            return dict(k=int(torch.randint(1, 4, ())) if float(torch.rand(())) < self.p else 0)

        def transform(self, inpt, params):
            if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
                return inpt
            return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)

    if ratio_range:
        geometry = [v2.RandomResize(int(crop * ratio_range[0]), int(crop * ratio_range[1])),
                    v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255})]
    else:
        geometry = [v2.Resize(size=None, max_size=crop)]
    jitter = [v2.RandomApply([v2.ColorJitter(**kw)], p=0.5) for kw in
              (dict(brightness=32 / 128), dict(contrast=(0.5, 1.5)), dict(saturation=(0.5, 1.5)), dict(hue=0.1))]
    return v2.Compose([*geometry, v2.RandomHorizontalFlip(0.5), *jitter, RandomRotate90(0.5),
                       v2.RandomApply([v2.RandomChoice([v2.GaussianBlur(k) for k in (3, 5, 7)])], p=0.1)])


class TV2Set:
    def __init__(self, base, crop, ratio_range):
        from torchvision import tv_tensors
        self.base, self.tv = base, tv_tensors
        self.t = tv2_pipeline(crop, ratio_range)

    def __getitem__(self, key):
        _, index = key
        s = self.base[index]
        image = self.tv.Image(torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous())
        mask = self.tv.Mask(torch.from_numpy(s["mask"]))
        image, mask = self.t(image, mask)
        return dict(image=image.as_subclass(torch.Tensor), mask=mask.as_subclass(torch.Tensor))


class DecodeOnly:
    def __init__(self, base):
        self.base = base

    def __getitem__(self, key):
        s = self.base[key[1]]
        return dict(image=torch.from_numpy(s["image"]).permute(2, 0, 1), mask=torch.from_numpy(s["mask"]))


def run(dataset, n: int, batch: int, n_images: int, offset: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for n samples, collated in batches."""
    t0, c0 = time.perf_counter(), time.process_time()
    buf = []
    for j in range(n):
        p = offset + j
        buf.append(dataset[(p // n_images, p % n_images)])
        if len(buf) == batch:
            collate(buf)
            buf = []
    return time.perf_counter() - t0, time.process_time() - c0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="COCO root; default: generate 512 px demo data in a temp dir")
    p.add_argument("--json", default="train.json")
    p.add_argument("--images", type=int, default=48, help="images to generate when no --data-root")
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--n", type=int, default=96, help="samples per pipeline per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--loader-workers", type=int, default=0, help="also time build_train_loader with this many workers")
    return p


def main(args) -> None:
    from data.coco import CocoSegDataset

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    tmp = None
    root = args.data_root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        root = tmp.name
        t = time.perf_counter()
        make_data(root, args.images, args.crop_size)
        print(f"generated {args.images} {args.crop_size}px JPEG images in {time.perf_counter() - t:.1f}s")
    base = CocoSegDataset(root, [os.path.join(root, args.json)])
    N = len(base)
    for i in range(N):  # warm the mask cache and the page cache: steady state of epoch ≥ 2
        base[i]
    crop = args.crop_size
    rr = (0.5, 2.0)
    pipes = {
        "decode + mask only": DecodeOnly(base),
        "ours  train": TrainSet(base, build_transform("train", crop), seed=0),
        "tv2   train": TV2Set(base, crop, None),
        "ours  train + copy-paste 0.5": TrainSet(base, build_transform("train", crop, copy_paste_p=0.5), seed=0),
        "ours  train rr0.5-2 + crop": TrainSet(base, build_transform("train", crop, ratio_range=rr), seed=0),
        "tv2   train rr0.5-2 + crop": TV2Set(base, crop, rr),
    }
    for ds in pipes.values():  # warm-up
        run(ds, args.batch, args.batch, N, 0)
    wall = {k: [] for k in pipes}
    cpu = {k: [] for k in pipes}
    for r in range(args.rounds):
        for name, ds in pipes.items():
            w, c = run(ds, args.n, args.batch, N, r * args.n)
            wall[name].append(args.n / w)
            cpu[name].append(args.n / max(c, 1e-9))
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n{N} images of {os.path.abspath(root)}, crop {crop}, batch {args.batch}, {args.n} samples x "
          f"{args.rounds} rounds, 1 thread; {os.cpu_count()} CPUs visible, load avg {os.getloadavg()[0]:.1f} ({dev})")
    print(f"{'pipeline':32s} {'ms/sample':>9s} {'samples/s/core':>14s} {'wall samples/s':>14s} {'ours/tv2':>8s}")
    best_cpu = {k: max(v) for k, v in cpu.items()}
    for name in pipes:
        ratio = ""
        if name.startswith("ours"):
            twin = name.replace("ours ", "tv2  ", 1)
            if twin in best_cpu:
                ratio = f"{best_cpu[name] / best_cpu[twin]:.2f}x"
        print(f"{name:32s} {1e3 / best_cpu[name]:9.2f} {best_cpu[name]:14.1f} {max(wall[name]):14.1f} {ratio:>8s}")
    target = best_cpu["ours  train"]
    print(f"\ntrain preset at {crop}: {target:.0f} samples/s per core incl. decode "
          f"({'meets' if target >= 100 else 'BELOW'} the 100/s target)")
    if args.loader_workers:
        it = build_train_loader(base, build_transform("train", crop), batch_size=args.batch, seed=0,
                                workers=args.loader_workers, pin_memory=False)
        next(it)
        n_batches = max(1, 4 * args.n // args.batch)
        t = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        dt = time.perf_counter() - t
        print(f"build_train_loader, {args.loader_workers} workers: {n_batches * args.batch / dt:.1f} samples/s total")
        del it
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
