"""data/loader.py: the endless sharded sampler, seeded samples independent of workers/ranks, resume, eval sharding,
collation and device transfer."""
import itertools
import os

import pytest
import torch

from data import loader as L
from data.classes import PIXEL_MEAN, PIXEL_STD
from data.transforms import build_transform
from test_transforms import FakeDataset


def take(it, n):
    return list(itertools.islice(it, n))


# ------------------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("n,G", [(10, 4), (7, 6), (3, 8)])
def test_sampler_ranks_partition_the_global_batches(n, G):
    steps = 9  # several epochs, global batches straddling epoch boundaries
    one = take(iter(L.InfiniteSampler(n, seed=3, global_batch_size=G)), steps * G)
    for world in (2, G) if G % 2 == 0 else (G,):
        B = G // world
        per_rank = [take(iter(L.InfiniteSampler(n, seed=3, rank=r, world_size=world, global_batch_size=G)), steps * B)
                    for r in range(world)]
        for k in range(steps):
            rebuilt = [key for r in range(world) for key in per_rank[r][k * B:(k + 1) * B]]
            assert rebuilt == one[k * G:(k + 1) * G]


def test_sampler_epochs_are_permutations_that_reshuffle():
    n = 11
    stream = take(iter(L.InfiniteSampler(n, seed=0, global_batch_size=1)), 3 * n)
    epochs = [[key for key in stream if key[0] == e] for e in range(3)]
    for e, keys in enumerate(epochs):
        assert sorted(i for _, i in keys) == list(range(n))
        assert [i for _, i in keys] == L.epoch_permutation(n, 0, e).tolist()
    assert epochs[0] != epochs[1]
    other_seed = take(iter(L.InfiniteSampler(n, seed=1, global_batch_size=1)), n)
    assert other_seed != epochs[0]


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_resume_continues_the_stream(world):
    n, G, k = 10, 4, 5
    B = G // world
    for r in range(world):
        full = take(iter(L.InfiniteSampler(n, seed=7, rank=r, world_size=world, global_batch_size=G)), 12 * B)
        resumed = take(iter(L.InfiniteSampler(n, seed=7, rank=r, world_size=world, global_batch_size=G,
                                              start=k * G)), (12 - k) * B)
        assert resumed == full[k * B:]


def test_sampler_rejects_bad_shapes():
    with pytest.raises(ValueError):
        L.InfiniteSampler(10, global_batch_size=3, world_size=2)
    with pytest.raises(ValueError):
        L.InfiniteSampler(0)
    with pytest.raises(ValueError):
        L.InfiniteSampler(10, rank=2, world_size=2, global_batch_size=4)


# ------------------------------------------------------------------------------------------------ train set
def _transform():
    return build_transform("train", 32, ratio_range=(0.5, 2.0), copy_paste_p=0.5, blur_prob=0.5)


def test_train_set_is_a_function_of_seed_epoch_index():
    ds = FakeDataset(n=5)
    a, b = L.TrainSet(ds, _transform(), seed=1), L.TrainSet(ds, _transform(), seed=1)
    x, y = a[(2, 3)], b[(2, 3)]
    assert x["image"].shape == (3, 32, 32) and x["image"].dtype == torch.uint8
    assert x["mask"].shape == (32, 32) and x["mask"].dtype == torch.uint8
    assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    assert torch.equal(a[3]["image"], a[(0, 3)]["image"])
    assert not torch.equal(a[(1, 3)]["image"], x["image"])  # another epoch, another augmentation
    assert not torch.equal(L.TrainSet(ds, _transform(), seed=2)[(2, 3)]["image"], x["image"])


def test_train_set_wires_copy_paste():
    ds = FakeDataset(n=4)
    t = build_transform("train", 32, photometric=False)
    ts = L.TrainSet(ds, t, seed=0, copy_paste_p=1.0, copy_paste_kwargs=dict(fraction=1.0, blur_sigma=0))
    assert type(ts.transform.transforms[0]).__name__ == "CopyPaste" and ts.transform.transforms[0].source
    ts[(0, 1)]
    with pytest.raises(ValueError):
        L.TrainSet(ds, build_transform("train", 32, copy_paste_p=0.5), seed=0, copy_paste_p=0.5)
    with pytest.raises(ValueError):
        L.TrainSet(FakeDataset(n=2, labelled=False), build_transform("train", 32, copy_paste_p=0.5), seed=0)


def _batches(workers, n_batches=3, **kw):
    it = L.build_train_loader(FakeDataset(n=7), _transform(), batch_size=2, seed=5, workers=workers,
                              pin_memory=False, **kw)
    out = take(it, n_batches)
    del it  # shuts the persistent workers down
    return out


