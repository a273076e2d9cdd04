#!/usr/bin/env bash
# Builds the real multimodal inputs of the demo and the tests from Debian packages:
#   speech/   KJV verses spoken by espeak-ng (22.05 kHz WAV), train.tsv (Genesis) and
#             val.tsv (Jonah 1): "<wav>\t<verse>" manifests for castor prep audio
#   librivox/ eval.tsv: real human speech with transcripts (pocketsphinx-testdata), eval only
#   fortunes/ fortunes.txt: the fortunes database, one fortune per paragraph (second text domain)
#   mix/      manifest.jsonl: interleaved text / image / speech documents (castor prep mix)
# Usage: scripts/media_data.sh OUT_DIR [N_TRAIN_VERSES (default 200)]
set -euo pipefail
out=${1:?usage: scripts/media_data.sh OUT_DIR [N_TRAIN_VERSES]}
n=${2:-200}
here=$(cd "$(dirname "$0")" && pwd)
for tool in bible espeak-ng; do
  command -v $tool >/dev/null || { echo "media_data.sh: '$tool' not found (run scripts/setup.sh)" >&2; exit 1; }
done
mkdir -p "$out/speech/wav" "$out/librivox" "$out/fortunes" "$out/mix"

# speech: one WAV per verse; the verse text (reference stripped) is the transcript.
speak() (  # speak RANGE MANIFEST PREFIX MAX_VERSES
  set +o pipefail  # head stops reading early: bible's SIGPIPE is expected
  : > "$2"
  bible -f "$1" </dev/null | grep -E '^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ ' | head -n "$4" | while IFS= read -r line; do
    ref=${line%% *}; text=${line#* }
    wav="wav/$3-${ref//:/_}.wav"
    [ -s "$out/speech/$wav" ] || espeak-ng -w "$out/speech/$wav" -- "$text" </dev/null
    printf '%s\t%s\n' "$wav" "$text" >> "$2"
  done
)
speak "Gen1:1-Gen50:26" "$out/speech/train.tsv" gen "$n"
speak "Jonah1:1-Jonah1:17" "$out/speech/val.tsv" jonah 17

# librivox: "<s> text </s> (file id)" -> "<wav>\t<text>"
src=/usr/share/pocketsphinx/test/data/librivox
sed -E 's|^<s> (.*) </s> \((.*)\)$|'"$src"'/\2.wav\t\1|' "$src/transcription" > "$out/librivox/eval.tsv"

# fortunes: '%' lines separate fortunes; castor prep text splits documents at blank lines.
cat /usr/share/games/fortunes/{fortunes,literature,riddles} 2>/dev/null \
  | awk '/^%$/ { print ""; next } /^[[:space:]]*$/ { next } { print }' > "$out/fortunes/fortunes.txt"

/usr/bin/python3 "$here/make_mix.py" --out "$out/mix" --speech "$out/speech/train.tsv" --count 64
echo "media_data.sh: $(wc -l < "$out/speech/train.tsv") train + $(wc -l < "$out/speech/val.tsv") val spoken verses," \
  "$(wc -l < "$out/librivox/eval.tsv") librivox clips, $(grep -c '^$' "$out/fortunes/fortunes.txt") fortunes," \
  "$(wc -l < "$out/mix/manifest.jsonl") mixed documents in $out"
