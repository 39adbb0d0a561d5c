"""Generates the launcher appended to each rewritten unit: one entry function per host-visible
kernel that binds every parameter from its attribute, plus the registration tables."""
from __future__ import annotations

from .errors import CompileError
from .frontend import KernelDef, Unit


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _entry(idx: int, callee: str, k: KernelDef) -> str:
    args = []
    for i, p in enumerate(k.params):
        t = f"::metal_emu::arg_t<F, {i}>"
        if p.kind == "buffer":
            args.append(f"::metal_emu::bind_buffer<{t}>(L, {p.index}, {str(p.optional).lower()}, {_c_string(p.name)})")
        elif p.kind == "threadgroup":
            args.append(f"::metal_emu::bind_threadgroup<{t}>(L, {p.index}, {_c_string(p.name)})")
        else:
            args.append(f"::metal_emu::bind_builtin<{t}>(L, ::metal_emu::B_{p.builtin})")
    body = ",\n      ".join(args)
    return (f"static void metal_emu_entry_{idx}(::metal_emu::Lane* L) {{\n"
            f"  using F = decltype(&{callee});\n"
            f"  (void)L;\n"
            f"  {callee}(\n      {body});\n}}\n")


def entries(unit: Unit) -> list[tuple[str, str, KernelDef]]:
    """(host name, callee expression, definition) for every host-visible kernel of a unit."""
    by_name: dict[str, KernelDef] = {}
    for k in unit.kernels:
        by_name.setdefault(k.qualified, k)
        by_name.setdefault(k.name, k)
    found: list[tuple[str, str, KernelDef]] = []
    for k in unit.kernels:
        if not k.is_template:
            found.append((k.host_name or k.name, k.qualified, k))
    for inst in unit.instances:
        base = inst.callee.split("<", 1)[0].strip()
        k = by_name.get(base.lstrip(":")) or by_name.get(base.split("::")[-1])
        if k is None:
            raise CompileError(f"{inst.file}:{inst.line}: instantiated kernel '{base}' has no [[kernel]] definition")
        found.append((inst.host_name, inst.callee, k))
    return found


def launcher(unit: Unit, part: int = 0, parts: int = 1) -> str:
    """C++ source for the kernels of one unit (every `parts`-th one, starting at `part`, so that a
    unit with many instantiations compiles as several objects in parallel), to be appended to
    its rewritten text."""
    entries = [e for i, e in enumerate(globals()["entries"](unit)) if i % parts == part]
    out = ['\n# 1 "<metal_emu launcher>"\n']
    for i, (_, callee, k) in enumerate(entries):
        out.append(_entry(i, callee, k))
    table = ",\n  ".join(
        f"{{{_c_string(h)}, &metal_emu_entry_{i}, {k.max_threads}u, {_c_string(k.file)}, {k.line}}}"
        for i, (h, _, k) in enumerate(entries))
    out.append(f"static const ::metal_emu::KernelEntry metal_emu_kernels_[] = {{\n  {table or '{}'}\n}};\n")
    fcs = ",\n  ".join(
        f"{{{idx}, {_c_string(name)}, (void*)&{name}, int(sizeof({name})), "
        f"::metal_emu::fc_type<std::remove_cv_t<decltype({name})>>()}}"
        for name, idx in unit.function_constants)
    out.append(f"static const ::metal_emu::FcEntry metal_emu_fcs_[] = {{\n  {fcs or '{}'}\n}};\n")
    out.append(f"static ::metal_emu::Registrar metal_emu_registrar_(metal_emu_kernels_, {len(entries)}, "
               f"metal_emu_fcs_, {len(unit.function_constants)});\n")
    return "".join(out)