def _assert_same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])


def test_train_loader_same_samples_with_0_1_2_workers():
    ref = _batches(0)
    assert ref[0]["image"].shape == (2, 3, 32, 32) and ref[0]["image"].dtype == torch.uint8
    assert ref[0]["mask"].shape == (2, 32, 32) and ref[0]["mask"].dtype == torch.int64
    _assert_same(_batches(1), ref)
    _assert_same(_batches(2), ref)


def test_workers_start_after_opencv_ran_threaded_in_the_main_process():
    """A worker forked while the main process's OpenCV pool has threads hangs resizing that pool (_worker_init)."""
    import subprocess
    import sys
    code = """if True:
        import cv2, numpy as np
        from data import loader as L
        from data.transforms import build_transform
        from test_transforms import FakeDataset
        threads = cv2.getNumThreads()
        for _ in range(8):
            cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (700, 700), interpolation=cv2.INTER_AREA)  # pool busy
            it = L.build_train_loader(FakeDataset(n=4), build_transform("train", 32), batch_size=2, seed=0,
                                      workers=2, pin_memory=False)
            next(it)
            del it
        assert cv2.getNumThreads() == threads  # the main process's pool gets its size back
        print("ok")
    """
    tests = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(tests), capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), tests])})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_train_loader_two_ranks_see_the_one_rank_global_batches():
    ds = FakeDataset(n=7)
    one = take(L.build_train_loader(ds, _transform(), batch_size=4, seed=5, workers=0, pin_memory=False), 3)
    ranks = [take(L.build_train_loader(ds, _transform(), batch_size=2, seed=5, workers=0, rank=r, world_size=2,
                                       pin_memory=False), 3) for r in range(2)]
    for k in range(3):
        assert torch.equal(torch.cat([ranks[0][k]["image"], ranks[1][k]["image"]]), one[k]["image"])
        assert torch.equal(torch.cat([ranks[0][k]["mask"], ranks[1][k]["mask"]]), one[k]["mask"])


def test_train_loader_resume_replays():
    ref = _batches(0, n_batches=5)
    _assert_same(_batches(0, n_batches=2, start_sample=3 * 2), ref[3:])


# ---------------------------------------------------------------------------------------------------- eval
def test_eval_loader_shards_without_duplicates_and_pads():
    ds = FakeDataset(n=7, vary_size=True)
    seen = []
    for r in range(2):
        for batch in L.build_eval_loader(ds, batch_size=3, workers=0, rank=r, world_size=2):
            seen += batch["index"]
            for j, (i, (h, w)) in enumerate(zip(batch["index"], batch["sizes"])):
                s = ds[i]
                assert batch["image_id"][j] == s["image_id"]
                img, mask = batch["image"][j], batch["mask"][j]
                assert torch.equal(img[:, :h, :w], torch.from_numpy(s["image"]).permute(2, 0, 1))
                assert torch.equal(mask[:h, :w], torch.from_numpy(s["mask"]).long())
                assert (img[:, h:] == 0).all() and (img[:, :, w:] == 0).all()
                assert (mask[h:] == 255).all() and (mask[:, w:] == 255).all()
    assert sorted(seen) == list(range(7)) and len(seen) == len(set(seen))
    assert seen[:4] == [0, 2, 4, 6]  # rank 0, in order


def test_eval_loader_unlabelled_and_workers():
    ds = FakeDataset(n=4, labelled=False)
    batches = list(L.build_eval_loader(ds, batch_size=2, workers=2))
    assert all(b["mask"] is None for b in batches)
    assert [i for b in batches for i in b["index"]] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------- to_device
def test_to_device_normalises():
    batch = dict(image=torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8),
                 mask=torch.randint(0, 11, (2, 8, 8), dtype=torch.uint8), sizes=[(8, 8)] * 2)
    out = L.to_device(batch, "cpu", channels_last=True)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out["image"], (batch["image"].float() - mean) / std)
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    assert out["mask"].dtype == torch.int64 and out["sizes"] == batch["sizes"]
    raw = L.to_device(batch, "cpu", normalize=False)
    assert raw["image"].dtype == torch.uint8


def test_collate_mask_dtype():
    s = [dict(image=torch.zeros(3, 4, 5, dtype=torch.uint8), mask=torch.ones(4, 5, dtype=torch.uint8))] * 2
    assert L.collate(s, torch.uint8)["mask"].dtype == torch.uint8
