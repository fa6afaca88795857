"""Training throughput per preset and variant, beside the loop a user would write, in one run.

Each cell runs in its own process (so peak memory is the cell's own) and times full steps
of the real loop (``factordiff.training.train``: data, first-stage encode, encoder + U-Net
forward/backward, AdamW, EMA) after warm-up steps; the first stage is left untrained
(same shapes, same cost). Beside them, on the same shapes and batch: diffusers'
``UNet2DConditionModel`` in a plain eager fp32 loop (random latents and tokens, AdamW),
the baseline the speed-up is quoted against. The machine's own peak is measured in the
same run (a large fp32 and bf16 matmul), and model FLOPs per image per training step are
counted with ``torch.utils.flop_counter`` (attention counted through its matmuls), so
each row shows achieved FLOP/s as a share of that peak. ``--profile`` adds an op-by-op
breakdown of one preset's step. Prints tables and writes JSON with the machine.

    python benchmarks/train_throughput.py                      # the README table (~15 min, 2 cores)
    python benchmarks/train_throughput.py --presets shapes3d --variants fp32,bf16 --batch-sizes 32
    python benchmarks/train_throughput.py --device cuda --compile   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from factordiff.training.precision import native_cpu_bf16

#: Variant name -> config overrides of the training loop.
VARIANTS: dict[str, list[str]] = {
    "fp32": [],
    "fp32+channels_last": ["train.channels_last=true"],
    "bf16": ["train.mixed_precision=bf16"],
    "bf16+channels_last": ["train.mixed_precision=bf16", "train.channels_last=true"],
    "bf16+compile": ["train.mixed_precision=bf16", "train.compile=true"],
    "fp32+compile": ["train.compile=true"],
}

BASELINE = "diffusers UNet2DConditionModel, eager fp32 (baseline)"

#: Presets timed by default; celeba's model runs on procedural 64x64 images (no CelebA here).
PRESET_DATA = {"celeba": ["data.name=shapes3d"]}

#: Profiler op name fragments -> category of the op-by-op breakdown (first match wins).
CATEGORIES = [
    ("attention", ("scaled_dot_product", "softmax", "bmm")),
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("matmul (linear)", ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
    ("optimizer + EMA", ("adam", "lerp", "addcdiv", "addcmul", "sqrt", "_foreach")),
    ("concat / copies / casts", ("aten::cat", "copy_", "_to_copy", "contiguous", "clone")),
    ("activations", ("silu", "gelu", "relu", "elu", "threshold")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "where", "rsub")),
]


def cpu_name() -> str:
    """The CPU's model name, marked where it has no bf16 instructions: two CPUs of one name
    (AMD EPYC with and without AVX-512) train bf16 recipes in different precisions
    (``factordiff.training.precision``), so their rows must not be paired or pooled."""
    return _model_name() + ("" if native_cpu_bf16() else " (no bf16: trains fp32)")


def _model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((x.split(":", 1)[1].split() for x in text.splitlines() if "flags" in x), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, reps: int = 20) -> float:
    """GFLOP/s of an n x n matmul: the machine's practical peak for that dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def config_for(preset: str, steps: int, batch: int, extra: list[str]):
    from factordiff.config import load_config

    overrides = [
        f"train.max_steps={2 + steps}", "train.log_every=2", "train.eval_every=0",
        f"train.checkpoint_every={10 * (2 + steps)}", "model.first_stage.train_steps=0",
        f"train.batch_size={batch}", *PRESET_DATA.get(preset, []), *extra,
    ]  # fmt: skip
    return load_config(preset, overrides)


def time_ours(preset: str, variant: str, steps: int, batch: int, device: str) -> dict:
    """Images/s of the real training loop, read from its own log after 2 warm-up steps."""
    from factordiff.training import train

    cfg = config_for(preset, steps, batch, VARIANTS[variant])
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # accelerate picks the device
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    rates = [r["images_per_s"] for r in map(json.loads, lines) if "images_per_s" in r][1:]
    return {"images_per_s": statistics.median(rates), "cell_wall_s": round(wall, 1)}


