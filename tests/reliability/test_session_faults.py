"""Sessions under hostile conditions: two writers, edited session.json, duplicate names.

Tried: a second ``marsam annotate`` (and the napari annotator's open) on a folder another
process writes (refused, one line with the holder's PID); the holder killed with SIGKILL (its
lock does not block the next writer); session.json with no label_spec, no stem, images null,
images a dict, a status "finished", a prompt with a string box, a prompt of class 9, two entries
of one stem, plus hypothesis-generated JSON and bytes (parse or MarsamError); two image folders
holding the same file names (the second reported and skipped, the batch goes on).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from annotate.session import Session
from segmodels.cli import main
from segmodels.errors import MarsamError

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from annotate.session import Session
s = Session.open(sys.argv[1], lock=True)
print("ready", flush=True)
time.sleep(120)
"""


def _images(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(np.full((40, 50), 30 * i, np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture
def holder(tmp_path):
    """A second process holding the session's writer lock."""
    Session.create(tmp_path / "s", _images(tmp_path / "i")).close()
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
    yield proc
    proc.kill()
    proc.wait()


def test_second_writer_is_refused_with_the_holders_pid(tmp_path, holder, capsys):
    with pytest.raises(MarsamError, match=f"PID {holder.pid}"):
        Session.open_or_create(tmp_path / "s", [])
    with pytest.raises(MarsamError, match=f"PID {holder.pid}"):
        Session.open(tmp_path / "s", lock=True)
    from napari_plugin.annotator import project   # the GUI's way in: refused the same way
    from segmodels.labels import AI4MARS
    with pytest.raises(MarsamError, match=f"PID {holder.pid}"):
        project.open_or_create_session(tmp_path / "s", [], AI4MARS, "grabcut")
    reader = Session.open(tmp_path / "s")          # readers are never refused
    assert len(reader.image_paths) == 2
    with pytest.raises(MarsamError, match="open for writing"):   # ... until they write
        reader.set_prompts(0, [])
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,x0,y0,x1,y1,class\nimg0.png,5,5,30,30,soil\n")
    rc = main(["annotate", "--images", str(tmp_path / "i"), "--boxes", str(csv), "--format", "csv",
               "--out", str(tmp_path / "s"), "--engine", "grabcut", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"PID {holder.pid}" in err


def test_a_killed_writers_lock_does_not_block(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "s" / ".marsam.lock").exists()     # the stale file is still there ...
    s = Session.open(tmp_path / "s", lock=True)             # ... and does not block
    s.set_prompts(0, [])
    s.close()


def _session_json(tmp_path):
    Session.create(tmp_path / "s", _images(tmp_path / "i")).close()
    return tmp_path / "s" / "session.json"


EDITS = {
    "no label_spec": lambda d: d.pop("label_spec"),
    "images null": lambda d: d.update(images=None),
    "images a dict": lambda d: d.update(images={"a": 1}),
    "entry not a dict": lambda d: d["images"].append(3),
    "no path": lambda d: d["images"][0].pop("path"),
    "status finished": lambda d: d["images"][0].update(status="finished"),
    "string box": lambda d: d["images"][0].update(prompts=[{"box": "1,2,3,4", "class_id": 0}]),
    "class 9": lambda d: d["images"][0].update(prompts=[{"box": [1, 2, 30, 30], "class_id": 9}]),
    "duplicate stem": lambda d: d["images"].append(dict(d["images"][0])),
    "version text": lambda d: d.update(version="one"),
    "label_spec list": lambda d: d.update(label_spec=["soil"]),
}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_edited_session_json_is_one_line(tmp_path, kind):
    path = _session_json(tmp_path)
    data = json.loads(path.read_text())
    EDITS[kind](data)
    path.write_text(json.dumps(data))
    with pytest.raises(MarsamError) as e:
        Session.open(tmp_path / "s")
    assert "\n" not in str(e.value) and "session.json" in str(e.value)


def test_missing_stem_is_filled_in(tmp_path):
    path = _session_json(tmp_path)
    data = json.loads(path.read_text())
    del data["images"][1]["stem"]
    path.write_text(json.dumps(data))
    assert Session.open(tmp_path / "s").label_path(1).name == "img1.png"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=16)
entry = st.fixed_dictionaries({"path": st.sampled_from(["../i/img0.png", "../i/img1.png", ""]) | json_values},
                              optional={"stem": json_values, "status": st.sampled_from(["todo", "done", "x"]),
                                        "prompts": st.lists(st.fixed_dictionaries({"box": json_values | st.lists(
                                            st.floats(-5, 50), min_size=4, max_size=4), "class_id": st.integers(-1, 5)
                                            | json_values}), max_size=2) | json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(entry | json_values, max_size=3) | json_values, spec=st.none() | json_values,
       raw=st.none() | st.binary(max_size=200))
def test_session_json_any_content(tmp_path_factory, images, spec, raw):
    folder = tmp_path_factory.mktemp("fuzz")
    data = {"format": "marsam-session", "version": 1, "images": images,
            "label_spec": spec if spec is not None else {"name": "ai4mars", "classes": ["soil", "bedrock", "sand",
                                                                                      "big_rock"],
                                                         "colors": [[1, 2, 3]] * 4}}
    (folder / "session.json").write_bytes(raw if raw is not None else json.dumps(data).encode())
    try:
        s = Session.open(folder)
    except MarsamError as e:
        assert "\n" not in str(e)
        return
    for i in range(len(s.image_paths)):   # every query works on what was accepted
        s.status(i), s.prompts(i), s.label_path(i), s.counts()


def test_duplicate_names_are_skipped_and_the_batch_goes_on(tmp_path, capsys):
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,x0,y0,x1,y1,class\nimg0.png,5,5,30,30,soil\nimg1.png,5,5,30,30,sand\n")
    rc = main(["annotate", "--images", str(a[0].parent), str(b[0].parent), "--boxes", str(csv), "--format", "csv",
               "--out", str(tmp_path / "s"), "--engine", "grabcut", "--quiet", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["done"] == 2 and len(out["session_problems"]) == 2
    assert all("already in the session" in p for p in out["session_problems"])
