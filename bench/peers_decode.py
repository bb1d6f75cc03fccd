#!/usr/bin/env python3
"""peers_decode.py — torch peers of the decode kernel on the same card and shapes as bench/cuda/bench_decode.cu,
merged with our numbers (--ours, that bench's JSON) into <out-prefix>-<card>-<date>.{json,md}.

Peers (bf16, median of CUDA-event timings after warm-up, same reps as ours):
  sdpa_contig      torch SDPA (enable_gqa) on K/V pre-concatenated [anchor ; paged] per sequence, unpaged and
                   materialised before timing (no gamma: SDPA has no per-head anchor bias without a dense mask)
  gather_cat_sdpa  timed end to end: gather the pages through the block table, cat the anchor, SDPA
  flex_contig      FlexAttention (torch.compile) on the same contiguous K/V, gamma as a score_mod (full semantics);
                   contiguous, NOT paged (labelled)
  unfused_two      the paper's design: anchor attention + paged attention (on the pre-gathered contiguous paged KV)
                   as two flash-attention calls returning LSE, combined with gamma (GQA folded into query rows)
FlashInfer is not installed on the GPU machines (no network there), so it is not measured.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F

SHAPES = [  # name, B, ctx, A, Hq, Hkv, d, page — identical to bench_decode.cu
    ("llama-B64-ctx4096-A1024", 64, 4096, 1024, 32, 8, 128, 16),
    ("llama-B8-ctx32768-A4096", 8, 32768, 4096, 32, 8, 128, 16),
    ("llama-B256-ctx1024-A256", 256, 1024, 256, 32, 8, 128, 16),
    ("llama-B1-ctx131072-A1024", 1, 131072, 1024, 32, 8, 128, 16),
    ("smollm2-B64-ctx2048-A256", 64, 2048, 256, 9, 3, 64, 16),
]


def median_us(fn, warmup=10, reps=100):
    for _ in range(warmup):
        fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    t = sorted(a.elapsed_time(b) * 1e3 for a, b in ev)
    return t[len(t) // 2]


def flash_lse(q, k, v, scale):
    """(out [B,H,L,d], natural-log lse [B,H,L]) through torch's flash kernel (same head counts)."""
    r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    return r[0], r[1]


def run_shape(name, B, ctx, A, Hq, Hkv, d, P, reps):
    dev, dt = "cuda", torch.bfloat16
    G, scale = Hq // Hkv, d ** -0.5
    g = torch.Generator(device=dev).manual_seed(0)
    pages = B * ((ctx + P - 1) // P)
    k_pool = torch.rand(pages, P, Hkv, d, device=dev, dtype=dt, generator=g) * 2 - 1
    v_pool = torch.rand(pages, P, Hkv, d, device=dev, dtype=dt, generator=g) * 2 - 1
    ak = torch.rand(A, Hkv, d, device=dev, dtype=dt, generator=g) * 2 - 1
    av = torch.rand(A, Hkv, d, device=dev, dtype=dt, generator=g) * 2 - 1
    q = torch.rand(B, Hq, d, device=dev, dtype=dt, generator=g) * 2 - 1
    gamma = (torch.arange(Hq, device=dev) % 5).float() * 0.25 - 0.5
    table = torch.randperm(pages, device=dev, generator=g).view(B, -1).int()
    res = {}

    def gather(pool):  # [B, ctx, Hkv, d]
        return pool[table.long()].reshape(B, -1, Hkv, d)[:, :ctx]

    kp = gather(k_pool).permute(0, 2, 1, 3).contiguous()  # [B, Hkv, ctx, d]
    vp = gather(v_pool).permute(0, 2, 1, 3).contiguous()
    ka = ak.permute(1, 0, 2).unsqueeze(0)  # [1, Hkv, A, d]
    va = av.permute(1, 0, 2).unsqueeze(0)
    kc = torch.cat([ka.expand(B, -1, -1, -1), kp], dim=2).contiguous()  # [B, Hkv, A+ctx, d]
    vc = torch.cat([va.expand(B, -1, -1, -1), vp], dim=2).contiguous()
    q4 = q.unsqueeze(2)  # [B, Hq, 1, d]

    def attempt(key, fn):
        try:
            res[key] = median_us(fn, reps=reps)
        except Exception as e:  # a peer that cannot run is reported, not fatal
            res[key] = None
            res[key + "_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    attempt("sdpa_contig", lambda: F.scaled_dot_product_attention(q4, kc, vc, scale=scale, enable_gqa=True))

    def gather_cat_sdpa():
        k = torch.cat([ak.unsqueeze(0).expand(B, -1, -1, -1), gather(k_pool)], dim=1).transpose(1, 2)
        v = torch.cat([av.unsqueeze(0).expand(B, -1, -1, -1), gather(v_pool)], dim=1).transpose(1, 2)
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True)

    attempt("gather_cat_sdpa", gather_cat_sdpa)

    try:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)

        def score_mod(score, b, h, q_idx, kv_idx):
            return torch.where(kv_idx < A, score + gamma[h], score)

        attempt("flex_contig", lambda: flex(q4, kc, vc, score_mod=score_mod, scale=scale, enable_gqa=True))
    except Exception as e:
        res["flex_contig"] = None
        res["flex_contig_error"] = f"{type(e).__name__}: {e}"[:200]

    def unfused_two():
        qa = q.view(B, Hkv, G, d).permute(1, 0, 2, 3).reshape(1, Hkv, B * G, d)  # every sequence's rows at once
        oa, la = flash_lse(qa, ka, va, scale)
        oa = oa.view(Hkv, B, G, d).permute(1, 0, 2, 3)
        la = la.view(Hkv, B, G).permute(1, 0, 2) + gamma.view(Hkv, G)
        op, lp = flash_lse(q.view(B, Hkv, G, d), kp, vp, scale)
        w = torch.sigmoid(la - lp).unsqueeze(-1)  # e^la / (e^la + e^lp)
        return (w * oa.float() + (1 - w) * op.float()).to(dt).reshape(B, Hq, d)

    attempt("unfused_two", unfused_two)
    # Cross-check the peers that implement the full semantics (gamma included) against each other.
    try:
        ref = flex(q4, kc, vc, score_mod=score_mod, scale=scale, enable_gqa=True).squeeze(2).float()
        got = unfused_two().float()
        res["check_unfused_vs_flex_rel_l2"] = float((got - ref).norm() / ref.norm())
    except Exception as e:
        res["check_error"] = f"{type(e).__name__}"
    del k_pool, v_pool, kp, vp, kc, vc
    torch.cuda.empty_cache()
    return res


