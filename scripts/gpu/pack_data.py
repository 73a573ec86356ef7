"""Pack an images/+masks/+split.csv dataset into three files small enough to carry to a GPU machine.

Images are re-encoded as single-channel WebP (quality 85 by default) and concatenated into one
blob with a JSON index (one archive instead of thousands of small files: transfer limits count disk
blocks); label maps go into one compressed .npz (lossless). ``unpack_data.py`` restores the folder.

    python scripts/gpu/pack_data.py ../shared/data/ai4mars-msl out/gpu/ai4mars --quality 85
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst", help="output prefix: DST.webpblob, DST.index.json, DST.masks.npz, DST.split.csv")
    ap.add_argument("--quality", type=int, default=85)
    a = ap.parse_args()
    src, dst = Path(a.src), Path(a.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.split(",") for r in (src / "split.csv").read_text().splitlines()[1:] if r.strip()]
    index, masks, offset = [], [], 0
    with open(f"{dst}.webpblob", "wb") as blob:
        for i, split in rows:
            img = next((p for p in (src / "images").glob(f"{i}.*")), None)
            if img is None:
                continue
            b = io.BytesIO()
            Image.open(img).convert("L").save(b, "WEBP", quality=a.quality, method=4)
            data = b.getvalue()
            blob.write(data)
            index.append([i, split, offset, len(data)])
            offset += len(data)
            masks.append(np.asarray(Image.open(src / "masks" / f"{i}.png")))
    Path(f"{dst}.index.json").write_text(json.dumps(index))
    np.savez_compressed(f"{dst}.masks.npz", masks=np.stack(masks))
    print(f"{len(index)} images, {offset / 1e6:.1f} MB of WebP")


if __name__ == "__main__":
    main()
