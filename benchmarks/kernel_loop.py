"""The kernel developer's loop: `vlbert-fast bench kernels --op roi_align --check`.

1. Check: on fresh random inputs (a new seed each run, printed so a failure can be repeated with --seed), every
   backend of the op in `vlbert_fast.ops.REGISTRY` that can run them (the op's `not_supported_reasons` says why the
   others cannot) is compared with a gold result: the op's reference on the inputs cast to fp64. The forward output
   and the gradient of every input that takes one are checked. The error measure is max |x - gold| / max |gold|;
   a backend passes when its error is at most twice that of the reference run in the inputs' own precision (STYLE.md
   rule 6) plus 4 units of rounding (eps) of the output's dtype (the slack for a different but equally good order of
   summation).
2. Sweep: the op's bench module runs its sizes once per launch configuration (`BLOCK_CONFIGS` of the module, or
   the list here), and a short table of median times per provider, size and configuration is printed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vlbert_fast.ops import REGISTRY

from . import registry

SLACK_EPS = 4
"""Units of rounding (torch.finfo(dtype).eps, relative to the largest gold value) a backend may add to twice the
reference's own error: the room a different but equally good order of summation needs."""


@dataclass
class CheckCase:
    op: str
    """Name of the op in vlbert_fast.ops.REGISTRY."""
    label: str
    """Shapes and settings, for the table."""
    args: tuple
    """Positional arguments as the op's dispatcher takes them (what `Op.__call__` passes to each backend)."""
    kwargs: dict = field(default_factory=dict)
    grad_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Name -> a tensor inside `args` (requires_grad) whose gradient is checked."""


# ---------------------------------------------------------------------------------------------------------------------
# cases of the ops that exist; bench modules may bring their own (`check_cases`)


def _embedding_cases(device: torch.device, smoke: bool, seed: int) -> list[CheckCase]:
    from .bench_embedding import make_weights, packed_stream

    sizes = [(40, 24, 97)] if smoke else [(997, 768, 30522), (4099, 1024, 30522)]
    dtypes = [torch.float32] if device.type == "cpu" else [torch.float32, torch.bfloat16]
    cases = []
    for (n, hidden, vocab), dtype in ((s, d) for s in sizes for d in dtypes):
        stream = packed_stream(n, vocab, seed=seed, device=str(device))
        weights = make_weights(hidden, vocab, dtype, str(device), seed=seed + 1)
        g = torch.Generator().manual_seed(seed + 2)
        visual = torch.randn(stream["region_masked"].shape[0], hidden, generator=g).to(device, dtype)
        visual.requires_grad_(True)
        names = ("word_ids", "position_ids", "token_type_ids", "token_kind", "visual_index")
        for deterministic in (False, True):
            args = (*(stream[k] for k in names), visual, stream["region_masked"], weights)
            args += (1e-12, 0.1, seed, 0, deterministic)  # eps, dropout_p, seed, offset, deterministic
            grads = {"visual": visual, **{f"weights.{k}": v for k, v in weights.tensors().items()}}
            label = f"N={n} H={hidden} {str(dtype)[6:]} dropout=0.1 deterministic={deterministic}"
            cases.append(CheckCase("fused_embedding", label, args, {}, grads))
    return cases


def _geometry_cases(device: torch.device, smoke: bool, seed: int) -> list[CheckCase]:
    from .bench_geometry import random_boxes

    sizes = [(7, 64)] if smoke else [(1, 2048), (4099, 2048)]
    cases = []
    for k, dim in sizes:
        boxes, size = random_boxes(k, device, seed=seed)
        boxes.requires_grad_(True)
        args = (boxes, size, dim, 1000.0, 100.0, None)  # boxes, image_size, dim, wave_length, scale, out
        cases.append(CheckCase("box_geometry_embedding", f"K={k} dim={dim} float32", args, {}, {"boxes": boxes}))
    return cases


def _roi_align_cases(device: torch.device, smoke: bool, seed: int) -> list[CheckCase]:
    # boxes anywhere in and partly beyond a 16x-subsampled image, as RoIAlign meets them after a detector
    shapes = [(2, 5, 6, 7, 3, (2, 2))] if smoke else [(2, 1024, 38, 50, 97, (14, 14)), (1, 37, 13, 17, 5, (7, 7))]
    dtypes = [torch.float32] if device.type == "cpu" else [torch.float32, torch.bfloat16]
    cases = []
    g = torch.Generator().manual_seed(seed)
    for (n, c, h, w, k, out_size), dtype in ((s, d) for s in shapes for d in dtypes):
        features = torch.randn(n, c, h, w, generator=g).to(device, dtype).requires_grad_(True)
        size = torch.tensor([16.0 * w, 16.0 * h])
        xy = torch.rand(k, 2, generator=g) * size * 1.1 - 0.05 * size
        wh = torch.rand(k, 2, generator=g) * size / 2
        batch = torch.randint(0, n, (k, 1), generator=g).float()
        rois = torch.cat([batch, xy, xy + wh], dim=1).to(device)
        variants = ((True, True),) if smoke else ((False, False), (True, True))  # smoke: the one that tests more
        for aligned, deterministic in variants:
            args = (features, rois, out_size, 1 / 16, 1 if not aligned else 0, aligned, deterministic)
            label = f"N={n} C={c} {h}x{w} K={k} {str(dtype)[6:]} aligned={aligned} deterministic={deterministic}"
            cases.append(CheckCase("roi_align", label, args, {}, {"features": features}))
    return cases


CASES: dict[str, Callable[[torch.device, bool, int], list[CheckCase]]] = {
    "fused_embedding": _embedding_cases,
    "box_geometry_embedding": _geometry_cases,
    "roi_align": _roi_align_cases,
}

BLOCK_CONFIGS: dict[str, list[tuple[str, dict]]] = {
    "roi_align": [(f"MAX_BLOCK_C={c}", {"vlbert_fast.kernels.roi_align.MAX_BLOCK_C": c}) for c in (64, 128, 256)],
}


def cases_for(op: str, device: torch.device, smoke: bool, seed: int) -> list[CheckCase]:
    """The op's bench module's check cases, else the ones here, else none."""
    for entry in registry.modules_for_op(op):
        if hasattr(entry.module, "check_cases"):
            cases = [c for c in entry.module.check_cases(device, smoke, seed) if c.op == op]
            if cases:
                return cases
    return CASES[op](device, smoke, seed) if op in CASES else []


def block_configs_for(op: str) -> list[tuple[str, dict]]:
    for entry in registry.modules_for_op(op):
        configs = getattr(entry.module, "BLOCK_CONFIGS", {}).get(op)
        if configs:
            return configs
    return BLOCK_CONFIGS.get(op, [])


# ---------------------------------------------------------------------------------------------------------------------
# the check


def _cast(obj, dtype: torch.dtype, leaves: dict[int, torch.Tensor]):
    """`obj` with every floating tensor cast to `dtype` (fresh leaves, requires_grad kept; `leaves` maps the id of
    each original tensor to its copy), through tuples, lists and dataclasses such as EmbeddingWeights."""
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            return obj
        copy = obj.detach().to(dtype).requires_grad_(obj.requires_grad)
        leaves[id(obj)] = copy
        return copy
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype, leaves) for o in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: _cast(getattr(obj, f.name), dtype, leaves) for f in dataclasses.fields(obj)}
        )
    return obj


def _relative_error(x: torch.Tensor, gold: torch.Tensor) -> float:
    if gold.numel() == 0:
        return 0.0
    scale = gold.detach().abs().max().clamp(min=1e-30)
    return float((x.detach().double() - gold.detach()).abs().max() / scale)


def _outputs(run, args, kwargs, grad_inputs: list[torch.Tensor], grad_out_gold: torch.Tensor | None):
    out = run(*args, **kwargs)
    grads = []
    if grad_inputs and out.requires_grad:
        got = torch.autograd.grad(out, grad_inputs, grad_out_gold.to(out.dtype), allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(got, grad_inputs, strict=True)]
    return out.detach(), grads


@dataclass
class CheckResult:
    case: str
    backend: str
    forward: float | None = None
    forward_bound: float | None = None
    grad: float | None = None
    grad_name: str = ""
    grad_bound: float | None = None
    skipped: str = ""

    @property
    def ok(self) -> bool:
        if self.skipped:
            return True
        return self.forward <= self.forward_bound and (self.grad is None or self.grad <= self.grad_bound)


def check_case(case: CheckCase) -> list[CheckResult]:
    op = REGISTRY[case.op]
    names = list(case.grad_inputs)
    leaves: dict[int, torch.Tensor] = {}
    gold_args = _cast(case.args, torch.float64, leaves)
    gold_inputs = [leaves[id(case.grad_inputs[n])] for n in names]
    reference = op.backends["reference"].run
    gold = reference(*gold_args, **case.kwargs).double()
    grad_out = torch.randn(gold.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grad_out = grad_out.to(gold.device)
    gold_grads = []
    if names and gold.requires_grad:
        gold_grads = torch.autograd.grad(gold, gold_inputs, grad_out, allow_unused=True)
        gold_grads = [torch.zeros_like(t) if g is None else g for g, t in zip(gold_grads, gold_inputs, strict=True)]
    inputs = [case.grad_inputs[n] for n in names]
    ref_out, ref_grads = _outputs(reference, case.args, case.kwargs, inputs, grad_out)
    slack = SLACK_EPS * torch.finfo(ref_out.dtype).eps if ref_out.is_floating_point() else 0.0
    forward_bound = 2 * _relative_error(ref_out, gold) + slack
    grad_bounds = [
        2 * _relative_error(r, g) + SLACK_EPS * torch.finfo(r.dtype).eps
        for r, g in zip(ref_grads, gold_grads, strict=True)
    ]
    results = []
    for name, why in op.not_supported_reasons(*case.args, **case.kwargs).items():
        result = CheckResult(case.label, name)
        if why:
            result.skipped = "; ".join(why)
        else:
            out, grads = _outputs(op.backends[name].run, case.args, case.kwargs, inputs, grad_out)
            result.forward, result.forward_bound = _relative_error(out, gold), forward_bound
            if grads:  # the gradient nearest its bound (or furthest past it)
                errors = [(_relative_error(g, gold_g), bound, n) for g, gold_g, bound, n in
                          zip(grads, gold_grads, grad_bounds, names, strict=True)]  # fmt: skip
                result.grad, result.grad_bound, result.grad_name = max(errors, key=lambda e: e[0] / e[1])
        results.append(result)
    return results


def print_check(op: str, seed: int, results: list[CheckResult]) -> None:
    print(f"check {op}: every backend against the fp64 reference (seed {seed}; --seed {seed} repeats these inputs)")
    print(f"  {'case':<58} {'backend':<10} {'forward':>9} {'bound':>9} {'gradient (worst)':>26} {'bound':>9}  result")
    for r in results:
        if r.skipped:
            print(f"  {r.case:<58} {r.backend:<10} skipped: {r.skipped}")
            continue
        grad = "-" if r.grad is None else f"{r.grad:.2e} ({r.grad_name})"
        bound = "-" if r.grad_bound is None else f"{r.grad_bound:.2e}"
        verdict = "ok" if r.ok else "FAIL"
        print(
            f"  {r.case:<58} {r.backend:<10} {r.forward:9.2e} {r.forward_bound:9.2e} {grad:>26} {bound:>9}  {verdict}"
        )


def check(op: str, device: torch.device, smoke: bool, seed: int) -> bool:
    """Runs and prints the check of `op`; True when every backend that ran passed."""
    if op not in REGISTRY:
        print(f"check {op}: not an op of vlbert_fast.ops (known: {', '.join(sorted(REGISTRY))}); nothing to check")
        return True
    cases = cases_for(op, device, smoke, seed)
    if not cases:
        print(f"check {op}: no check inputs (give its bench module a check_cases(device, smoke, seed))")
        return True
    results = [r for case in cases for r in check_case(case)]
    print_check(op, seed, results)
    return all(r.ok for r in results)


# ---------------------------------------------------------------------------------------------------------------------
# the sweep table


def print_sweep(rows: list[dict[str, str]], op: str) -> None:
    """Median time per (configuration, size, provider) and mode, from the rows the sweep wrote."""
    timed = [r for r in rows if r["op"] == op and r["metric"] == "time"]
    if not timed:
        print(f"sweep {op}: no timings were written")
        return
    modes = [m for m in ("forward", "backward", "full") if any(r["mode"] == m for r in timed)]
    table: dict[tuple, dict[str, str]] = {}
    for r in timed:
        block = json.loads(r["config_json"]).get("block_config", "default")
        table.setdefault((block, r["x_name"], r["x_value"], r["provider"]), {})[r["mode"]] = r["p50"]
    print(f"sweep {op}: median ms")
    print(f"  {'launch config':<22} {'size':<16} {'provider':<22}" + "".join(f"{m:>10}" for m in modes))
    for (block, x_name, x_value, provider), times in table.items():
        cells = "".join(f"{float(times[m]):10.4f}" if m in times else f"{'-':>10}" for m in modes)
        print(f"  {block:<22} {x_name + '=' + x_value:<16} {provider:<22}{cells}")
