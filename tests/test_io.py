"""cladec._io: atomic writes leave nothing behind, also after a writer was killed (SIGKILL)."""

import os
import signal
import subprocess
import sys

import pytest

from cladec._io import atomic_dir, atomic_path, remove_stale_temporaries


def _killed_writer(target, kind: str):
    """Write ``target`` in another process (atomic_path or atomic_dir) and SIGKILL it midway; return the
    temporary path it left."""
    code = (
        "import os, signal, sys\nfrom cladec._io import atomic_dir, atomic_path\n"
        f"with {kind}(sys.argv[1]) as tmp:\n"
        "    (tmp / 'a.bin' if tmp.is_dir() else tmp).write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = list(target.parent.glob(f".{target.name}.*.tmp"))
    assert len(left) == 1, left
    return left[0]


@pytest.mark.parametrize("kind", ["atomic_path", "atomic_dir"])
def test_next_write_removes_what_a_killed_writer_left(tmp_path, kind):
    target = tmp_path / ("out.json" if kind == "atomic_path" else "run")
    left = _killed_writer(target, kind)
    assert not target.exists()  # nothing half-written at the target
    mine = tmp_path / f".{target.name}.notes.tmp"  # not a writer's temporary name: kept
    mine.write_text("mine")
    writer = atomic_path if kind == "atomic_path" else atomic_dir
    with writer(target) as tmp:
        running = sorted(tmp_path.glob(f".{target.name}.*.tmp"))
        (tmp / "a.bin" if kind == "atomic_dir" else tmp).write_text("ok")
    assert not left.exists() and mine.read_text() == "mine"
    assert tmp in running  # the running writer's own temporary existed while it wrote and was renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, mine.name])


def test_a_running_writers_temporaries_are_kept(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        assert remove_stale_temporaries(target) == []  # this process still runs
        assert tmp.exists()
    assert target.read_text() == "{}"
    # a writer of another host (shared file system) is never judged by this host's process table
    other = tmp_path / f".out.json.otherhost-{os.getpid() + 10**6}.abc.tmp"
    other.write_text("theirs")
    assert remove_stale_temporaries(target) == [] and other.exists()
