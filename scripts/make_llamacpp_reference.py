#!/usr/bin/env python3
"""Reference outputs of llama.cpp (PyPI llama-cpp-python) on the same GGUF, for tests/engine_model_test.cpp.

Writes tests/data/llamacpp_reference.json:
  greedy: for a few ChatML prompts, the prompt token ids (llama.cpp's tokenizer), the length of the system part
          (our anchor) and the first N greedy tokens (argmax of llama.cpp's logits, no sampler involved), with
          the top-1 minus top-2 logit margin of each step.
  teacher_forced: the token ids of a fixed text and, for every position, llama.cpp's argmax next token and its
          margin (logits_all=True), so agreement can be measured without building llama.cpp in CI.
With --bench it also times llama.cpp's prefill and decode on this machine (n_threads as given) and writes
bench JSON rows to --bench-out.

Usage: /tmp/venv/bin/python scripts/make_llamacpp_reference.py [--model PATH] [--threads 2] [--bench]
"""
import argparse
import json
import os
import time

import numpy as np
from llama_cpp import Llama, __version__ as LLAMA_CPP_VERSION

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers greater than 10.",
]
# A fixed text for teacher forcing (written for this test; any prose works).
TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. From the top he could see the whole "
    "bay: the fishing boats returning with their nets, the gulls circling above the harbour, and the long line "
    "of the coast fading into the haze. He trimmed the wick, polished the great lens until it shone, and lit the "
    "lamp. Its beam swept across the water, once every ten seconds, as it had for more than a hundred years. "
    "Sailors far out at sea counted the flashes to know where they were. On stormy nights the keeper stayed awake "
    "until morning, listening to the wind and the rain against the glass, writing in his logbook the time of each "
    "ship that passed. In the spring, children from the village came to visit. He showed them the clockwork that "
    "turned the lens, the spare bulbs stored in wooden boxes, and the brass telescope that had belonged to his "
    "grandfather. They asked him whether he was ever lonely. He smiled and said that a lighthouse is never lonely, "
    "because it always has someone to look after. Years later, when the light was automated, he moved into a small "
    "cottage by the shore, but he still walked to the headland every evening to watch the beam come on.\n\n"
    "In mathematics, a prime number is a natural number greater than one that has no divisors other than one and "
    "itself. The first few primes are 2, 3, 5, 7, 11 and 13. Euclid proved that there are infinitely many of them."
)
GREEDY_TOKENS = 32


def chatml(system, user):
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def top2(row):
    i = int(np.argmax(row))
    second = float(np.partition(row, -2)[-2])
    return i, float(row[i]) - second


def main():
    ap = argparse.ArgumentParser()
    default_model = os.environ.get("FIELDPRINT_MODEL") or os.path.join(
        os.environ.get("FIELDPRINT_CACHE", os.path.expanduser("~/.cache/fieldprint")),
        "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                   "llamacpp_reference.json"))
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-out", default="/tmp/llamacpp_bench.json")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    llm = Llama(model_path=args.model, n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=True, verbose=False, seed=0)
    tok = lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)

    greedy = []
    for p in PROMPTS:
        ids = tok(chatml(DEFAULT_SYSTEM, p))
        anchor_len = len(tok(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"))
        llm.reset()
        llm.eval(ids)
        out, margins = [], []
        for _ in range(GREEDY_TOKENS):
            t, m = top2(np.asarray(llm.scores[llm.n_tokens - 1]))
            out.append(t)
            margins.append(round(m, 4))
            llm.eval([t])
        greedy.append({"prompt": p, "prompt_ids": ids, "anchor_len": anchor_len, "tokens": out,
                       "margins": margins, "text": llm.detokenize(out).decode("utf-8", "replace")})

    ids = tok(TEXT)
    llm.reset()
    llm.eval(ids)
    scores = np.asarray(llm.scores[:len(ids)])
    tf_top1, tf_margin = [], []
    for row in scores:
        t, m = top2(row)
        tf_top1.append(t)
        tf_margin.append(round(m, 4))

    ref = {"generator": f"llama-cpp-python {LLAMA_CPP_VERSION}", "model": os.path.basename(args.model),
           "script": "scripts/make_llamacpp_reference.py", "threads": args.threads,
           "greedy": greedy,
           "teacher_forced": {"ids": ids, "top1": tf_top1, "margins": tf_margin}}
    with open(args.out, "w") as f:
        json.dump(ref, f)
    print(f"wrote {args.out}: {len(greedy)} greedy cases, {len(ids)} teacher-forced tokens")

    if args.bench:
        # A second context without logits_all (which would compute the vocabulary projection for every prompt
        # token); the decode loop reads the last logits in place (no copy) to keep Python overhead small.
        import llama_cpp
        del llm
        llm = Llama(model_path=args.model, n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                    logits_all=False, verbose=False, seed=0)
        n_vocab = llm.n_vocab()

        def last_logits():
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(n_vocab,))

        rows = []
        prompt = tok(chatml(DEFAULT_SYSTEM, PROMPTS[0]))
        for rep in range(args.reps):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            t_prefill = time.perf_counter() - t0
            llm.reset()
            llm.eval(prompt)
            n = 128
            t0 = time.perf_counter()
            for _ in range(n):
                llm.eval([int(np.argmax(last_logits()))])
            t_decode = time.perf_counter() - t0
            rows.append({"prefill_tokens": len(ids), "prefill_s": t_prefill, "decode_tokens": n,
                         "decode_s": t_decode})
            print(f"llama.cpp prefill {len(ids) / t_prefill:.1f} tok/s, decode {n / t_decode:.1f} tok/s", flush=True)
        with open(args.bench_out, "w") as f:
            json.dump({"peer": f"llama-cpp-python {LLAMA_CPP_VERSION}", "threads": args.threads, "runs": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
