#!/usr/bin/env python3
"""peers_prefill.py — torch peers for the prefill rows of bench/cuda/bench_prefill.cu, on the same card and run.

Reads the JSON bench_prefill wrote (our rows + the cuBLAS GEMM floor), times per row:
  sdpa_contig      torch SDPA on contiguous K/V ([anchor; context] concatenated beforehand, not timed); square
                   causal without anchor uses is_causal (flash/cuDNN), other rows a boolean mask (gamma omitted)
  flex_contig      FlexAttention (torch.compile'd) on the same contiguous K/V, gamma as a score_mod, block mask
  gather_cat_sdpa  gather the paged pool through the block table (page 64) + cat the anchor + SDPA, all timed
Rates use the same FLOP count as ours (4*d per visible (query, key) pair). Writes
bench/results/prefill-<card>-<date>.{json,md} in DESIGN.md's "Evidence" format.
Usage: python3 bench/peers_prefill.py ours.json [--commit SHA] [--out-dir bench/results]
       python3 bench/peers_prefill.py --ours ours.json --out-prefix DIR/prefill   (scripts/gpu-check's form)
       python3 bench/peers_prefill.py --render prefill-<card>-<date>.json   (the .md again from a finished JSON;
                                                                         no torch, no GPU)
"""
import argparse
import json
import math
import os
import sys

if "--render" not in sys.argv:  # rendering a finished JSON needs neither torch nor a GPU
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench


def visible_mask(lq, ctx, anchor, device):
    """[lq, anchor + ctx] bool: the anchor always, paged key k iff k <= ctx - lq + j."""
    j = torch.arange(lq, device=device)[:, None]
    k = torch.arange(anchor + ctx, device=device)[None, :]
    return (k < anchor) | ((k - anchor) <= (ctx - lq + j))


def time_us(fn):
    return 1000.0 * do_bench(fn, warmup=25, rep=100, return_mode="median")


