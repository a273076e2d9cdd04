#!/usr/bin/env bash
# The end-to-end demo: install + build, prepare the King James Bible as GPT-2 token
# shards (whole books held out for validation), train a small GPT-2-family model and
# print the loss going down and the final validation loss.
# Usage: scripts/demo.sh [extra castor train options, e.g. --train.steps 100]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
castor=build/bin/castor
data=runs/data/kjv
if [ ! -f "$data/train/kjv-00000.h5" ] || [ ! -f "$data/val/kjv-00000.h5" ]; then
  bash scripts/kjv.sh "$data/text"
  $castor prep text --tokenizer gpt2 --input "$data/text/train.txt" --out "$data/train" --prefix kjv
  $castor prep text --tokenizer gpt2 --input "$data/text/val.txt" --out "$data/val" --prefix kjv
fi
rm -rf runs/demo
$castor train --config examples/kjv-small.ini --data.train "$data/train" --data.val "$data/val" \
  --train.out_dir runs/demo "$@"
