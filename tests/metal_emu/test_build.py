"""Compilation: caching by content hash, translation details, compile errors."""
import numpy as np
import pytest

import metal_emu
from metal_emu import frontend
from metal_emu.conftest import KERNELS


def test_second_compile_is_a_cache_hit(tmp_path):
    src = tmp_path / "k.metal"
    src.write_text("#include <metal_stdlib>\nusing namespace metal;\n"
                   "kernel void fill(device float* o [[buffer(0)]], uint i [[thread_position_in_grid]]) "
                   "{ o[i] = VALUE; }\n")
    a = metal_emu.compile([src], defines={"VALUE": "1.5f"})
    built = a.path.stat().st_mtime_ns
    b = metal_emu.compile([src], defines={"VALUE": "1.5f"})
    assert b is a and a.path.stat().st_mtime_ns == built  # same library, not rebuilt
    c = metal_emu.compile([src], defines={"VALUE": "2.5f"})
    assert c.path != a.path
    out = np.zeros(5, np.float32)
    c.dispatch("fill", grid=(5,), threadgroup=(4,), buffers={0: out})
    np.testing.assert_array_equal(out, 2.5)


def test_compile_error_names_the_file_and_line(tmp_path):
    src = tmp_path / "bad.metal"
    src.write_text("#include <metal_stdlib>\nusing namespace metal;\n"
                   "kernel void f(device float* o [[buffer(0)]], uint i [[thread_position_in_grid]]) {\n"
                   "  o[i] = undefined_name;\n}\n")
    with pytest.raises(metal_emu.CompileError, match="bad.metal:4"):
        metal_emu.compile([src])


def test_missing_source_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such source"):
        metal_emu.compile([tmp_path / "absent.metal"])


def test_rewrite_of_address_spaces_keeps_lines():
    src = ('# 1 "k.metal"\n'
           "constant bool flag [[function_constant(3)]];\n"
           "constant float table[2] = {1.0h, 2.0f};\n"
           "kernel void k(const device float* a [[buffer(0)]], device half4* b [[buffer(1)]],\n"
           "  constant Args& args [[buffer(2)]], threadgroup float* t [[threadgroup(0)]],\n"
           "  uint2 p [[thread_position_in_grid]]) {\n"
           "  threadgroup float tile[4][8];\n"
           "  auto q = reinterpret_cast<const device uint4*>(a);\n"
           "}\n"
           "template <typename T> [[kernel]] void g(device T& r [[buffer(0)]]) {}\n"
           'template [[host_name("g_f")]] [[kernel]] decltype(g<float>) g<float>;\n')
    unit = frontend.rewrite(src)
    text = unit.text
    assert text.count("\n") == src.count("\n")
    assert "static bool flag" in text and unit.function_constants == [("flag", 3)]
    assert "const float table[2] = {((half)1.0), 2.0f}" in text
    assert "::metal_emu::dptr<const float> a" in text and "::metal_emu::dptr<half4> b" in text
    assert "const Args& args" in text and "float* t" in text
    assert 'auto& tile = ::metal_emu::tg_var<float[4][8]>' in text
    assert "static_cast< ::metal_emu::dptr<const uint4>>(a)" in text
    assert "::metal_emu::dref<T> r" in text and "host_name" not in text
    [k, g] = unit.kernels
    assert [(p.name, p.kind, p.index) for p in k.params[:4]] == [
        ("a", "buffer", 0), ("b", "buffer", 1), ("args", "buffer", 2), ("t", "threadgroup", 0)]
    assert k.params[4].builtin == "thread_position_in_grid" and not k.is_template and g.is_template
    assert [(i.host_name, i.callee) for i in unit.instances] == [("g_f", "g<float>")]


def test_rewrite_of_mlx_idioms():
    src = ('# 1 "k.metal"\n'
           "struct C {\n"
           "  C() thread : v(0) {}\n"
           "  C() threadgroup : v(0) {}\n"
           "  void f() const thread {}\n"
           "  void f() const constant {}\n"
           "  float v;\n"
           "};\n"
           "template <typename T> struct E {};\n"
           "template <typename T> struct E<thread T*> { using t = T; };\n"
           "template <typename T> struct E<threadgroup T*> { using t = T; };\n"
           "kernel void k(const device float* a, device float* b, uint i [[thread_position_in_grid]]) {\n"
           "  b[i] = *((const device float4*)(&a[4 * i])).x;\n"
           "}\n")
    unit = frontend.rewrite(src)
    text = unit.text
    assert text.count("\n") == src.count("\n")
    assert text.count("C()") == 1 and text.count("void f()") == 1  # address-space twins collapse
    assert "".join(text.split()).count("structE<T*>") == 1
    assert "(( ::metal_emu::dptr<const float4>)((a + (4 * i))))" in text  # &a[j] keeps the buffer
    [k] = unit.kernels
    assert [(p.name, p.kind, p.index) for p in k.params] == [
        ("a", "buffer", 0), ("b", "buffer", 1), ("i", "builtin", 0)]  # MSL numbers bare buffers


def test_all_emulator_test_kernels_compile():
    for src in KERNELS.glob("*.metal"):
        assert metal_emu.compile([src]).kernels


def test_a_kernel_name_defined_twice_is_a_compile_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.metal").write_text(
            "#include <metal_stdlib>\nkernel void twice(device float* o [[buffer(0)]]) { o[0] = 1.0f; }\n")
    with pytest.raises(metal_emu.CompileError, match="'twice' is defined twice"):
        metal_emu.compile([tmp_path / "a.metal", tmp_path / "b.metal"])
