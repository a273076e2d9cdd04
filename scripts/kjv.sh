#!/usr/bin/env bash
# Writes the King James Bible (Debian's bible-kjv) as plain text for castor prep text:
# one chapter per paragraph (blank-line separated), verse references stripped.
# Whole books are held out for validation: Ruth, Jonah, Philemon, 1 John, Jude.
# Usage: scripts/kjv.sh OUT_DIR   -> OUT_DIR/train.txt, OUT_DIR/val.txt
set -euo pipefail
out=${1:?usage: scripts/kjv.sh OUT_DIR}
command -v bible >/dev/null || { echo "kjv.sh: 'bible' not found (apt-get install bible-kjv)" >&2; exit 1; }
mkdir -p "$out"
bible -f Gen1:1-Rev22:21 </dev/null | awk -v train="$out/train.txt" -v val="$out/val.txt" '
  match($0, /^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ /) {
    ref = substr($0, 1, RLENGTH - 1); text = substr($0, RLENGTH + 1)
    book = ref; sub(/[0-9]+:[0-9]+$/, "", book)
    chapter = ref; sub(/:[0-9]+$/, "", chapter)
    dest = (book == "Ruth" || book == "Jonah" || book == "Phmn" || book == "1Jn" || book == "Jude") ? val : train
    if (chapter != last) { if (last != "") print "" > prev; last = chapter }
    print text > dest; prev = dest
  }'
echo "kjv.sh: $(wc -l < "$out/train.txt") train lines, $(wc -l < "$out/val.txt") val lines in $out"
