"""What every script shares at its edges: bad input as one line and exit 2, a progress bar that counts each image
once across ranks, and the list of skipped images gathered from every rank.

    if __name__ == "__main__":
        with cli_errors():
            main(get_args_parser().parse_args())
"""
from __future__ import annotations

import contextlib
import sys

import torch.distributed as dist

from data.coco import DataError
from engine.dist import DistInfo

EXIT_BAD_INPUT = 2  # argparse's code for a bad command line; bad files are the same kind of user error


@contextlib.contextmanager
def cli_errors():
    """Bad input ends the script with one line on stderr and exit status 2, never a traceback.

    Scripts stop on bad input with ``sys.exit("error: ...")`` (whose status would be 1) or let a DataError rise,
    also from inside a DataLoader worker (DataError keeps the worker's own one-line message). Anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
        raise
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


class ImageProgress:
    """Rank 0's tqdm over the whole image list, under torchrun too.

    Rank r predicts images r, r+W, ...: rank 0 holds the largest shard, so after its k-th image about k·W images are
    done across ranks. The bar shows min(k·W, total) and so counts every image once and ends exactly at the total,
    without a collective per batch (shards differ by one image, so ranks run different batch counts)."""

    def __init__(self, total: int, desc: str, info: DistInfo, enabled: bool = True):
        self.total, self.world, self.done = total, info.world_size, 0
        self.bar = None
        if info.is_main and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stdout)

    def update(self, n_local: int) -> None:
        """``n_local`` images of this rank's shard finished."""
        self.done += n_local
        if self.bar is not None:
            self.bar.update(min(self.done * self.world, self.total) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total - self.bar.n)  # rank 0 finished its shard: so did the others (barrier after)
            self.bar.close()


def gather_lists(items: list, info: DistInfo) -> list:
    """Every rank's list, concatenated in rank order (on every rank)."""
    if not info.enabled:
        return list(items)
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, list(items))
    return [x for g in gathered for x in g]


def report_skips(skipped: list[str], consequence: str, limit: int = 20) -> None:
    """List skipped inputs on stderr: how many, what happens to them, and each reason (the first ``limit``)."""
    if not skipped:
        return
    print(f"warning: skipped {len(skipped)} invalid input(s); {consequence}:", file=sys.stderr)
    for s in skipped[:limit]:
        print(f"  {s}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more", file=sys.stderr)
