"""export.py --int8 on this machine: CV of fp32 vs int8 on the OOF rows, their agreement, img/s of ONNX fp32 vs
int8 (and torch, the runtime estimate's measurement), for two competitions trained here:

* digits: the demo (1,437 training digits, 8x8 scans drawn at 32 px, grey), test_resnet from scratch,
  --folds folds x --digits-epochs epochs;
* hymenoptera: ants vs bees photos (../shared/data/hymenoptera, 245 training photos, 153 test), mobilenetv2_100
  from ../shared/weights/mobilenetv2_100_imagenet.pth at 224 px, only its head trained (--freeze-epochs), as
  benchmarks/scenarios/hymenoptera.py does; skipped with a note when the weights are absent.

Each is exported once with --int8 (every figure comes from that one export run, so the ratios compare runs on
the same machine minutes apart), then the int8 bundle's predict_offline.py predicts the test set.

    python benchmarks/bench_int8.py [--only digits|hymenoptera] [--keep DIR]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))

SRC = REPO / "src"


def kit(script, *args):
    t = time.time()
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout, time.time() - t


def make_folds(comp: Path, n_folds: int):
    from foldkit import config
    from foldkit.folds.file import make_folds as mf
    mf(config.resolve(input_dir=str(comp / "in"), folds_dir=str(comp / "folds"), models_dir=str(comp / "m"),
                      n_folds=n_folds), log=lambda *a: None)


def case(name: str, comp: Path, train: list[str], export: list[str]) -> dict:
    paths = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"), "--models-dir", str(comp / "m")]
    _, t_train = kit(SRC / "train.py", *paths, *train, "--fold", "all", "--experiment", name, "--no-progress")
    out = comp / "bundle"
    stdout, t_export = kit(SRC / "export.py", *paths, "--experiments", name, "--out", str(out), "--int8", *export)
    lines = [l for l in stdout.splitlines() if l.startswith(("int8", "runtime estimate", "onnx:"))]
    off, t_off = kit(out / "predict_offline.py", "--input-dir", str(comp / "in"), "--out", str(comp / "int8.csv"),
                     "--workers", "0", "--no-progress")
    man = json.loads((out / "foldkit_bundle.json").read_text())
    return {"case": name, "train_s": round(t_train), "export_s": round(t_export), "offline_s": round(t_off, 1),
            "lines": lines + [l for l in off.splitlines() if l.startswith(("predicted", "submission"))],
            "int8": man["int8"], "torch_img_per_s": man["estimate"]["img_per_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", choices=["", "digits", "hymenoptera"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--digits-epochs", type=int, default=6)
    ap.add_argument("--hymenoptera-epochs", type=int, default=3)
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    if a.only in ("", "digits"):
        from foldkit.data.demo import build_demo
        build_demo(work / "digits" / "in")
        make_folds(work / "digits", a.folds)
        results.append(case("digits", work / "digits", [
            "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip",
            "--epochs", str(a.digits_epochs), "--lr", "3e-3", "--batch-size", "64", "--workers", "0"], []))
    if a.only in ("", "hymenoptera"):
        import hymenoptera
        if not hymenoptera.WEIGHTS_FILE.is_file():
            print(f"note: {hymenoptera.WEIGHTS_FILE} is absent: hymenoptera skipped")
        else:
            hymenoptera.build(REPO.parent / "shared" / "data" / "hymenoptera", work / "hymenoptera" / "in")
            make_folds(work / "hymenoptera", a.folds)
            ep = str(a.hymenoptera_epochs)
            results.append(case("hymenoptera", work / "hymenoptera", [
                "--model", "mobilenetv2_100", "--pretrained-file", str(hymenoptera.WEIGHTS_FILE), "--img-size",
                "224", "--freeze-epochs", ep, "--epochs", ep, "--lr", "3e-2", "--aug", "light", "--batch-size", "16",
                "--workers", "0"], ["--tta", "none"]))
    for r in results:
        q = r["int8"]
        print(f"\n== {r['case']} (trained in {r['train_s']}s, exported in {r['export_s']}s, offline int8 run "
              f"{r['offline_s']}s)")
        for line in r["lines"]:
            print("  " + line)
        print(f"  torch (estimate's measurement) {r['torch_img_per_s']:.1f} img/s; settings {q['settings']}")
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
