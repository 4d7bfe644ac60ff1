"""One live job per --out: a lease file its holder renews (engine.run.claim takes it for rank 0)."""
from __future__ import annotations

import atexit
import json
import math
import os
import socket
import threading
import time
import uuid

from data.io import atomic_write_text


class Lease:
    """One live job per --out: OUT/.lease names its holder (host, pid, job) and the holder renews it (its mtime)
    every TTL/3 s from a background thread; TTL is TRASHSEG_LEASE_S (default 30). A job that finds the lease held
    by a live process exits 2 naming it: two jobs writing one folder (a launcher SIGKILLed alone leaves its ranks
    running while the scheduler starts the replacement) would delete each other's temp files and replace each
    other's last.pt. A lease of a dead process on this host, or one not renewed for TTL seconds, is taken over; a
    holder that finds its lease taken stops (the loop exits 2 without saving)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, ".lease")
        self.ttl = float(os.environ.get("TRASHSEG_LEASE_S", "30"))
        self.me = {"host": socket.gethostname(), "pid": os.getpid(),
                   "job": os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or "",
                   "token": uuid.uuid4().hex}
        self.lost: str | None = None  # the new holder, once another job took the lease over
        self._done = threading.Event()

    def _read(self) -> tuple[dict | None, float]:
        try:
            with open(self.path) as f:
                rec = json.load(f)
            return (rec if isinstance(rec, dict) else {}), time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None, 0.0
        except (OSError, ValueError):  # cut mid-write: nobody can be renewing it
            return {}, math.inf

    @staticmethod
    def describe(rec: dict) -> str:
        job = f" (job {rec['job']})" if rec.get("job") else ""
        return f"{rec.get('host', '?')} pid {rec.get('pid', '?')}{job}"

    def _gone(self, rec: dict, age: float) -> bool:
        if age >= self.ttl or not rec:
            return True
        if rec.get("host") == self.me["host"]:
            if rec.get("pid") == self.me["pid"]:
                return True  # an earlier run in this process (main() called again) that left without releasing
            try:
                os.kill(int(rec.get("pid", -1)), 0)
            except ProcessLookupError:
                return True  # its holder died (SIGKILL, node restart): no need to wait for the expiry
            except (PermissionError, ValueError, OverflowError):
                pass
        return False

    def acquire(self) -> str | None:
        """Take the lease; None when taken, else the live holder. A lease not renewed lately is watched until it is
        renewed (its holder lives: refused) or expires (taken over)."""
        while True:
            rec, age = self._read()
            if rec is None or rec.get("token") == self.me["token"] or self._gone(rec, age):
                break
            if age < self.ttl / 3 + 2:  # renewed within one period: the holder lives
                return self.describe(rec)
            time.sleep(min(1.0, self.ttl / 10))
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.me) + "\n")
        threading.Thread(target=self._renew, name="lease", daemon=True).start()
        atexit.register(self.release)
        return None

    def _renew(self) -> None:
        while not self._done.wait(self.ttl / 3):
            rec, _ = self._read()
            if rec is not None and rec.get("token") != self.me["token"]:
                self.lost = self.describe(rec)
                return
            try:
                os.utime(self.path) if rec is not None else atomic_write_text(self.path, json.dumps(self.me) + "\n")
            except OSError:
                pass

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this job's, so the next job starts at once."""
        if self._done.is_set() or os.getpid() != self.me["pid"]:
            return
        self._done.set()
        rec, _ = self._read()
        if rec and rec.get("token") == self.me["token"]:
            try:
                os.unlink(self.path)
            except OSError:
                pass
