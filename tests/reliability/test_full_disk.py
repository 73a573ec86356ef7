"""A full disk: one line naming the folder, every file written before intact.

On a real small file system (a tmpfs mounted for the test; this needs root and a kernel that
allows it) or, where that is not possible, with ENOSPC injected at the write's fsync. Tried:
plain atomic writes until the disk is full (new files and an overwrite); ``marsam annotate``
and ``marsam export --format png`` into a folder on the full file system.
"""
from __future__ import annotations

import errno
import os
import subprocess
import uuid

import numpy as np
import pytest
from PIL import Image

from segmodels import atomic
from segmodels.atomic import atomic_write_bytes
from segmodels.cli import main
from segmodels.errors import DiskFullError


def _mount_tmpfs(path, size):
    if os.geteuid() != 0 or os.environ.get("MARSAM_TEST_INJECT_ENOSPC"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"marsam-{uuid.uuid4().hex[:8]}", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path, monkeypatch):
    """(folder, how): a folder on a 64 KiB tmpfs, else one whose fsyncs fail with ENOSPC after 3 writes."""
    folder = tmp_path / "fs"
    if _mount_tmpfs(folder, "64k"):
        yield folder, "tmpfs"
        subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    folder.mkdir(exist_ok=True)
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    yield folder, "injected"


def test_atomic_writes_until_full(small_fs):
    folder, _ = small_fs
    written = {}
    with pytest.raises(DiskFullError) as e:
        for i in range(1000):
            data = os.urandom(8192)
            atomic_write_bytes(folder / f"f{i}.bin", data)
            written[folder / f"f{i}.bin"] = data
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and "no space left" in msg and "MB needed" in msg
    assert written, "nothing fitted before the disk was full"
    first = next(iter(written))
    with pytest.raises(DiskFullError):
        atomic_write_bytes(first, os.urandom(65536))      # an overwrite that does not fit ...
    for path, data in written.items():                     # ... leaves it and everything else intact
        assert path.read_bytes() == data
    assert not list(folder.glob(".*.tmp"))


def test_annotate_and_export_on_a_full_disk(small_fs, hirise_dir, tmp_path, capsys):
    folder, how = small_fs
    images = tmp_path / "images"
    images.mkdir()
    csv = tmp_path / "boxes.csv"
    rows = ["image,x0,y0,x1,y1,class"]
    rng = np.random.default_rng(0)
    for i in range(12):   # noise label maps compress badly: a few fill the 64 KiB file system
        Image.fromarray(rng.integers(0, 255, (120, 160), dtype=np.uint8)).save(images / f"n{i:02d}.png")
        rows += [f"n{i:02d}.png,{x},{y},{x + 20},{y + 20},soil" for x in range(0, 140, 24) for y in range(0, 100, 24)]
    csv.write_text("\n".join(rows) + "\n")
    out = folder / "session"
    rc = main(["annotate", "--images", str(images), "--boxes", str(csv), "--format", "csv", "--out", str(out),
               "--engine", "grabcut", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no space left in" in err[0], (how, err)
    from annotate.session import Session
    s = Session.open(out)                       # session.json intact
    done = s.labelled_images()
    for p in done:                              # every image it calls done has its label map
        assert s.label_map(p).shape == (120, 160)
    if how == "tmpfs":
        assert done, "no image fitted before the disk was full"
        rc = main(["export", "--session", str(out), "--format", "png", "--out", str(folder / "export")])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("marsam: error")]
        assert rc == 2 and len(errors) == 1 and "no space left in" in errors[0] and "Traceback" not in err
