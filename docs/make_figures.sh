#!/usr/bin/env bash
# The front page's figures: one short, real run on real CIFAR-10 images, its plots copied to docs/figures/.
#   CIFAR10_SOURCE=/path/to/cifar10 bash docs/make_figures.sh   an official archive, its folder, or an image folder
#   bash docs/make_figures.sh                                   downloads CIFAR-10 (once, checksum-verified)
# Extra arguments go to the trainer. WORK (default runs/figures, ignored by git) keeps the betons and the run
# folder. Then update the caption and the printed sample in README.md: tests/test_readme_figures.py checks them against
# docs/figures/summary.json. The run is sized for a 2-core CPU: a width-16 net (the full one is 64), 4 epochs,
# float32, evaluated twice an epoch: 10 to 15 minutes there (the committed run's seconds are in its
# summary.json). Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${WORK:-runs/figures}
SOURCE=${CIFAR10_SOURCE:-download}
OUT=docs/figures

"$PYTHON" write_beton.py --data.source "$SOURCE" \
  --data.train_dataset "$WORK/data/train.beton" --data.val_dataset "$WORK/data/test.beton"
"$PYTHON" -m speedrun.train --model.width 16 --epochs 4 --training.precision fp32 \
  --training.late_evals_from 1 --training.late_evals_per_epoch 2 \
  --data.train_dataset "$WORK/data/train.beton" --data.val_dataset "$WORK/data/test.beton" \
  --logging.folder "$WORK/run" --logging.overwrite true --logging.checkpoint none --logging.progress false "$@"

mkdir -p "$OUT"
cp "$WORK/run/lr_test.png" "$WORK/run/curves.png" "$WORK/run/augmented.png" "$WORK/run/lr_test.json" "$OUT/"
# summary.json as the run wrote it, except that the source's local path reads $CIFAR10_SOURCE.
"$PYTHON" - "$WORK/run/summary.json" "$OUT/summary.json" "$SOURCE" <<'EOF'
import json, os, sys
source, target, given = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(source).read()
for path in sorted({given, os.path.abspath(given)}, key=len, reverse=True):
    if path != "download":
        text = text.replace(json.dumps(path)[1:-1], "$CIFAR10_SOURCE")
summary = json.loads(text)
with open(target, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"{target}: test accuracy {100 * summary['final_test_acc']:.2f}% after {summary['epochs']} epochs on "
      f"{summary['device']}, {summary['train_seconds']:.0f} s of training, {summary['seconds']['total']:.0f} s in all")
EOF
ls -l "$OUT"
