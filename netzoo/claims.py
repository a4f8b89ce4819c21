"""Claim files: workers on one or several machines sharing a results folder never train the same key at once.

A worker claims a key by creating ``DIR/claims/<network>--<recipe_hash>--<seed>.claim`` holding who it is,
written whole under a temporary name and then linked to the claim's name (``netzoo.files.atomic_create``:
fails if the claim exists; atomic on local filesystems and NFS), so a claim is never seen half-written. The
worker keeps the claim's mtime fresh from a heartbeat thread, and deletes the claim when the key's parts are
written. A claim is *stale* when it is empty or unreadable (a crash while it was made: at once), when its
worker is dead (same host: the pid is gone or a zombie), or when its heartbeat is older than ``stale_s`` (any
host); a stale claim is renamed away (only one of several racing workers wins the rename) and claimed afresh.
Even a stolen claim cannot duplicate rows: every key writes its own part files, replaced atomically.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from netzoo.files import atomic_create
from netzoo.keys import key_name, key_of_name

HEARTBEAT_S = 10.0   # how often a worker touches its claims
STALE_S = 120.0      # a claim not touched for this long belongs to a dead worker (on any host)
HOST = socket.gethostname()


CLAIM = ".claim"  # a claim's suffix: DIR/claims/<network>--<recipe_hash>--<seed>.claim (netzoo.keys)


def claim_path(results_dir, key) -> Path:
    """Where the claim of ``key`` lives."""
    return Path(results_dir) / "claims" / key_name(key, CLAIM)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_claim(path: Path) -> dict:
    """The claim's owner record ({} when missing, empty or unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def is_stale(path: Path, stale_s: float = STALE_S) -> bool:
    """Whether the claim at ``path`` belongs to no live worker: empty or unreadable (claims are written
    whole before they appear, so only a crash leaves one so), its worker dead, or its heartbeat old."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    owner = read_claim(path)
    if not owner.get("token"):
        return path.exists()
    if owner.get("host") == HOST and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"]):
        return True
    return age > stale_s


def live_claims(results_dir, stale_s: float = STALE_S) -> list[dict]:
    """The owner records of every claim that is not stale: what is being trained right now."""
    folder = Path(results_dir) / "claims"
    if not folder.is_dir():
        return []
    return [{**read_claim(p), "claim": p.name} for p in sorted(folder.glob("*.claim")) if not is_stale(p, stale_s)]


def held_keys(results_dir, stale_s: float = STALE_S) -> set:
    """The keys (network, recipe_hash, seed) a live worker holds a claim on right now."""
    keys = (key_of_name(claim["claim"], CLAIM) for claim in live_claims(results_dir, stale_s))
    return {key for key in keys if key is not None}


class Claims:
    """This process's claims under one results folder, kept alive by a heartbeat thread."""

    def __init__(self, results_dir, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.results_dir = Path(results_dir)
        self.stale_s, self.heartbeat_s = stale_s, heartbeat_s
        self.held: dict[Path, str] = {}  # claim path -> our token
        self.worker = f"{HOST}:{os.getpid()}"
        (self.results_dir / "claims").mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="netzoo-claims-heartbeat", daemon=True)
        self._thread.start()

    def _create(self, path: Path) -> bool:
        """Create the claim file, whole, if there is none; False if it exists."""
        token = uuid.uuid4().hex
        record = json.dumps({"worker": self.worker, "host": HOST, "pid": os.getpid(), "token": token,
                             "since": time.time()}).encode()
        if not atomic_create(path, lambda f: f.write(record)):
            return False
        with self._lock:
            self.held[path] = token
        return True

    def acquire(self, key) -> bool:
        """Claim ``key``; True if this process now holds it, False if a live worker does."""
        path = claim_path(self.results_dir, key)
        if self._create(path):
            return True
        if not is_stale(path, self.stale_s):
            return False
        tomb = path.with_name(f".taken-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, tomb)  # atomic: of several workers taking over, one wins
        except FileNotFoundError:
            return self._create(path)
        if not is_stale(tomb, self.stale_s):
            # it was refreshed between our check and the rename: give it back if nobody claimed meanwhile
            try:
                os.link(tomb, path)
            except FileExistsError:
                pass
            os.unlink(tomb)
            return False
        os.unlink(tomb)
        return self._create(path)

    def owns(self, key) -> bool:
        """Whether the claim file of ``key`` still carries this process's token."""
        path = claim_path(self.results_dir, key)
        return read_claim(path).get("token") == self.held.get(path)

    def release(self, key) -> None:
        """Drop the claim of ``key`` if it is still ours."""
        path = claim_path(self.results_dir, key)
        with self._lock:
            token = self.held.pop(path, None)
        if token is not None and read_claim(path).get("token") == token:
            path.unlink(missing_ok=True)

    def _beat(self) -> None:
        """Touch every held claim each heartbeat_s seconds, so other workers see this one is alive."""
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                paths = list(self.held)
            for path in paths:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        """Release every claim and stop the heartbeat."""
        self._stop.set()
        for path in list(self.held):
            self.release(key_of_name(path.name, CLAIM))
