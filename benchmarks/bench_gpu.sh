#!/usr/bin/env bash
# Issue 17's GPU figures in one prepared run (about 10 minutes on one large GPU with 16 CPU cores), for a
# machine with CUDA: resnet50 and efficientnet_b0 at 224 px, bf16, channels_last, compile off and on:
# the kit's loop on synthetic tensors vs timm's benchmark.py (the model's ceiling) and train.py on the same
# JPEG folder, the kit's real-JPEG epoch vs synthetic (goal >= 0.9x), fold-parallel on one GPU; then the
# batched augmentation (--aug-device device) against the per-image path on the GPU, and --batch-size auto.
#
#   TIMM_DIR=pytorch-image-models JPEGS=../shared/data/hymenoptera bash benchmarks/bench_gpu.sh | tee gpu.txt
#
# TIMM_DIR: a clone of github.com/huggingface/pytorch-image-models (timm's scripts are not in its wheel);
# without it the timm rows are skipped. Append the printed figures to benchmarks/RESULTS.md with the date,
# commit and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TIMM_DIR=${TIMM_DIR:-}
JPEGS=${JPEGS:-../shared/data/hymenoptera}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
for model in resnet50 efficientnet_b0; do
  python benchmarks/bench_distributed.py gpu --model "$model" --epochs 3 --jpeg-dir "$JPEGS" \
    ${TIMM_DIR:+--timm-dir "$TIMM_DIR"}
done
python benchmarks/bench_batchaug.py --device cuda
python - <<'PY'
# --batch-size auto on this GPU: the batch it picks for resnet50 at 224 px in bf16 (foldkit.train.autobatch)
import sys
sys.path.insert(0, "src")
from foldkit import config
from foldkit.train.autobatch import auto_batch
for model in ("resnet50", "efficientnet_b0"):
    cfg = config.resolve({"model": model, "pretrained": False, "img_size": 224, "amp": "bf16", "channels_last": "on",
                          "device": "cuda", "batch_size": "auto"})
    out = auto_batch(cfg, 1000, 1_000_000, log=print)
    print(f"--batch-size auto, {model} 224 px bf16: batch {out.batch_size}, lr {out.lr:g}")
PY
