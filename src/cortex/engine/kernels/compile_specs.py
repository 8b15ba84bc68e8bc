"""The sm_90 compile harness: every Triton kernel, compiled for an H100/H200 at the models' shapes.

Triton compiles for a GPU it does not have: ``triton.compile(ASTSource(fn, signature, constexprs),
target=GPUTarget("cuda", 90, 32))`` produces the sm_90 cubin on a machine with no GPU. The interpreter
checks a kernel's numerics, not what real hardware refuses (too much shared memory, an illegal layout);
compiling it does, so CI compiles every kernel this way and checks its shared memory against the H200's
limit per block (:data:`H200_SHARED_MEMORY_BYTES`).

Registering a kernel: a module of ``cortex.engine.kernels`` defines ``compile_specs(shape: ModelShape)
-> list[CompileSpec]``, building each spec from the same launch builder the op runs with, called on
:func:`meta` tensors at the shape's sizes (``CompileSpec.of(name, launch)``). :func:`all_compile_specs`
finds every such module; nothing else needs to change.

``python -m cortex.engine.kernels.compile_specs [--json]`` compiles them all and prints one line per
spec (the CI test runs it in a subprocess, away from the interpreted kernels of the other tests).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cortex.engine.kernels.triton_import import HAS_TRITON, tl

if TYPE_CHECKING:
    from cortex.engine.kernels.launch import KernelLaunch

# triton.language as it was when cortex's kernels were defined (see _restore_language)
_LANGUAGE = [(space, dict(vars(space))) for space in (tl, tl.core, tl.math, tl.tensor)] if HAS_TRITON else []

H200_SHARED_MEMORY_BYTES = 232_448  # 227 KiB: the most shared memory one block may use on sm_90
SM90_TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The sizes of one published model that decide its kernels' shapes (../shared/reference/qwen3_5.md)."""

    name: str
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int
    linear_num_k_heads: int
    linear_num_v_heads: int
    linear_head_k_dim: int
    linear_head_v_dim: int
    conv_kernel: int
    intermediate_size: int  # dense MLP (0 for MoE models)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    dtype: torch.dtype = torch.bfloat16

    @property
    def conv_dim(self) -> int:
        return (
            2 * self.linear_num_k_heads * self.linear_head_k_dim
            + self.linear_num_v_heads * self.linear_head_v_dim
        )


