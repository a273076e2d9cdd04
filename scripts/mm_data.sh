#!/usr/bin/env bash
# Builds the byte-level multimodal corpus of examples/mm-moe-small.ini from real data:
# 600 KB of King James text, 40,000 Fashion-MNIST images with captions ("a photo of a
# trouser."), and 200 spoken KJV verses with their transcripts (repeated 8 times per
# epoch: there are few); validation: held-out KJV books, 1,000 Fashion-MNIST test images,
# 17 spoken verses of Jonah. Writes OUT/train and OUT/val (directories of shard links),
# and OUT/sft: the interleaved text/image/speech documents of scripts/make_mix.py, whose
# prompt segments carry no loss (the alignment stage's data).
# Usage: scripts/mm_data.sh [OUT (default runs/data/mm)]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/data/mm}
castor=build/bin/castor
fm=/usr/share/datasets/fashion-mnist
classes=data/fashion-mnist/classes.txt
kjv=runs/data/kjv/text
media=runs/data/media/raw
[ -f "$kjv/train.txt" ] || bash scripts/kjv.sh "$kjv"
[ -f "$media/speech/train.tsv" ] || bash scripts/media_data.sh "$media" 200
mkdir -p "$out"
head -c 600000 "$kjv/train.txt" > "$out/kjv-600k.txt"
q="--tokenizer byte --overwrite --quiet"
$castor prep text $q --input "$out/kjv-600k.txt" --out "$out/kjv-train" --prefix kjv
$castor prep text $q --input "$kjv/val.txt" --out "$out/kjv-val" --prefix kjv --split validation
for split in train:train:40000 t10k:test:1000; do
  IFS=: read -r file name limit <<< "$split"
  $castor prep images $q --idx-images $fm/$file-images-idx3-ubyte.gz --idx-labels $fm/$file-labels-idx1-ubyte.gz \
    --class-names $classes --caption-template "a photo of a {}." --limit "$limit" --split "$name" \
    --out "$out/fmnist-$name" --prefix fmnist
done
$castor prep audio $q --manifest "$media/speech/train.tsv" --out "$out/speech-train" --prefix speech
$castor prep audio $q --manifest "$media/speech/val.tsv" --out "$out/speech-val" --prefix speech --split validation
$castor prep mix $q --input "$media/mix/manifest.jsonl" --out "$out/sft" --prefix mix
rm -rf "$out/train" "$out/val"
mkdir -p "$out/train" "$out/val"
ln -s ../kjv-train/kjv-00000.h5 "$out/train/a-kjv.h5"
ln -s ../fmnist-train/fmnist-00000.h5 "$out/train/b-fmnist.h5"
for i in 1 2 3 4 5 6 7 8; do ln -s ../speech-train/speech-00000.h5 "$out/train/c-speech-$i.h5"; done
ln -s ../kjv-val/kjv-00000.h5 "$out/val/a-kjv.h5"
ln -s ../fmnist-test/fmnist-00000.h5 "$out/val/b-fmnist.h5"
ln -s ../speech-val/speech-00000.h5 "$out/val/c-speech.h5"
$castor data inspect "$out/train" | tail -8
