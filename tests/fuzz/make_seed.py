#!/usr/bin/env python3
"""Writes a tiny valid GGUF v3 file (a few metadata kinds, an array, two small tensors) as the fuzz seed."""
import struct
import sys


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


kvs = [
    (s("general.architecture"), 8, s("llama")),
    (s("general.alignment"), 4, struct.pack("<I", 32)),
    (s("llama.block_count"), 4, struct.pack("<I", 1)),
    (s("llama.rope.freq_base"), 6, struct.pack("<f", 10000.0)),
    (s("tokenizer.ggml.tokens"), 9, struct.pack("<IQ", 8, 3) + s("a") + s("b") + s("ab")),
]
tensors = [("token_embd.weight", [4, 2], 0, 0), ("blk.0.attn_norm.weight", [4], 0, 32)]  # F32
out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
for key, typ, val in kvs:
    out += key + struct.pack("<I", typ) + val
for name, dims, typ, off in tensors:
    out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    out += struct.pack("<IQ", typ, off)
out += b"\0" * (-len(out) % 32)
out += struct.pack("<8f", *range(8)) + struct.pack("<4f", 1, 1, 1, 1)
open(sys.argv[1], "wb").write(out)
