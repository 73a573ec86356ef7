"""Sessions: exact reopening, relative paths, validation, and surviving a kill mid-write."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate import BoxPrompt, Session
from segmodels.errors import MarsamError
from segmodels.labels import AI4MARS, HIRISE_PITS

REPO = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int = 3, size=(40, 50)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(np.full(size, i * 40, np.uint8)).save(p)
        paths.append(p)
    return paths


def test_session_reopens_exactly(tmp_path):
    imgs = _images(tmp_path / "project" / "images")
    s = Session.create(tmp_path / "project" / "sess", imgs, label_spec=AI4MARS, engine="sam", model="vit_b:abc")
    prompts = [BoxPrompt((1, 2, 30, 20), 3, positive_points=[(5, 6)], negative_points=[(7.5, 8)]),
               BoxPrompt((0, 0, 49, 39), 0)]
    lm = np.full((40, 50), 255, np.uint8)
    lm[2:20, 1:30] = 3
    s.set_result(imgs[1], prompts, lm, engine="sam", model="vit_b:abc")
    s.set_prompts("img2.png", prompts[:1], status="draft")
    s.mark_failed(0, "cannot read")

    r = Session.open(tmp_path / "project" / "sess")
    assert r.label_spec == AI4MARS and r.engine == "sam" and r.model == "vit_b:abc"
    assert r.image_paths == [p.resolve() for p in imgs]
    assert r.prompts(imgs[1]) == prompts and r.prompts("img2") == prompts[:1]
    assert [r.status(i) for i in range(3)] == ["failed", "done", "draft"]
    assert r.info(0)["error"] == "cannot read" and r.info(1)["engine"] == "sam"
    np.testing.assert_array_equal(r.label_map(imgs[1]), lm)
    assert r.label_map(imgs[0]) is None
    assert r.labelled_images() == [imgs[1].resolve()]
    assert (tmp_path / "project" / "sess" / "labels" / "img1.png").is_file()
    stored = json.loads((tmp_path / "project" / "sess" / "session.json").read_text())
    assert stored["images"][0]["path"] == "../images/img0.png"  # relative: the project can move

    shutil.move(str(tmp_path / "project"), str(tmp_path / "moved"))
    m = Session.open(tmp_path / "moved" / "sess")
    assert m.image_paths[1] == (tmp_path / "moved" / "images" / "img1.png").resolve()
    np.testing.assert_array_equal(m.label_map("img1"), lm)


def test_session_refuses_bad_input(tmp_path):
    imgs = _images(tmp_path / "a")
    other = _images(tmp_path / "b", n=1)
    dup = Session.create(tmp_path / "s0", imgs + other)   # a second img0 is reported and skipped
    assert len(dup.image_paths) == len(imgs) and "already in the session" in dup.problems[0]
    s = Session.create(tmp_path / "s", imgs, label_spec=HIRISE_PITS)
    with pytest.raises(MarsamError, match="already holds a session"):
        Session.create(tmp_path / "s", imgs)
    with pytest.raises(MarsamError, match="not in session"):
        s.status("nope.png")
    with pytest.raises(MarsamError, match="outside label spec"):
        s.set_result(0, [BoxPrompt((0, 0, 5, 5), 1)], np.full((40, 50), 7, np.uint8))
    with pytest.raises(MarsamError, match="class 3"):
        s.set_result(0, [BoxPrompt((0, 0, 5, 5), 3)], np.zeros((40, 50), np.uint8))
    with pytest.raises(MarsamError, match="2-D"):
        s.set_result(0, [], np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(MarsamError, match="not a marsam session"):
        Session.open(tmp_path / "a")
    (tmp_path / "s" / "session.json").write_text("{ half a fi")
    with pytest.raises(MarsamError, match="cannot be read"):
        Session.open(tmp_path / "s")


def test_open_or_create_resumes_and_adds(tmp_path):
    imgs = _images(tmp_path / "i", n=2)
    s = Session.open_or_create(tmp_path / "s", imgs[:1], HIRISE_PITS)
    s.set_result(0, [], np.zeros((40, 50), np.uint8))
    s2 = Session.open_or_create(tmp_path / "s", imgs, HIRISE_PITS)
    assert len(s2.image_paths) == 2 and s2.status(imgs[0]) == "done" and s2.status(imgs[1]) == "todo"
    with pytest.raises(MarsamError, match="pass the same --labels"):
        Session.open_or_create(tmp_path / "s", imgs, AI4MARS)


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from annotate import BoxPrompt, Session
    s = Session.open(sys.argv[1])
    n = len(s.image_paths)
    k = 0
    print("ready", flush=True)
    while True:
        k += 1
        lm = np.full((300, 400), k % 4, np.uint8)
        s.set_result(k % n, [BoxPrompt((0, 0, 10 + k % 300, 10), k % 4)] * 50, lm)
""")


def test_kill_mid_write_leaves_last_good_state(tmp_path):
    imgs = _images(tmp_path / "i", n=4, size=(300, 400))
    Session.create(tmp_path / "s", imgs).close()   # let the writer process take the session's lock
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    for delay in (0.3, 0.9):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s")], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = Session.open(tmp_path / "s")  # session.json parses: it was never half-written
        for i in range(4):
            if s.status(i) == "done":
                lm = s.label_map(i)
                assert lm.shape == (300, 400) and len(np.unique(lm)) == 1
                assert len(s.prompts(i)) == 50
    assert s.counts()["done"] >= 1
    # temporaries a killed writer left behind: a reader leaves them (it takes no lock), the next
    # writer removes them all (holding the lock, it knows no other writer is at work)
    leftovers = list((tmp_path / "s").glob(".*.tmp")) + list((tmp_path / "s" / "labels").glob(".*.tmp"))
    fresh = tmp_path / "s" / ".session.json.fresh.tmp"
    fresh.write_text("{")
    Session.open(tmp_path / "s")
    assert fresh.exists() and all(t.exists() for t in leftovers)
    Session.open(tmp_path / "s", lock=True).close()
    assert not fresh.exists() and not [t for t in leftovers if t.exists()]