def diffusers_unet(preset: str, batch: int):
    """diffusers' UNet2DConditionModel with the preset U-Net's widths, depth and heads."""
    from diffusers import UNet2DConditionModel

    from factordiff.pipeline import FactorDiffusion

    cfg = config_for(preset, 1, batch, [])
    ours = FactorDiffusion(cfg)
    u = cfg.model.unet
    levels = len(u.channel_mult)
    attn = [2**i in u.attention_resolutions for i in range(levels)]
    unet = UNet2DConditionModel(
        sample_size=ours.latent_shape[1],
        in_channels=ours.latent_shape[0],
        out_channels=ours.latent_shape[0],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn[::-1]),
        block_out_channels=tuple(u.model_channels * m for m in u.channel_mult),
        layers_per_block=u.num_res_blocks,
        cross_attention_dim=cfg.model.encoder.unit_dim,
        attention_head_dim=u.num_heads,  # diffusers' legacy name: the number of heads
        norm_num_groups=min(32, u.model_channels),
    )
    return unet, ours.latent_shape, (cfg.model.encoder.n_units, cfg.model.encoder.unit_dim)


def time_baseline(preset: str, steps: int, batch: int, device: str) -> dict:
    """The loop a user would write: eager fp32, diffusers U-Net, AdamW, L1 on epsilon."""
    unet, latent, tokens = diffusers_unet(preset, batch)
    unet.to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    z = torch.randn(batch, *latent, device=device)
    context = torch.randn(batch, *tokens, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        loss = (unet(z, t, encoder_hidden_states=context).sample - z).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    rate = batch * steps / (time.perf_counter() - start)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    return {"images_per_s": rate, "parameters_m": round(params, 2)}


def count_flops(module_step, batch: int) -> float:
    """FLOPs per image of one forward + backward (attention counted via the math kernel)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module_step()
    return counter.get_total_flops() / batch


def flops_ours(preset: str) -> dict:
    from factordiff.pipeline import FactorDiffusion

    model = FactorDiffusion(config_for(preset, 1, 2, []))
    x = torch.rand(2, 3, model.image_size, model.image_size) * 2 - 1
    noise, t = torch.randn(2, *model.latent_shape), torch.tensor([10, 900])
    total = count_flops(lambda: model(x, noise, t).backward(), 2)
    tokens = torch.randn(2, model.n_units, model.config.model.encoder.unit_dim)
    unet_only = count_flops(lambda: model.unet(noise, t, tokens).sum().backward(), 2)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {
        "gflop_per_image": total / 1e9,
        "unet_gflop_per_image": unet_only / 1e9,
        "parameters_m": round(params, 2),
        "unet_parameters_m": round(sum(p.numel() for p in model.unet.parameters()) / 1e6, 2),
        "latent": list(model.latent_shape),
    }


def flops_baseline(preset: str) -> float:
    unet, latent, tokens = diffusers_unet(preset, 2)
    z, c, t = torch.randn(2, *latent), torch.randn(2, *tokens), torch.tensor([10, 900])
    return count_flops(lambda: unet(z, t, encoder_hidden_states=c).sample.sum().backward(), 2) / 1e9


def data_and_anchor_shares(preset: str, batch: int, step_s: float) -> dict:
    """Batch fetch + preparation time per step, and one DyGA refit against its interval."""
    from factordiff.data import load_dataset
    from factordiff.pipeline import FactorDiffusion
    from factordiff.training.batches import StepBatches
    from factordiff.training.dyga import refit_anchors

    cfg = config_for(preset, 1, batch, [])
    dataset = load_dataset(cfg.data)
    model = FactorDiffusion(cfg)
    batches = StepBatches(len(dataset), cfg.train.batch_size, cfg.train.seed)
    model.prepare_images(dataset.images_at(batches.rows(0, 0, 1)))  # warm caches
    start = time.perf_counter()
    for step in range(1, 6):
        model.prepare_images(dataset.images_at(batches.rows(step, 0, 1)))
    out = {"data_share": (time.perf_counter() - start) / 5 / step_s}
    if cfg.anchoring.enabled:
        start = time.perf_counter()
        refit_anchors(model, dataset, cfg, step=1)
        fit_s = time.perf_counter() - start
        a = cfg.anchoring
        every = a.every_steps or a.every_epochs * (len(dataset) // cfg.train.batch_size)
        out |= {"anchor_fit_s": fit_s, "anchor_share": fit_s / (fit_s + every * step_s)}
    return out


def load_config_batch(preset: str) -> int:
    from factordiff.config import load_config

    return load_config(preset).train.batch_size


def profile_step(preset: str, variant: str, batch: int) -> list[dict]:
    """Self CPU time of one training step's ops, grouped into categories."""
    from torch.profiler import ProfilerActivity, profile

    from factordiff.pipeline import FactorDiffusion
    from factordiff.training.optim import make_adamw

    cfg = config_for(preset, 1, batch, VARIANTS[variant])
    model = FactorDiffusion(cfg).train()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, 1e-4, 0.01)
    x = torch.rand(batch, 3, model.image_size, model.image_size) * 2 - 1
    noise, t = torch.randn(batch, *model.latent_shape), torch.randint(0, 1000, (batch,))
    bf16 = cfg.train.mixed_precision == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, noise, t)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    spent: dict[str, float] = defaultdict(float)
    top: dict[str, list] = defaultdict(list)
    for event in prof.key_averages():
        name = event.key
        category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        spent[category] += event.self_cpu_time_total / 1e3
        top[category].append((event.self_cpu_time_total / 1e3, name))
    total = sum(spent.values())
    return [
        {"category": c, "ms": round(ms, 1), "share": round(ms / total, 3),
         "top_ops": [n for _, n in sorted(top[c], reverse=True)[:3]]}
        for c, ms in sorted(spent.items(), key=lambda kv: -kv[1])
    ]  # fmt: skip


