"""Restore the images/ + masks/ + split.csv folder written by ``pack_data.py``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    prefix, out = sys.argv[1], Path(sys.argv[2])
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    index = json.loads(Path(f"{prefix}.index.json").read_text())
    masks = np.load(f"{prefix}.masks.npz")["masks"]
    blob = Path(f"{prefix}.webpblob").read_bytes()
    lines = ["id,split"]
    for (i, split, off, n), m in zip(index, masks):
        (out / "images" / f"{i}.webp").write_bytes(blob[off:off + n])
        Image.fromarray(m).save(out / "masks" / f"{i}.png")
        lines.append(f"{i},{split}")
    (out / "split.csv").write_text("\n".join(lines) + "\n")
    print(f"unpacked {len(index)} pairs into {out}")


if __name__ == "__main__":
    main()