def _qwen3_5(
    name: str,
    hidden: int,
    heads: int,
    kv_heads: int,
    v_heads: int,
    ffn: int,
    *,
    experts: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> ModelShape:
    # experts: (num_experts, num_experts_per_tok, moe_intermediate_size, shared_expert_intermediate_size)
    return ModelShape(
        name=name,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=256,
        rotary_dim=64,
        linear_num_k_heads=16,
        linear_num_v_heads=v_heads,
        linear_head_k_dim=128,
        linear_head_v_dim=128,
        conv_kernel=4,
        intermediate_size=ffn,
        num_experts=experts[0],
        num_experts_per_tok=experts[1],
        moe_intermediate_size=experts[2],
        shared_expert_intermediate_size=experts[3],
    )


MODEL_SHAPES: tuple[ModelShape, ...] = (
    _qwen3_5("qwen3.5-0.8b", 1024, 8, 2, 16, 3584),
    _qwen3_5("qwen3.5-9b", 4096, 16, 4, 32, 12288),
    _qwen3_5("qwen3.5-27b", 5120, 24, 4, 48, 17408),
    _qwen3_5("qwen3.6-35b-a3b", 2048, 16, 2, 32, 0, experts=(256, 8, 512, 512)),
)

# Token counts a step may have: a batch-1 decode, a batch-32 decode, a long prefill chunk. Launch
# builders that pick tile sizes from the token count are compiled at each.
STEP_NUM_TOKENS = (1, 32, 4096)


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` on the meta device (sizes and strides, no memory) for launch builders."""
    return torch.empty(shape, dtype=dtype, device="meta")


@dataclass(frozen=True, slots=True)
class CompileSpec:
    """One kernel at one set of constexprs: what ``triton.compile`` needs."""

    name: str
    kernel: Any
    signature: Mapping[str, str]
    constexprs: Mapping[str, Any]
    num_warps: int
    num_stages: int
    # the arguments Triton's JIT would mark 16-divisible at launch (every tensor, whose storage torch
    # allocates aligned, and every int that is a multiple of 16): the binary the GPU runs assumes it
    divisible: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, launch: KernelLaunch) -> CompileSpec:
        return cls(
            name=name,
            kernel=launch.kernel,
            signature=launch.signature(),
            constexprs=dict(launch.constexprs),
            num_warps=launch.num_warps,
            num_stages=launch.num_stages,
            divisible=tuple(
                name
                for name, value in launch.args.items()
                if isinstance(value, torch.Tensor)
                or (isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0)
            ),
        )

    @property
    def key(self) -> tuple[object, ...]:
        """Specs with equal keys compile to the same binary."""
        return (
            self.name,
            tuple(sorted(self.signature.items())),
            tuple(sorted(self.constexprs.items())),
            self.num_warps,
            self.num_stages,
            self.divisible,
        )


@dataclass(frozen=True, slots=True)
class LabelledSpec:
    spec: CompileSpec
    models: tuple[str, ...]  # the model shapes that launch it

    @property
    def label(self) -> str:
        constexprs = ",".join(f"{k}={v}" for k, v in sorted(self.spec.constexprs.items()))
        return f"{self.spec.name}[{constexprs}]"


@dataclass(frozen=True, slots=True)
class CompiledKernel:
    shared_bytes: int
    num_warps: int
    ptx: str


def kernel_modules() -> Iterator[Any]:
    """Every module of ``cortex.engine.kernels`` that declares ``compile_specs``."""
    package = importlib.import_module("cortex.engine.kernels")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cortex.engine.kernels.{info.name}")
        if callable(getattr(module, "compile_specs", None)):
            yield module


def all_compile_specs(shapes: tuple[ModelShape, ...] = MODEL_SHAPES) -> list[LabelledSpec]:
    """Every registered kernel at every model shape, identical specs merged (labelled with their models)."""
    merged: dict[tuple[object, ...], tuple[CompileSpec, list[str]]] = {}
    for module in kernel_modules():
        for shape in shapes:
            for spec in module.compile_specs(shape):
                merged.setdefault(spec.key, (spec, []))[1].append(shape.name)
    return [LabelledSpec(spec, tuple(dict.fromkeys(models))) for spec, models in merged.values()]


def compile_sm90(spec: CompileSpec) -> CompiledKernel:
    """Compile ``spec`` for sm_90 (no GPU needed). Raises whatever Triton raises when it cannot."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _restore_language()
    kernel = _compilable(spec.kernel)
    names = list(kernel.arg_names)
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in spec.divisible}
    compiled = triton.compile(
        ASTSource(kernel, dict(spec.signature), dict(spec.constexprs), attrs=attrs),
        target=GPUTarget(*SM90_TARGET),
        options={"num_warps": spec.num_warps, "num_stages": spec.num_stages, "enable_fp_fusion": True},
    )
    return CompiledKernel(
        shared_bytes=int(compiled.metadata.shared),
        num_warps=int(compiled.metadata.num_warps),
        ptx=str(compiled.asm["ptx"]),
    )


def _compilable(kernel: Any, done: dict[int, Any] | None = None) -> Any:
    """``kernel`` as a JITFunction ``triton.compile`` accepts.

    Under ``TRITON_INTERPRET=1`` every jit function is an InterpretedFunction: the kernel, the jit
    helpers it calls, and triton.language's own jit-implemented functions (``tl.sum``, ``tl.zeros``,
    ``tl.cdiv``...). Each is rebuilt as a JITFunction over a copy of its module globals in which the
    helpers it names, and the jit functions of the ``triton.language`` modules it names, are rebuilt the
    same way. Nothing outside the copies changes.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if not isinstance(kernel, InterpretedFunction):
        return kernel
    done = {} if done is None else done
    if id(kernel) in done:
        return done[id(kernel)]
    fn = kernel.fn
    scope = dict(fn.__globals__)
    clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__
    clone.__module__ = fn.__module__
    clone.__annotations__ = fn.__annotations__
    done[id(kernel)] = compiled = JITFunction(clone)
    for name in fn.__code__.co_names:
        value = scope.get(name)
        if isinstance(value, InterpretedFunction):
            scope[name] = _compilable(value, done)
        elif isinstance(value, types.ModuleType) and value.__name__.startswith("triton.language"):
            module = types.ModuleType(value.__name__)
            module.__dict__.update(value.__dict__)
            for attr, member in value.__dict__.items():
                if isinstance(member, InterpretedFunction):
                    setattr(module, attr, _compilable(member, done))
            scope[name] = module
    return compiled


def _restore_language() -> None:
    """Undo what Triton's interpreter leaves patched in ``triton.language``.

    Triton 3.9's interpreter patches the language for every nested jit call (such as ``tl.zeros`` or
    ``tl.sum``, which are jit functions) and never undoes the patches of ``triton.language.core``, so a
    process that has interpreted such a kernel would compile with the interpreter's builder. The
    harness puts the language back as it was when the kernels were defined.
    """
    for space, members in _LANGUAGE:
        for name, member in members.items():
            if vars(space).get(name) is not member:
                setattr(space, name, member)


def main(argv: list[str] | None = None) -> int:
    """Compile every spec; print ``label  models  shared bytes`` (or JSON lines). 1 if any failed or
    exceeded the H200's shared memory."""
    parser = argparse.ArgumentParser(description="compile every cortex Triton kernel for sm_90")
    parser.add_argument("--json", action="store_true", help="one JSON object per spec")
    args = parser.parse_args(argv)
    failed = False
    for labelled in all_compile_specs():
        record: dict[str, object] = {"label": labelled.label, "models": list(labelled.models)}
        try:
            compiled = compile_sm90(labelled.spec)
        except Exception as exc:  # report every failure, not just the first
            record["error"] = f"{type(exc).__name__}: {exc}"
            failed = True
        else:
            record.update(shared_bytes=compiled.shared_bytes, num_warps=compiled.num_warps)
            record["sm_90"] = ".target sm_90" in compiled.ptx
            failed |= compiled.shared_bytes > H200_SHARED_MEMORY_BYTES
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            outcome = record.get("error", f"{record.get('shared_bytes')} B shared")
            print(f"{labelled.label:<100} {','.join(labelled.models):<40} {outcome}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