def run_cell(kind: str, args: list[str], device: str, threads: int) -> dict:
    """One measurement in a fresh process (its own peak memory, no warm caches)."""
    cmd = [sys.executable, __file__, "--cell", kind, *args, "--device", device,
           "--threads", str(threads)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def cell_main(kind: str, args: list[str], device: str, steps: int) -> dict:
    if kind == "peak":
        out = {"fp32_gflops": matmul_peak(torch.float32, device)}
        out["bf16_gflops"] = matmul_peak(torch.bfloat16, device)
    elif kind == "ours":
        preset, variant, batch = args[0], args[1], int(args[2])
        out = time_ours(preset, variant, steps, batch, device)
    elif kind == "baseline":
        out = time_baseline(args[0], steps, int(args[1]), device)
    elif kind == "flops":
        out = flops_ours(args[0]) | {"baseline_gflop_per_image": flops_baseline(args[0])}
    elif kind == "shares":
        out = data_and_anchor_shares(args[0], int(args[1]), float(args[2]))
    elif kind == "profile":
        out = {"profile": profile_step(args[0], args[1], int(args[2]))}
    else:
        raise SystemExit(f"unknown cell kind {kind!r}")
    return out | {"peak_memory_mb": peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="quickstart,quickstart_dyga,shapes3d,celeba")
    parser.add_argument("--variants", default="fp32,bf16,bf16+channels_last,fp32+channels_last")
    parser.add_argument(
        "--batch-sizes", default="", help="e.g. 32,128; default: the preset's and 32"
    )
    parser.add_argument("--steps", type=int, default=4, help="timed steps after 2 warm-up steps")
    parser.add_argument("--compile", default="", help="presets that also get bf16+compile")
    parser.add_argument("--profile", default="shapes3d", help="preset to profile ('' for none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cell:
        print(json.dumps(cell_main(args.cell[0], args.cell[1:], args.device, args.steps)))
        return

    run = lambda kind, *a: run_cell(kind, [str(x) for x in a], args.device, args.threads)  # noqa: E731
    machine = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "cpu_flags": cpu_flags(), "device": args.device, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }  # fmt: skip
    machine |= run("peak")
    print(f"machine: {machine}")
    rows, presets = [], {}
    for preset in args.presets.split(","):
        variants = args.variants.split(",")
        variants += ["bf16+compile"] if preset in args.compile.split(",") else []
        flops = run("flops", preset)
        sizes = [int(b) for b in args.batch_sizes.split(",") if b]
        sizes = sizes or sorted({load_config_batch(preset), 32}, reverse=True)
        for batch in sizes:
            base = run("baseline", preset, batch)
            gflop = flops["baseline_gflop_per_image"]
            rows.append(row(preset, BASELINE, batch, base, gflop, machine, 1.0))
            for variant in variants:
                cell = run("ours", preset, variant, batch)
                ratio = cell["images_per_s"] / base["images_per_s"] if "error" not in cell else None
                rows.append(
                    row(preset, variant, batch, cell, flops["gflop_per_image"], machine, ratio)
                )
            print_rows(rows[-1 - len(variants) :])
        best = fastest(rows, preset)
        shares = run("shares", preset, best["batch_size"], best["step_s"])
        presets[preset] = {k: v for k, v in flops.items() if k != "peak_memory_mb"}
        presets[preset] |= {"fastest_variant": best["variant"], "fastest_batch": best["batch_size"]}
        presets[preset] |= {k: round(v, 4) for k, v in shares.items() if k != "peak_memory_mb"}
        print(f"{preset}: {presets[preset]}", flush=True)
    profile = []
    if args.profile and args.device == "cpu":
        eager = [r for r in rows if "compile" not in r["variant"]]  # the profile runs eagerly
        for variant in ("fp32", fastest(eager, args.profile)["variant"]):
            prof = run("profile", args.profile, variant, 32)
            profile.append({"preset": args.profile, "variant": variant, "batch_size": 32,
                            "categories": prof.get("profile", prof)})  # fmt: skip
            print_profile(profile[-1])
    out = args.out or Path(__file__).parent / "results" / f"train_throughput_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "presets": presets, "rows": rows, "profile": profile}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def fastest(rows: list[dict], preset: str) -> dict:
    """The quickest of our variants for a preset (any batch size)."""
    ours = [
        r for r in rows if r["preset"] == preset and r["variant"] in VARIANTS and "error" not in r
    ]
    return max(ours, key=lambda r: r["images_per_s"])


def row(preset, variant, batch, cell, gflop, machine, ratio) -> dict:
    if "error" in cell:
        return {"preset": preset, "variant": variant, "batch_size": batch, "error": cell["error"]}
    peak = machine["bf16_gflops"] if variant.startswith("bf16") else machine["fp32_gflops"]
    achieved = cell["images_per_s"] * gflop
    return {
        "preset": preset, "variant": variant, "batch_size": batch,
        "images_per_s": round(cell["images_per_s"], 1),
        "step_s": round(batch / cell["images_per_s"], 3),
        "vs_baseline": None if ratio is None else round(ratio, 2),
        "gflop_per_image": round(gflop, 2), "achieved_gflops": round(achieved, 1),
        "share_of_peak": round(achieved / peak, 3),
        "peak_memory_mb": round(cell["peak_memory_mb"]),
    }  # fmt: skip


HEADER = ["preset", "variant", "batch_size", "images_per_s", "vs_baseline", "gflop_per_image",
          "achieved_gflops", "share_of_peak", "peak_memory_mb"]  # fmt: skip


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(" | ".join(str(r.get(h, r.get("error", "-"))) for h in HEADER), flush=True)


def print_profile(p: dict) -> None:
    print(f"profile: {p['preset']} {p['variant']} batch {p['batch_size']}")
    for c in p["categories"] if isinstance(p["categories"], list) else []:
        print(f"  {c['category']:<26} {c['ms']:>8.1f} ms {100 * c['share']:5.1f}%  {c['top_ops']}")


if __name__ == "__main__":
    main()
