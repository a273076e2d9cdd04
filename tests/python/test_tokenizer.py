# Parity test: castor's GPT-2 tokenizer must give exactly the ids of the independent Python
# reference (gpt2_reference.py, OpenAI's algorithm) on a varied corpus: tricky strings,
# scripts, emoji, white-space runs, invalid UTF-8, long words, seeded random text, and the
# KJV from `bible` and /usr/share/common-licenses when present. Also checks --decode round
# trips and the byte tokenizer. Drives `$CASTOR_BIN tokenize` (else build*/bin/castor);
# exits non-zero with a diff on each mismatching sample. Code points that this Python's
# Unicode data does not know are replaced first (see known_unicode).
import glob
import os
import random
import shutil
import subprocess
import sys
import unicodedata

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("CASTOR_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from gpt2_reference import Gpt2Encoder  # noqa: E402

FAILURES = []


def find_castor():
    path = os.environ.get("CASTOR_BIN")
    if path:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        sys.exit(f"test_tokenizer: CASTOR_BIN={path} is not an executable file (is castor built?)")
    found = sorted(glob.glob(os.path.join(ROOT, "build*", "bin", "castor")), key=os.path.getmtime)
    if found:
        return found[-1]
    sys.exit(f"test_tokenizer: castor binary not found (no CASTOR_BIN, no {ROOT}/build*/bin/castor)")


def run(castor, args, data):
    proc = subprocess.run([castor, "tokenize"] + args, input=data, capture_output=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def known_unicode(data):
    """Replaces code points unassigned in this Python's Unicode data by U+FFFD. castor's class
    table follows a newer Unicode than Debian's regex module may, and letters added since then
    would otherwise differ for reasons that are not castor's. Invalid UTF-8 is kept as is."""
    text = data.decode("utf-8", "surrogateescape")

    def keep(ch):
        c = ord(ch)
        return unicodedata.category(ch) != "Cn" or (c & 0xFFFE) == 0xFFFE or 0xFDD0 <= c <= 0xFDEF

    if all(keep(ch) for ch in text):
        return data
    return "".join(ch if keep(ch) else "\ufffd" for ch in text).encode("utf-8", "surrogateescape")


def castor_encode(castor, data, tokenizer="gpt2"):
    rc, out, err = run(castor, ["--tokenizer", tokenizer], data)
    if rc != 0:
        raise RuntimeError(f"castor tokenize --tokenizer {tokenizer} exited {rc}: {err.decode(errors='replace')}")
    if not out.endswith(b"\n") or out.count(b"\n") != 1:
        raise RuntimeError(f"castor tokenize: expected one line of ids ending in a newline, got {out[:200]!r}")
    return [int(x) for x in out.split()]


def castor_decode(castor, ids, tokenizer="gpt2"):
    rc, out, err = run(castor, ["--tokenizer", tokenizer, "--decode"], " ".join(map(str, ids)).encode() + b"\n")
    if rc != 0:
        raise RuntimeError(f"castor tokenize --decode exited {rc}: {err.decode(errors='replace')}")
    return out


def describe(enc, name, data, want, got):
    """A readable diff around the first differing id."""
    k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    lo = max(0, k - 6)

    def show(ids):
        return " ".join(f"{i}:{enc.decode([i])!r}" if 0 <= i < len(enc.decoder) else f"{i}:?" for i in ids)

    lines = [f"MISMATCH in {name}: {len(data)} bytes, reference {len(want)} ids, castor {len(got)} ids, "
             f"first difference at id #{k}",
             f"  text      : {data[:160]!r}{' ...' if len(data) > 160 else ''}",
             f"  reference : ... {show(want[lo:k + 6])}",
             f"  castor    : ... {show(got[lo:k + 6])}"]
    start = len(enc.decode(want[:lo]))
    lines.append(f"  near byte {start}: {data[start:start + 80]!r}")
    return "\n".join(lines)


def check_encode(enc, castor, name, data):
    """Compares castor's ids of one sample with the reference's; returns them when equal."""
    want = enc.encode(data)
    try:
        got = castor_encode(castor, data)
    except RuntimeError as e:
        FAILURES.append(f"{name}: {e}")
        return None
    if got != want:
        FAILURES.append(describe(enc, name, data, want, got))
        return None
    return got


def check_decode(castor, encoded):
    """decode(encode(text)) == text for every sample. Decoding is concatenation, so all the
    samples go through one call (castor starts slowly); per sample only to find a culprit."""
    try:
        if castor_decode(castor, [i for _, _, ids in encoded for i in ids]) == b"".join(d for _, d, _ in encoded):
            return
        for name, data, ids in encoded:
            back = castor_decode(castor, ids)
            if back != data:
                FAILURES.append(f"DECODE MISMATCH in {name}: decode(encode(text)) != text\n"
                                f"  text   : {data[:160]!r}\n  decoded: {back[:160]!r}")
    except RuntimeError as e:
        FAILURES.append(f"decode: {e}")


TRICKY = [
    "Hello world", "", " ", "  ", "\n", "\t", "x", "'", "''", "'s", "' s",
    "I'm here, aren't you? It's 2024! you'll they've I'd we're",
    "'S 'RE 'Ll don't DON'T ''s ?'s 'sam l'amour rock'n'roll",
    "\u2019s curly apostrophe\u2019ll",
    "  leading  spaces\t\ttab\n\nnewlines  ", "trailing space ", "a \tb\t c \n d", "\r\n\r\nwindows\r\n",
    "word\n\n\n\nword   \t  \n  word", "\x0b\x0c\x1c\x1d\x1e\x1f\x85 odd controls",
    "h\u00e9llo w\u00f6rld na\u00efve caf\u00e9 \u00df\u00e6\u00f8\u00e5",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u043a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u0430 "
    "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 "
    "\u0e44\u0e17\u0e22",
    "\U0001f916\U0001f389 emoji \U0001f469\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd "
    "flags \U0001f1eb\U0001f1f7",
    "digits 0123456789 3.14159 1,000,000 \u0663\u0664 \u096b \u216b \u00bd\u00b2 \uff11\uff12",
    "nbsp\u00a0here\u3000ideographic\u2003em\u2028line\u2029para \u00a0\u00a0word",
    "e\u0301 combining \u0915\u093f marks \ufeffbom \u200bzwsp",
    "<|endoftext|> is text, not the special token <|endoftext|>",
    "https://example.com/a?b=c&d=e#f email@example.org $100 #hashtag @user",
    "def f(x):\n    return x ** 2  # comment\n\tif x != 0: pass\n",
    "{\"json\": [1, 2.5, null], \"k\": \"v\"}", "!!!??? ... --- ___ *** ===",
    "CamelCaseWord snake_case_word kebab-case-word ALLCAPS",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    " " * 300 + "x" + "9" * 200 + "!" * 150 + "\t" * 70,
    "Supercalifragilisticexpialidocious" * 40,
    "\ud7ff\ue000\uffff\U00010000\U0010ffff \U00020000\U00031350\U000323b0 \U0001e5d0",
]

INVALID_UTF8 = [
    b"bad\xff\xfe bytes", b"\x80", b"\xc3", b"x\xc0\xafy", b"\xe2\x82 truncated", b"\xe2\x82\xac ok",
    b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 too big", b"\xf0\x9f\x98 cut emoji", b" \xff word \xfe\xfe",
    b"\xef\xbb\xbfBOM", bytes(range(256)), b"a\x00b\x00\x00 c",
]


def random_text(rng, n):
    alphabet = (list("abcXYZ019 '\t\n\r.,!?-_") + [" ", " ", " ", "e", "t"] + ["'s", "'re", "'ll", "'d", "'t"] +
                ["\u00a0", "\u2003", "\u3000", "\u0085", "\u00e9", "\u00df", "\u03a9", "\u0436", "\u4e2d",
                 "\u0643", "\u05e9", "\u0663", "\u096b", "\u216b", "\u00bd", "\U0001f600", "\u0301", "\u200b"])
    bad = [b"\xff", b"\x80", b"\xe2\x82", b"\xc3"]
    parts = []
    for _ in range(n):
        if rng.random() < 0.03:
            parts.append(rng.choice(bad))
        else:
            parts.append(rng.choice(alphabet).encode())
    return b"".join(parts)


def bible_text(ref):
    if shutil.which("bible") is None:
        return None
    try:
        out = subprocess.run(["bible", "-f", ref], stdin=subprocess.DEVNULL, capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def main():
    enc = Gpt2Encoder()
    # The reference itself against ids known from OpenAI's tokenizer.
    assert enc.encode("Hello world") == [15496, 995], enc.encode("Hello world")
    assert enc.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert enc.eot_id == 50256 and len(enc.encoder) == 50257

    castor = find_castor()
    print(f"castor: {castor}; reference regex {regex.__version__}, Unicode data {unicodedata.unidata_version}")
    samples = [(f"tricky[{i}]", s.encode("utf-8")) for i, s in enumerate(TRICKY)]
    samples += [(f"invalid_utf8[{i}]", b) for i, b in enumerate(INVALID_UTF8)]
    rng = random.Random(1234)
    samples += [(f"random[{i}]", random_text(rng, n)) for i, n in enumerate([50, 500, 5000, 50000, 200000])]
    samples.append(("random_bytes", bytes(rng.randrange(256) for _ in range(20000))))
    samples.append(("long_words", b" ".join(bytes(rng.choice(b"abcdefghij") for _ in range(n))
                                            for n in [65, 100, 1000, 5000])))
    for ref in ["Gen1:1-Gen3:24", "Gen1:1-Rev22:21"]:
        text = bible_text(ref)
        if text:
            samples.append((f"bible {ref}", text))
        else:
            print(f"skipped: bible {ref} (no `bible` program)")
    for lic in ["GPL-3", "Apache-2.0"]:
        path = os.path.join("/usr/share/common-licenses", lic)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                samples.append((path, f.read()))

    samples = [(name, known_unicode(data)) for name, data in samples]
    encoded = []
    for name, data in samples:
        ids = check_encode(enc, castor, name, data)
        if ids is not None:
            encoded.append((name, data, ids))
    check_decode(castor, encoded)
    total = sum(len(data) for _, data in samples)

    # Byte tokenizer: ids are the bytes.
    data = "byte \u00e9\U0001f600".encode() + b"\xff"
    try:
        if castor_encode(castor, data, "byte") != list(data):
            FAILURES.append("byte tokenizer: ids are not the input bytes")
        if castor_decode(castor, list(data), "byte") != data:
            FAILURES.append("byte tokenizer: --decode does not give the bytes back")
    except RuntimeError as e:
        FAILURES.append(f"byte tokenizer: {e}")

    # An id outside the vocabulary must fail loudly, naming the id.
    rc, out, err = run(castor, ["--tokenizer", "gpt2", "--decode"], b"15496 50257\n")
    if rc == 0 or b"50257" not in err:
        FAILURES.append(f"--decode of id 50257: expected a non-zero exit naming the id, got rc={rc} stderr={err!r}")

    print(f"checked {len(samples)} samples, {total} bytes")
    if FAILURES:
        print("\n\n".join(FAILURES))
        print(f"FAILED: {len(FAILURES)} problem(s)")
        return 1
    print("OK: castor's gpt2 tokenizer matches the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
