"""Time `python src/audit.py` on 100,000 JPEG images of 256x256 (issue: a few minutes on 2 cores).

The images are random 256x256 crops (random position and scale, random flips) of the
hymenoptera photos of ../shared/data, so every file is a distinct natural image; every 1,000th
one is also written again resized to 200 px and JPEG-recompressed, so the audit has near
duplicates to find. The competition (CSV + image folder layout) is built in a scratch folder
(kept with --keep DIR, reused when it exists). Prints the wall time of the real CLI, cold (empty
hash cache) and warm (second run), and the per-image cost of the kit's pHash against
imagehash.phash on the same 500 images.

    python benchmarks/bench_audit.py [--images 100000] [--keep DIR]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "hymenoptera" / "train"
sys.path.insert(0, str(REPO / "src"))


def _write(args):
    start, stop, out, photos = args
    import cv2
    rng = np.random.default_rng(start)
    srcs = [cv2.imread(str(p)) for p in photos]
    srcs = [s for s in srcs if s is not None]
    for i in range(start, stop):
        img = srcs[rng.integers(len(srcs))]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(img[y:y + side, x:x + side], (256, 256), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        cv2.imwrite(str(out / f"{i:06d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if i % 1000 == 0:
            cv2.imwrite(str(out / f"{i:06d}_copy.jpg"), cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_JPEG_QUALITY, 70])
    return stop - start


def build(root: Path, n: int) -> None:
    if (root / "train.csv").is_file():
        return
    out = root / "train"
    out.mkdir(parents=True, exist_ok=True)
    photos = sorted(PHOTOS.glob("*/*.jp*g"))
    step = 2000
    jobs = [(s, min(n, s + step), out, photos) for s in range(0, n, step)]
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_write, jobs))
    names = sorted(p.name for p in out.iterdir())
    rng = np.random.default_rng(0)
    lines = ["id,label"] + [f"{nm},{rng.integers(10)}" for nm in names]
    (root / "train.csv").write_text("\n".join(lines) + "\n")


def hash_speed(folder: Path) -> str:
    import imagehash
    from PIL import Image

    from foldkit.data.images import decode_image
    from foldkit.data.copies import phash
    import cv2
    imgs = [decode_image(p) for p in sorted(folder.glob("*.jpg"))[:500]]
    greys = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in imgs]
    pils = [Image.fromarray(g) for g in greys]
    t = time.perf_counter()
    ours = [phash(g) for g in greys]
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = [imagehash.phash(p) for p in pils]
    t_lib = time.perf_counter() - t
    bits = [bin(int(a) ^ int(str(b), 16)).count("1") for a, b in zip(ours, theirs)]
    return (f"pHash of a decoded 256px grey image, 500 images: foldkit {t_ours / 500 * 1e6:.0f} us, "
            f"imagehash.phash {t_lib / 500 * 1e6:.0f} us ({t_lib / t_ours:.1f}x); bits differing: "
            f"median {np.median(bits):.0f}, max {max(bits)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--keep", default="", help="build (or reuse) the competition here")
    args = ap.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    root = Path(args.keep or tmp.name) / "comp"
    t = time.time()
    build(root, args.images)
    print(f"competition: {root} ({time.time() - t:.0f} s to build)")
    reports = root.parent / "reports"
    for run in ("cold (no hash cache)", "warm (second run)"):
        if run.startswith("cold"):
            (reports / "audit" / "hash_cache.npz").unlink(missing_ok=True)
        t = time.time()
        r = subprocess.run([sys.executable, str(REPO / "src" / "audit.py"), "--input-dir", str(root),
                            "--reports-dir", str(reports)], capture_output=True, text=True)
        dt = time.time() - t
        if r.returncode:
            sys.exit(r.stderr)
        print(f"audit.py {run}: {dt:.1f} s")
        print("  " + "\n  ".join(r.stdout.strip().splitlines()[:2]))
    print(hash_speed(root / "train"))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
