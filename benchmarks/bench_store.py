"""The decoded-image store (foldkit.data.store) against the per-process RAM cache it replaces, in one run:

    OMP_NUM_THREADS=1 python benchmarks/bench_store.py [--n 4000] [--img-size 128]

A competition of N real photos (UTKFace crop_part1, 200x200 JPEG, label = the gender field of the file
name) in ../shared/data. Measured:
  1. image preparation of a run: --cache ram (what --cache auto did before the store: every run, every
     process decodes into its own RAM) vs --cache disk (the store) on its first and second run, and the
     speed of reading every prepared image once (an epoch's reads);
  2. train.py --devices cpu,cpu (2 fold-parallel workers, folds 0 and 1, 1 epoch of test_resnet) with
     --cache ram vs --cache disk: peak RSS of the largest process and of all processes together, and
     peak PSS of all together (shared pages counted once: the memory the machine really gives), sampled
     every 0.2 s from /proc; and the training img/s of each fold.
  --mode torchrun: the same with `torchrun --nproc_per_node 2 train.py --fold 0` (two ranks of one fold).
  --n beyond the 9,780 faces repeats them under new ids (20,000 photos: --n 20000).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
UTK = REPO.parent / "shared" / "data" / "utkface" / "crop_part1"


def competition(root: Path, n: int) -> Path:
    """N photos; beyond the 9,780 faces the files repeat (as copies under new ids: the memory and
    preparation figures count files, not distinct faces)."""
    faces = sorted(UTK.glob("*.jpg"))
    files = [faces[k % len(faces)] for k in range(n)]
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, f in enumerate(files):
        shutil.copyfile(f, root / "train" / f"u{k}.jpg")
        rows.append({"id": f"u{k}", "label": "female" if f.name.split("_")[1] == "1" else "male"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/*/stat)."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += [c for c, pp in parent.items() if pp == q]
    return out


def kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# a wrapper per run: the kernel's peak RSS of the largest process it (and its children) waited for
MAXRSS = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
          "print(f'maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}'); sys.exit(r.returncode)")


def run_sampled(cmd: list[str]) -> dict:
    """Run cmd, sampling /proc every 0.2 s: in MiB, the peak RSS of the largest process (the kernel's
    ru_maxrss of the waited descendants), the peaks over time of all processes' RSS, PSS (shared pages
    divided among their users) and private anonymous memory summed, and the largest process's peak
    anonymous and file-backed (mapped store) RSS; seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MAXRSS, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = {"sum_rss": 0, "sum_pss": 0, "sum_anon": 0, "proc_anon": 0, "proc_file": 0}
    while proc.poll() is None:
        pids = tree(proc.pid)
        anon = [kib(Path(f"/proc/{p}/status"), "RssAnon") for p in pids]
        file = [kib(Path(f"/proc/{p}/status"), "RssFile") for p in pids]
        now = {"sum_rss": sum(kib(Path(f"/proc/{p}/status"), "VmRSS") for p in pids),
               "sum_pss": sum(kib(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids),
               "sum_anon": sum(anon), "proc_anon": max(anon), "proc_file": max(file)}
        peak = {k: max(v, now[k]) for k, v in peak.items()}
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out[-3000:]}")
    peak["max_rss"] = int(out.rsplit("maxrss_kib=", 1)[1])
    return {**{k: v / 1024 for k, v in peak.items()}, "seconds": time.perf_counter() - t0, "log": out}


def preparation_times(root: Path, cache_dir: Path, side: int) -> dict:
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageSource
    comp = read_competition(root)
    out = {}
    for name, cache in (("ram (every run)", "ram"), ("store, first run", "disk"), ("store, second run", "disk")):
        t0 = time.perf_counter()
        s = ImageSource(comp, comp.train, cache=cache, max_side=side, progress=False, cache_dir=cache_dir)
        out[name] = time.perf_counter() - t0
        if s.store is not None:
            out["store MiB"] = int(s.store.shape.prod(axis=1).sum()) / 1024**2
        t0 = time.perf_counter()           # reading every image once, as a training epoch does
        for i in range(len(s)):
            s[i]
        out[f"{name}: read img/s"] = len(s) / (time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--work", default="/tmp/bench_store")
    ap.add_argument("--mode", choices=["devices", "torchrun"], default="devices",
                    help="devices: train.py --devices cpu,cpu --fold 0,1; torchrun: torchrun --nproc_per_node 2 "
                         "train.py --fold 0 (--batch-size 32 global)")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    root = competition(work / "input", args.n)
    from foldkit.data.images import cache_side
    side = cache_side({"input_size": [3, args.img_size, args.img_size], "crop_pct": 1.0})
    prep = preparation_times(root, work / "prep_cache", side)
    print(f"{args.n} photos at side {side}:", {k: round(v, 2) for k, v in prep.items()})
    paths = ["--input-dir", str(root), "--folds-dir", str(work / "folds")]
    subprocess.run([sys.executable, str(REPO / "src" / "make_folds.py"), *paths, "--n-folds", "2"], check=True,
                   capture_output=True)
    rows = {}
    for run, cache in (("ram", "ram"), ("store, first run", "disk"), ("store, second run", "disk")):
        models = work / f"models_{len(rows)}"
        how = (["--devices", "cpu,cpu", "--fold", "0,1"] if args.mode == "devices" else ["--fold", "0"])
        start = ([sys.executable] if args.mode == "devices" else
                 [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
        r = run_sampled([*start, str(REPO / "src" / "train.py"), *paths, "--models-dir", str(models),
                         "--cache-dir", str(work / "cache"), "--cache", cache, *how, "--model", "test_resnet",
                         "--no-pretrained", "--img-size", str(args.img_size),
                         "--crop-pct", "1.0", "--epochs", "1", "--batch-size", "32", "--no-progress",
                         "--workers", "0", "--experiment", "x"])
        exp = models / "x"
        ips = [float(pd.read_csv(exp / f"log_fold{k}.csv")["img_per_s"].iloc[-1])
               for k in ((0, 1) if args.mode == "devices" else (0,))]
        rows[run] = {k: round(v, 1) for k, v in r.items() if k != "log"} | {"img_per_s": ips}
        print(f"--cache {cache} ({run}):", rows[run])
        print("\n".join(line for line in r["log"].splitlines() if "images:" in line))
    (work / "results.json").write_text(json.dumps({"prep": prep, "train": rows}, indent=1))


if __name__ == "__main__":
    main()
