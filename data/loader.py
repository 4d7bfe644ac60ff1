"""Train/eval DataLoaders: seeded per-sample augmentation, an endless DDP-sharded sampler, uint8 batches.

    loader = build_train_loader(CocoSegDataset(root, ["train.json"]), build_transform("train"), batch_size=2,
                                seed=0, workers=4, rank=rank, world_size=world, start_sample=step * 2 * world)
    batch = to_device(next(loader), device)          # image float32 normalised on the device, mask int64

Reproducibility: sample ``index`` of epoch ``e`` is augmented with ``np.random.default_rng([seed, e, index])``, and the
order of samples is a pure function of ``seed``, so a run is the same with any number of workers, and with any
number of ranks for the same global batch; resuming with ``start_sample`` = samples already consumed globally
replays the stream exactly.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import weakref
from typing import Iterator, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader as _TorchDataLoader
from torch.utils.data import Dataset, Sampler, get_worker_info

from data.classes import IGNORE_INDEX, PIXEL_MEAN, PIXEL_STD
from data.coco import DataError
from data.semi import PoolSet
from data.transforms import Compose, CopyPaste, DatasetSource, copy_paste_steps


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit torch seed for (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=g)


class InfiniteSampler(Sampler):
    """Endless stream of ``(epoch, index)`` keys for this rank.

    The global stream is the concatenation of per-epoch permutations (epoch e: ``torch.randperm`` with a generator
    seeded from (seed, e)). Counting from ``start`` (global samples already consumed), global batch k is
    stream[start + kG : start + (k+1)G] and rank r yields its contiguous slice [rB, (r+1)B) of it, B = G / world_size.
    So the ranks' slices of a global batch together are exactly the 1-rank run's batch, whatever world_size."""

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 global_batch_size: Optional[int] = None, start: int = 0):
        if num_samples <= 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        global_batch_size = global_batch_size or world_size
        if global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} is not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.global_batch_size, self.start = global_batch_size, start
        self.local_batch_size = global_batch_size // world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n, G, B = self.num_samples, self.global_batch_size, self.local_batch_size
        epoch, perm = -1, None
        pos = self.start + self.rank * B
        while True:
            for p in range(pos, pos + B):
                e = p // n
                if e != epoch:
                    epoch, perm = e, epoch_permutation(n, self.seed, e).tolist()
                yield e, perm[p - e * n]
            pos += G


class WeightedInfiniteSampler(InfiniteSampler):
    """InfiniteSampler's stream and sharding, with each "epoch" of n keys drawn with replacement from ``weights``
    (rare-class sampling, data/rcs.py) by ``torch.multinomial`` under a generator seeded from (seed, e).

    A key is ``(p, index)`` with p the global stream position, so an image drawn twice is augmented differently;
    the stream is still a pure function of (seed, position): exact resume and any world size hold as above."""

    def __init__(self, weights, num_samples: Optional[int] = None, **kw):
        w = torch.as_tensor(weights, dtype=torch.float64)  # (N,)
        if w.ndim != 1 or not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise ValueError("sample weights must be a 1-D non-negative vector with a positive sum")
        super().__init__(num_samples or len(w), **kw)
        self.weights = w

    def epoch_draws(self, epoch: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(_epoch_seed(self.seed, epoch))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n, G, B = self.num_samples, self.global_batch_size, self.local_batch_size
        epoch, draws = -1, None
        pos = self.start + self.rank * B
        while True:
            for p in range(pos, pos + B):
                e = p // n
                if e != epoch:
                    epoch, draws = e, self.epoch_draws(e)
                yield p, draws[p - e * n]
            pos += G


class TrainSet(Dataset):
    """``base[index]`` augmented with ``rng = default_rng([seed, epoch, index])``.

    Keys are ``(epoch, index)`` (what InfiniteSampler yields) or a plain int index (epoch 0). Returns
    dict(image=uint8 (3, H, W), mask=uint8 (H, W)). CopyPaste steps in ``transform`` without a source get one drawing
    from ``base``; ``copy_paste_p > 0`` prepends a CopyPaste step when ``transform`` has none."""

    def __init__(self, base, transform, seed: int = 0, copy_paste_p: float = 0.0,
                 copy_paste_kwargs: Optional[dict] = None):
        self.base, self.seed = base, int(seed)
        self.transform = transform or Compose([])
        steps = copy_paste_steps(self.transform)
        if copy_paste_p > 0:
            if steps:
                raise ValueError("copy-paste is already in the transform; set copy_paste_p in one place only")
            self.transform = Compose([CopyPaste(None, p=copy_paste_p, **(copy_paste_kwargs or {})), self.transform])
            steps = copy_paste_steps(self.transform)
        if steps and getattr(base, "has_labels", True) is False:
            raise ValueError("copy-paste needs a labelled dataset")
        source = DatasetSource(base)
        for step in steps:
            if step.source is None:
                step.source = source

    def __len__(self) -> int:
        return len(self.base)

    def sample(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The augmented (image (H, W, 3), mask (H, W)) as NumPy arrays."""
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        s = self.base[int(index)]
        if s["mask"] is None:
            raise ValueError(f"training sample {s.get('image_id', index)} has no mask")
        return self.transform(s["image"], s["mask"], rng)

    def __getitem__(self, key):
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        image, mask = self.sample(epoch, index)
        # A (3, H, W) view of the HWC array: collate's stack does the one transposing copy.
        return dict(image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                    mask=torch.from_numpy(np.ascontiguousarray(mask)))


