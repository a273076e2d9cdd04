# Independent Python reference of the original OpenAI GPT-2 byte-level BPE encoder, used by
# test_tokenizer.py to check castor's C++ tokenizer id for id. It reads data/gpt2/
# (encoder.json, vocab.bpe) and follows the published algorithm: bytes_to_unicode, the
# pre-tokenization regex (via the `regex` module), then rank-ordered pair merges per word.
# Byte strings that are not valid UTF-8 are accepted through 'surrogateescape': each bad
# byte becomes a lone surrogate, which the regex treats as "other" (neither \s, \p{L}, \p{N}).
import json
import os
import sys

import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """Maps every byte to a printable code point: printable Latin-1 bytes map to themselves,
    the remaining 68 bytes (controls, space, 0x7f-0xa0, 0xad) to 256, 257, ... in order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) +
                 list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def get_pairs(word):
    """The set of adjacent symbol pairs of a word (a tuple of symbols)."""
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def default_data_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "data")


class Gpt2Encoder:
    def __init__(self, data_dir=None):
        folder = os.path.join(data_dir or default_data_dir(), "gpt2")
        with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(os.path.join(folder, "vocab.bpe"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.cache = {}
        self.eot_id = self.encoder["<|endoftext|>"]

    def bpe(self, token):
        """Merges the lowest-ranked adjacent pair everywhere it occurs, until no pair has a rank."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        while pairs:
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            merged = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            pairs = get_pairs(word)
        self.cache[token] = word
        return word

    def pieces(self, data):
        """The pre-tokenization of `data` (str or bytes) as a list of byte strings."""
        text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
        return [p.encode("utf-8", "surrogateescape") for p in PATTERN.findall(text)]

    def encode(self, data):
        ids = []
        for piece in self.pieces(data):
            token = "".join(self.byte_encoder[b] for b in piece)
            ids.extend(self.encoder[sym] for sym in self.bpe(token))
        return ids

    def decode(self, ids):
        """Returns the bytes of the concatenated tokens (not necessarily valid UTF-8)."""
        text = "".join(self.decoder[i] for i in ids)
        return bytes(self.byte_decoder[c] for c in text)


if __name__ == "__main__":
    # Usage: gpt2_reference.py < text   prints the ids of the whole of stdin on one line.
    enc = Gpt2Encoder()
    print(" ".join(str(i) for i in enc.encode(sys.stdin.buffer.read())))