def card_slug(name):
    m = re.search(r"(H100|H200|A100|B200|GH200|L40S?)", name, re.I)
    return (m.group(1) if m else re.sub(r"[^A-Za-z0-9]+", "-", name)).lower()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--out-prefix", required=True)
    ap.add_argument("--reps", type=int, default=100)
    args = ap.parse_args()
    ours = json.load(open(args.ours))
    dev_name = torch.cuda.get_device_name()
    date = os.environ.get("FP_DATE", datetime.date.today().isoformat())
    try:
        r = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True, text=True)
        commit = r.stdout.strip() if r.returncode == 0 else ""
    except OSError:
        commit = ""
    commit = os.environ.get("FP_COMMIT", commit or "unknown")
    by_name = {r["name"]: r for r in ours["rows"]}
    for shape in SHAPES:
        print("peers:", shape[0], flush=True)
        peers = run_shape(*shape, reps=args.reps)
        row = by_name.get(shape[0])
        if row is not None:
            row["peers"] = {k: v for k, v in peers.items() if not k.endswith("_error") and not k.startswith("check")}
            row["peer_notes"] = {k: v for k, v in peers.items() if k.endswith("_error") or k.startswith("check")}
        print(" ", peers, flush=True)
    out = {
        "device": dev_name,
        "date": date,
        "commit": commit,
        "torch": torch.__version__,
        "floors": ours["floors"],
        "bytes_counted": ours.get("bytes_counted"),
        "peers_note": "FlashInfer: not installed on the GPU machine (no network), not measured. flex_contig is "
        "contiguous (not paged). sdpa_contig has no gamma. unfused_two reads the pre-gathered contiguous paged KV.",
        "rows": ours["rows"],
        "sweep": ours.get("sweep", []),
    }
    prefix = f"{args.out_prefix}-{card_slug(dev_name)}-{date}"
    with open(prefix + ".json", "w") as f:
        json.dump(out, f, indent=2)
    names = ["sdpa_contig", "gather_cat_sdpa", "flex_contig", "unfused_two"]
    lines = [
        f"# decode — {dev_name}, {date}, commit {commit[:12]}",
        "",
        f"Copy floor (d2d, read+write) measured in the same run: **{ours['floors']['copy_tbps']:.3f} TB/s**. "
        "Bytes counted: paged K+V of every sequence once + anchor K+V once per launch. Times are medians in us.",
        "",
        "| shape | ours us | TB/s | % of copy BW | floor us | " + " | ".join(names) + " | best peer / ours |",
        "|---|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in ours["rows"]:
        p = r.get("peers", {})
        vals = [p.get(n) for n in names]
        best = min([v for v in vals if v], default=None)
        cells = [f"{v:.1f}" if v else "n/a" for v in vals]
        speed = f"{best / r['time_us']:.2f}x" if best else "n/a"
        lines.append(
            f"| {r['name']} | {r['time_us']:.1f} | {r['rate']:.3f} | {100 * r['ratio_to_floor']:.1f}% | "
            f"{r['floor_us']:.1f} | " + " | ".join(cells) + f" | {speed} |"
        )
    lines += ["", out["peers_note"]]
    notes = {r["name"]: r.get("peer_notes") for r in ours["rows"] if r.get("peer_notes")}
    if notes:
        lines += ["", "Peer notes: " + json.dumps(notes)]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