def run_row(row):
    p = row["params"]
    B, lq, ctx, A, Hq, Hkv, d = p["B"], p["q_len"], p["kv_len"], p["anchor"], p["Hq"], p["Hkv"], p["d"]
    dev, dt = "cuda", torch.bfloat16
    flops = row["flops"]
    g = torch.Generator(device=dev).manual_seed(5)
    q = torch.randn(B, Hq, lq, d, device=dev, dtype=dt, generator=g)
    ctx_k = torch.randn(B, Hkv, ctx, d, device=dev, dtype=dt, generator=g)
    ctx_v = torch.randn(B, Hkv, ctx, d, device=dev, dtype=dt, generator=g)
    ak = torch.randn(1, Hkv, A, d, device=dev, dtype=dt, generator=g)
    av = torch.randn(1, Hkv, A, d, device=dev, dtype=dt, generator=g)
    k = torch.cat([ak.expand(B, -1, -1, -1), ctx_k], dim=2).contiguous()
    v = torch.cat([av.expand(B, -1, -1, -1), ctx_v], dim=2).contiguous()
    square_causal = A == 0 and lq == ctx
    mask = None if square_causal else visible_mask(lq, ctx, A, dev)
    gamma = torch.full((Hq,), 0.5, device=dev, dtype=torch.float32)
    peers = {}

    def sdpa(kk, vv):
        if square_causal:
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, enable_gqa=True)

    def record(name, fn):
        try:
            fn()
            torch.cuda.synchronize()
            us = time_us(fn)
            peers[name] = {"time_us": us, "rate": flops / (us * 1e-6) / 1e12}
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            peers[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(f"  {row['name']:40s} {name:16s} {peers[name]}", flush=True)

    record("sdpa_contig", lambda: sdpa(k, v))

    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        diag = ctx - lq

        def mask_mod(b, h, qi, ki):
            return (ki < A) | ((ki - A) <= (diag + qi))

        def score_mod(s, b, h, qi, ki):
            return torch.where(ki < A, s + gamma[h], s)

        bm = create_block_mask(mask_mod, None, None, lq, A + ctx, device=dev)
        flex = torch.compile(flex_attention, dynamic=False)
        record("flex_contig", lambda: flex(q, k, v, score_mod=score_mod if A > 0 else None, block_mask=bm,
                                           enable_gqa=True))
    except Exception as e:
        peers["flex_contig"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}

    page = 64
    nb = (ctx + page - 1) // page
    perm = torch.randperm(B * nb, device=dev)
    table = perm.view(B, nb)
    pool_k = torch.empty(B * nb, page, Hkv, d, device=dev, dtype=dt)
    pool_v = torch.empty_like(pool_k)
    pad = nb * page - ctx
    src_k = F.pad(ctx_k.permute(0, 2, 1, 3), (0, 0, 0, 0, 0, pad)).reshape(B * nb, page, Hkv, d)
    src_v = F.pad(ctx_v.permute(0, 2, 1, 3), (0, 0, 0, 0, 0, pad)).reshape(B * nb, page, Hkv, d)
    pool_k[table.reshape(-1)] = src_k
    pool_v[table.reshape(-1)] = src_v

    def gather_cat_sdpa():
        gk = pool_k[table].reshape(B, nb * page, Hkv, d)[:, :ctx].transpose(1, 2)
        gv = pool_v[table].reshape(B, nb * page, Hkv, d)[:, :ctx].transpose(1, 2)
        if A > 0:
            gk = torch.cat([ak.expand(B, -1, -1, -1), gk], dim=2)
            gv = torch.cat([av.expand(B, -1, -1, -1), gv], dim=2)
        return sdpa(gk, gv)

    record("gather_cat_sdpa", gather_cat_sdpa)
    del k, v, pool_k, pool_v
    torch.cuda.empty_cache()
    return peers


def tile(p):
    """'wgmma (64, BN 128, 2 stages, ping-pong)' / 'wgmma warp-specialized (16, BN 128, 2 stages)' /
    'mma.sync (64, 8 warps)' from a row's params or a variant."""
    if p.get("kernel") == "wgmma":
        pp = ", ping-pong" if p.get("pingpong") else ""
        return f"wgmma ({p['page_size']}, BN {p['block_n']}, {p['stages']} stages{pp})"
    if p.get("kernel") == "wgmma-ws":
        walk = "" if "persistent" not in p else ", CTA per SM" if p["persistent"] else ", CTA per item"
        return f"wgmma warp-specialized ({p['page_size']}, BN {p['block_n']}, {p['stages']} stages{walk})"
    return f"{p.get('kernel', 'mma.sync')} ({p['page_size']}, {p['warps']} warps)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours", nargs="?")
    ap.add_argument("--ours", dest="ours_opt", help="same as the positional argument")
    ap.add_argument("--commit", default=os.environ.get("FIELDPRINT_COMMIT", "unknown"))
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--out-prefix", help="write PREFIX-<card>-<date>.{json,md} instead of under --out-dir")
    ap.add_argument("--render", help="write the .md beside this finished JSON (with peers) and stop")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        write_md(res, res.get("device", "?"), res.get("commit", "unknown"), args.render[: -len(".json")])
        return
    ours = args.ours_opt or args.ours
    if not ours:
        ap.error("the bench_prefill JSON is required")
    with open(ours) as f:
        res = json.load(f)
    name = torch.cuda.get_device_name(0)
    card = "h200" if "H200" in name else "h100" if "H100" in name else name.lower().replace(" ", "-")
    print(f"device {name}, torch {torch.__version__}", flush=True)
    res["commit"] = args.commit
    res["peer_software"] = f"torch {torch.__version__}"
    for row in res["rows"]:
        peers = run_row(row)
        row["peers"] = {k: v.get("rate", v.get("error")) for k, v in peers.items()}
        row["peer_times_us"] = {k: v["time_us"] for k, v in peers.items() if "time_us" in v}
    if args.out_prefix:
        stem = f"{args.out_prefix}-{card}-{res['date']}"
        os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        stem = os.path.join(args.out_dir, f"prefill-{card}-{res['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    write_md(res, name, args.commit, stem)


def write_md(res, name, commit, stem):
    gemm = res["floors"]["gemm_tflops"]
    lines = [f"# Prefill, {name}, {res['date']} (commit {commit})", "",
             f"Floor: cuBLAS bf16 GEMM 8192^3 = {gemm:.0f} TFLOP/s (same run). Rates in TFLOP/s, causal FLOPs "
             "counted once (4*d per visible (q,k) pair); peers on the same card, same FLOP count.", "",
             "| row | ours (paged) us | ours TFLOP/s | / GEMM | kernel (page, tile) | SDPA contig | Flex contig | gather+cat+SDPA |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]

    def fmt(v):
        return f"{v:.0f}" if isinstance(v, (int, float)) else "n/a"

    for row in res["rows"]:
        pr = row["peers"]
        lines.append(f"| {row['name']} | {row['time_us']:.0f} | {row['rate']:.0f} | {row['ratio_to_floor']:.2f} | "
                     f"{tile(row['params'])} | {fmt(pr.get('sdpa_contig'))} | "
                     f"{fmt(pr.get('flex_contig'))} | {fmt(pr.get('gather_cat_sdpa'))} |")
    lines += ["", "Every variant we timed (page size x kernel and tile):", "",
              "| row | kernel (page, tile) | us | TFLOP/s |", "| --- | --- | ---: | ---: |"]
    for row in res["rows"]:
        for v in row["variants"]:
            lines.append(f"| {row['name']} | {tile(v)} | {v['time_us']:.0f} | {v['tflops']:.0f} |")
    lines += ["", "Notes: d = 128 rows use Hq 32 / Hkv 8 (GQA 4), bf16, gamma 0.5 on anchor rows. \"ours\" is paged "
              "(shuffled pages, best of page 16/64 x tile shape). SDPA uses `is_causal` only for square causal rows "
              "without anchor; otherwise a boolean mask over [anchor; context] (gamma omitted). Flex: block mask + "
              "gamma score_mod, torch.compile'd. gather+cat+SDPA: page-64 pool gathered through the block table, "
              "anchor concatenated, SDPA; all timed."]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    sys.exit(main())