class EvalSet(Dataset):
    """``base`` restricted to ``indices`` (this rank's shard), optionally transformed (deterministically).

    ``skip_invalid``: an image that cannot be loaded (a DataError: unreadable, corrupt, wrong size) does not end the
    pass inside a worker; its item carries ``error`` (the one-line reason) and a 1×1 placeholder image (mask 255), and
    the script leaves it out and lists it. Otherwise the DataError propagates (one line; see DataError)."""

    def __init__(self, base, indices, transform=None, skip_invalid: bool = False):
        self.base, self.indices, self.transform = base, list(indices), transform
        self.skip_invalid = skip_invalid

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        index = self.indices[j]
        try:
            s = self.base[index]
        except DataError as e:
            if not self.skip_invalid:
                raise
            labelled = getattr(self.base, "has_labels", False)
            return dict(image=torch.zeros(3, 1, 1, dtype=torch.uint8),
                        mask=torch.full((1, 1), IGNORE_INDEX, dtype=torch.uint8) if labelled else None,
                        image_id=self.base.image_ids[index], index=index, error=str(e))
        image, mask = s["image"], s["mask"]
        if self.transform is not None:
            image, mask = self.transform(image, mask, np.random.default_rng([0, index]))
        return dict(image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                    mask=None if mask is None else torch.from_numpy(np.ascontiguousarray(mask)),
                    image_id=s["image_id"], index=index, error=None)


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """In a worker, allocate straight into shared memory (as default_collate does) so the batch crosses to the
    main process without another copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape)


def collate(samples: list[dict], mask_dtype: torch.dtype = torch.int64) -> dict:
    """Stack dict(image (3, H, W) uint8, mask (H, W) or None, ...) into a batch. Different sizes are padded
    bottom/right (image 0, mask 255) and ``sizes`` lists each sample's (h, w) before padding."""
    sizes = [tuple(s["image"].shape[1:]) for s in samples]
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    same = all(sz == (H, W) for sz in sizes)
    image = _empty((len(samples), 3, H, W), torch.uint8)
    if same:
        torch.stack([s["image"] for s in samples], out=image)
    else:
        image.zero_()
        for i, s in enumerate(samples):
            image[i, :, :sizes[i][0], :sizes[i][1]] = s["image"]
    batch = dict(image=image, sizes=sizes)
    if any(s.get("mask") is None for s in samples):
        batch["mask"] = None
    else:
        mh = max(s["mask"].shape[0] for s in samples)
        mw = max(s["mask"].shape[1] for s in samples)
        mask = _empty((len(samples), mh, mw), mask_dtype)
        if not all(tuple(s["mask"].shape) == (mh, mw) for s in samples):
            mask.fill_(IGNORE_INDEX)
        for i, s in enumerate(samples):
            m = s["mask"]
            mask[i, :m.shape[0], :m.shape[1]].copy_(m)
        batch["mask"] = mask
    for key in samples[0]:
        if key not in ("image", "mask"):
            vals = [s[key] for s in samples]
            same = all(isinstance(v, torch.Tensor) and v.shape == vals[0].shape for v in vals)
            batch[key] = torch.stack(vals) if same else vals  # a pool's strong views and CutMix boxes (data.semi)
    return batch


