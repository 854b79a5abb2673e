#!/usr/bin/env bash
# Set everything up, write the CIFAR-10 betons once, then train the seed's recipe for 24 epochs.
#   bash scripts/run.sh                                  downloads CIFAR-10 (once, checksum-verified)
#   CIFAR10_SOURCE=/path/to/cifar bash scripts/run.sh    an official archive, its folder, or an image folder
# Extra arguments go to the trainer, e.g.  bash scripts/run.sh --training.seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/setup.sh
"$PYTHON" write_beton.py --data.source "${CIFAR10_SOURCE:-download}" \
  --data.train_dataset data/cifar10_train.beton --data.val_dataset data/cifar10_test.beton
exec "$PYTHON" -m speedrun.train --epochs 24 "$@"
