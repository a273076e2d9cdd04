#!/usr/bin/env bash
# The end-to-end demo: install + build, prepare the King James Bible as GPT-2 token
# shards (whole books held out for validation) and the multimodal corpora (Fashion-MNIST
# with captions, spoken KJV verses, LibriVox speech for evaluation, fortunes, a mixed
# manifest), verify them, then train a small GPT-2-family model with data parallelism on
# 2 ranks (mpirun) and print the loss going down and the final validation loss.
# Usage: scripts/demo.sh [extra castor train options, e.g. --train.steps 100]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
castor=build/bin/castor
data=runs/data/kjv
if [ ! -f "$data/train/kjv-00000.h5" ] || [ ! -f "$data/val/kjv-00000.h5" ]; then
  bash scripts/kjv.sh "$data/text"
  $castor prep text --tokenizer gpt2 --input "$data/text/train.txt" --out "$data/train" --prefix kjv --overwrite
  $castor prep text --tokenizer gpt2 --input "$data/text/val.txt" --out "$data/val" --prefix kjv --overwrite
fi
media=runs/data/media
if [ ! -f "$media/shards/mix/mix-00000.h5" ]; then
  bash scripts/media_data.sh "$media/raw" 200
  fm=/usr/share/datasets/fashion-mnist
  $castor prep images --idx-images $fm/train-images-idx3-ubyte.gz --idx-labels $fm/train-labels-idx1-ubyte.gz \
    --class-names data/fashion-mnist/classes.txt --caption-template "a photo of a {}." --out "$media/shards/fmnist" --prefix fmnist --overwrite
  $castor prep audio --manifest "$media/raw/speech/train.tsv" --out "$media/shards/speech" --prefix speech --overwrite
  $castor prep audio --manifest "$media/raw/speech/val.tsv" --out "$media/shards/speech-val" --prefix speech --split validation --overwrite
  $castor prep audio --manifest "$media/raw/librivox/eval.tsv" --out "$media/shards/librivox" --prefix librivox --split test --overwrite
  $castor prep text --input "$media/raw/fortunes/fortunes.txt" --out "$media/shards/fortunes" --prefix fortunes --split test --overwrite
  $castor prep mix --input "$media/raw/mix/manifest.jsonl" --out "$media/shards/mix" --prefix mix --overwrite
fi
$castor data verify "$data/train" "$data/val" "$media/shards"/*
$castor data inspect "$media/shards/fmnist" "$media/shards/speech" "$media/shards/mix"

rm -rf runs/demo
# Data parallel on 2 ranks, one thread each: each rank takes 4 of the 8 sequences of the
# global batch (examples/kjv-small.ini: micro_batch 8), so the run matches one process.
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -np 2 $castor train --config examples/kjv-small.ini --data.train "$data/train" \
  --data.val "$data/val" --train.out_dir runs/demo --train.micro_batch 4 --train.threads 1 "$@"