class _Collate:
    def __init__(self, mask_dtype: torch.dtype):
        self.mask_dtype = mask_dtype

    def __call__(self, samples):
        return collate(samples, self.mask_dtype)


_LIVE_ITERATORS: "weakref.WeakSet" = weakref.WeakSet()  # multi-process iterators whose workers may be running


class DataLoader(_TorchDataLoader):
    """torch's DataLoader, whose worker processes start without OpenCV's thread pool and are always shut down when
    the main process exits.

    A forked worker inherits OpenCV's pool state but not its threads, and resizing that pool (_worker_init's
    setNumThreads(1)) then waits on threads that do not exist: the workers fork while the main process's pool is
    at one thread, and it gets its size back once they have started. Workers ignore SIGTERM (_worker_init), so an
    iterator still alive in the traceback of an exception (a corrupt image met in a worker, a NaN stop) would keep
    its workers, and multiprocessing's exit handler, which stops daemonic children with SIGTERM and then joins
    them, would wait forever: _shutdown_workers_at_exit stops them first."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        # Workers start with SIGTERM blocked: a blocked signal mask is inherited across fork and exec, so it covers
        # the seconds a spawn / forkserver worker spends importing before _worker_init runs (and the forkserver
        # itself), where the default action would kill it. The main process only defers a SIGTERM that lands in
        # this window: it is delivered when the mask is restored (or at once to another of its threads).
        # They also start while OpenCV's pool is at one thread: a child forked from a threaded pool hangs in
        # _worker_init's setNumThreads.
        block = hasattr(signal, "pthread_sigmask")
        ctx = self.multiprocessing_context or multiprocessing
        if block and ctx.get_start_method() != "fork":
            # Started here, the resource tracker would unblock SIGTERM in this thread once it runs (it blocks and
            # unblocks SIGINT and SIGTERM around its own launch): start it first.
            from multiprocessing import resource_tracker
            resource_tracker.ensure_running()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if block else None
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            it = super().__iter__()  # forks the workers (the first time, for persistent ones)
        finally:
            cv2.setNumThreads(threads)
            if block:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _LIVE_ITERATORS.add(it)
        return it


@atexit.register  # registered after multiprocessing's own exit handler (imported with torch), so it runs first
def _shutdown_workers_at_exit() -> None:
    for it in list(_LIVE_ITERATORS):
        try:
            it._shutdown_workers()  # the orderly path: done event, a None per index queue, join
        except Exception:
            pass
        for w in getattr(it, "_workers", []):
            if w.is_alive():  # still busy after the join's timeout: SIGTERM would be ignored
                os.kill(w.pid, signal.SIGKILL)


def _worker_init(_worker_id: int) -> None:
    # One OpenCV thread per worker: N workers on N cores, no oversubscription (torch already sets 1 thread there).
    cv2.setNumThreads(1)
    # SIGTERM is the main process's to handle: torchrun's shutdown (os.killpg of each rank's session) and Slurm's
    # scancel reach the workers too, and a worker that died of it would take its rank down mid-step ("DataLoader
    # worker ... is killed by signal: Terminated") before it could save. The main process decides when to stop;
    # workers end with it (DataLoader shutdown, or its watchdog when the main process is gone).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_train_loader(dataset, transform, batch_size: int, seed: int, workers: int = 4, rank: int = 0,
                       world_size: int = 1, start_sample: int = 0, pin_memory: Optional[bool] = None,
                       copy_paste_p: float = 0.0, copy_paste_kwargs: Optional[dict] = None,
                       prefetch_factor: int = 2, mask_dtype: torch.dtype = torch.int64,
                       sample_weights=None) -> Iterator[dict]:
    """Endless iterator of this rank's batches: dict(image uint8 (B, 3, H, W), mask int64 (B, H, W), sizes).

    ``batch_size`` is per rank; the global batch is batch_size × world_size. ``start_sample`` = global samples already
    consumed (steps × global batch) to resume. ``dataset`` is a base dataset (wrapped in TrainSet with ``transform``)
    or a ready TrainSet (then ``transform`` must be None). Pinned memory defaults to CUDA availability.
    ``sample_weights`` (N,): draw images with these probabilities (WeightedInfiniteSampler) instead of permutations."""
    if isinstance(dataset, (TrainSet, PoolSet)):
        if transform is not None or copy_paste_p > 0:
            raise ValueError("pass transform / copy-paste to the TrainSet, not to build_train_loader")
        train_set = dataset
    else:
        train_set = TrainSet(dataset, transform, seed, copy_paste_p=copy_paste_p,
                             copy_paste_kwargs=copy_paste_kwargs)
    kw = dict(seed=seed, rank=rank, world_size=world_size, global_batch_size=batch_size * world_size,
              start=start_sample)
    if sample_weights is None:
        sampler = InfiniteSampler(len(train_set), **kw)
    else:
        if len(sample_weights) != len(train_set):
            raise ValueError(f"{len(sample_weights)} sample weights for {len(train_set)} training images")
        sampler = WeightedInfiniteSampler(sample_weights, **kw)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=_Collate(mask_dtype), pin_memory=pin_memory, drop_last=True,
                        persistent_workers=workers > 0, worker_init_fn=_worker_init if workers > 0 else None,
                        prefetch_factor=prefetch_factor if workers > 0 else None)
    return iter(loader)


def build_eval_loader(dataset, batch_size: int = 1, workers: int = 2, rank: int = 0, world_size: int = 1,
                      transform=None, pin_memory: Optional[bool] = None, skip_invalid: bool = False) -> DataLoader:
    """Deterministic, sharded without duplicates (rank r takes indices r::world_size, so shard sizes may differ by
    one; a rank may get none). Yields dict(image uint8 (B, 3, H, W), mask int64 (B, H, W) or None, image_id
    list[str], index list[int], sizes list[(h, w)] before padding, error list[str | None] (see EvalSet)).
    Re-iterable; workers live for one pass."""
    indices = range(rank, len(dataset), world_size)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(EvalSet(dataset, indices, transform, skip_invalid), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=_Collate(torch.int64), pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers > 0 else None)


_STATS: dict = {}


def to_device(batch: dict, device, channels_last: bool = False, normalize: bool = True) -> dict:
    """Move a batch to ``device`` (non_blocking; pinned batches overlap the copy). ``normalize``: image becomes
    float32 (x - PIXEL_MEAN) / PIXEL_STD on the device; otherwise it stays uint8 (for ``model.normalize``).
    mask becomes int64."""
    device = torch.device(device)
    out = dict(batch)
    image = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W) uint8
    if normalize:
        if device not in _STATS:
            mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = torch.tensor(PIXEL_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            _STATS[device] = (mean, 1.0 / std)
        mean, inv_std = _STATS[device]
        image = (image.float() - mean) * inv_std  # (B, 3, H, W) float32
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    out["image"] = image
    if batch.get("mask") is not None:
        out["mask"] = batch["mask"].to(device, non_blocking=True).long()  # (B, H, W)
    return out
