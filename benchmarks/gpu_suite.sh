#!/usr/bin/env bash
# Every check and measurement that needs a GPU, as named steps run in order (all by default):
#   CIFAR10_SOURCE=<archive, its folder or an image folder> bash benchmarks/gpu_suite.sh [STEP ...]
# Steps: betons  kernel  bench  seeds  leaderboard. Results go under benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TRAIN=data/cifar10_train.beton
TEST=data/cifar10_test.beton
RESULTS=benchmarks/results

betons() {  # written once; a second run with the same source skips
  "$PYTHON" write_beton.py --data.source "${CIFAR10_SOURCE:?set CIFAR10_SOURCE to the CIFAR-10 source}" \
    --data.train_dataset "$TRAIN" --data.val_dataset "$TEST" --data.num_workers "$(nproc)"
}
kernel() {  # the compiled Triton kernel against the torch reference, bit for bit, on the device
  "$PYTHON" -m pytest -q tests/test_augment.py -k cuda
}
bench() {  # every stage, the 24-epoch run included: benchmarks/results/<device>.json
  "$PYTHON" benchmarks/bench.py --train-beton "$TRAIN" --val-beton "$TEST" --out "$RESULTS"
}
seeds() {  # the seed recipe, 24 epochs, 3 seeds: summary.json and metrics.jsonl of each
  device=$("$PYTHON" -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
  "$PYTHON" -m speedrun.train --epochs 24 --seeds 0-2 --logging.folder "runs/seed-recipe-$device" \
    --data.train_dataset "$TRAIN" --data.val_dataset "$TEST"
  for s in 0 1 2; do
    mkdir -p "$RESULTS/seed-recipe-$device/seed$s"
    cp "runs/seed-recipe-$device/seed$s/"{summary.json,metrics.jsonl} "$RESULTS/seed-recipe-$device/seed$s/"
  done
}
leaderboard() {  # ours and airbench's train94 side by side, same data and device, when airbench imports
  reference=none
  "$PYTHON" -c "import airbench" 2>/dev/null && reference=train94
  "$PYTHON" -m speedrun.leaderboard --seeds 0-4 --reference "$reference" \
    --data.train_dataset "$TRAIN" --data.val_dataset "$TEST"
}

STEPS="betons kernel bench seeds leaderboard"
for name in ${*:-$STEPS}; do
  case " $STEPS " in
    *" $name "*) echo "== $name"; "$name" ;;
    *) echo "unknown step '$name'; steps: $STEPS" >&2; exit 2 ;;
  esac
done
