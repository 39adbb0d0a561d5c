"""Front end: rewrites preprocessed Metal source into C++ for the shim and finds the kernels.

Works on tokens of the preprocessed text, only inside the user's files (line markers tell which):
- `device T*` / `constant T*` become `::metal_emu::dptr<T>` (bounds-checked, counted pointers),
  non-const `device T&` becomes `::metal_emu::dref<T>`, `constant T&` becomes `const T&`;
- `threadgroup T x[N];` becomes a reference to per-threadgroup storage (`tg_var`);
- `thread`/`threadgroup` on pointers and references disappear; `constant` on values becomes
  `const` (or `constexpr` inside a class); function constants become plain globals;
- `kernel` before `void` disappears; `template [[host_name(..)]] [[kernel]] ...;` instantiations are
  removed and recorded, so the launcher instantiates the kernel by calling it;
- half literals (`1.0h`) become `((half)1.0)`.
Newlines are preserved, so compiler messages and std::source_location keep the original lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import CompileError

_TOKEN = re.compile(
    r"""(?P<marker>^\#[ \t]*\d+[ \t]+"(?:\\.|[^"\\])*"[^\n]*\n?)
      |(?P<directive>^[ \t]*\#[^\n]*\n?)
      |(?P<ws>[ \t\r\n]+)
      |(?P<str>(?:u8|u|U|L)?"(?:\\.|[^"\\\n])*")
      |(?P<chr>(?:u8|u|U|L)?'(?:\\.|[^'\\\n])+')
      |(?P<num>\.?[0-9](?:[eEpP][+-]|[0-9A-Za-z_.'])*)
      |(?P<id>[A-Za-z_][A-Za-z_0-9]*)
      |(?P<punct>::|->|\.\.\.|<=|>=|==|!=|&&|\|\||\+\+|--|<<=|<<|[-+*/%&|^]=|.)""",
    re.VERBOSE | re.MULTILINE,
)
_MARKER = re.compile(r'#[ \t]*(\d+)[ \t]+"((?:\\.|[^"\\])*)"([ \t\d]*)')
_HALF_LITERAL = re.compile(r"^((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[hH]$")
_ADDRESS_SPACES = {"device", "constant", "threadgroup", "thread"}
_TYPE_WORDS = {"const", "volatile", "typename", "struct", "unsigned", "signed", "long", "short", "int", "char"}

BUILTINS = {
    "thread_position_in_grid", "thread_position_in_threadgroup", "thread_index_in_threadgroup",
    "threadgroup_position_in_grid", "threadgroups_per_grid", "threads_per_threadgroup",
    "dispatch_threads_per_threadgroup", "threads_per_grid", "thread_index_in_simdgroup",
    "threads_per_simdgroup", "simdgroup_index_in_threadgroup", "simdgroups_per_threadgroup",
    "thread_execution_width", "quadgroup_index_in_threadgroup", "thread_index_in_quadgroup",
    "quadgroups_per_threadgroup", "grid_size", "grid_origin",
}
_BUILTIN_ALIASES = {"grid_size": "threads_per_grid"}


@dataclass
class Tok:
    kind: str
    text: str
    file: str = ""
    line: int = 0
    user: bool = False


@dataclass
class Param:
    name: str
    kind: str  # "buffer", "threadgroup" or "builtin"
    index: int = 0
    builtin: str = ""
    optional: bool = False  # guarded by a function constant: may be left unbound


@dataclass
class KernelDef:
    name: str
    qualified: str
    params: list[Param]
    is_template: bool
    host_name: str | None
    max_threads: int
    file: str
    line: int


@dataclass
class Instance:
    host_name: str
    callee: str
    file: str
    line: int


@dataclass
class Unit:
    text: str
    kernels: list[KernelDef] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    function_constants: list[tuple[str, int]] = field(default_factory=list)


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    file, line, user = "", 1, False
    for m in _TOKEN.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind == "marker":
            mm = _MARKER.match(s)
            file, line = mm.group(2), int(mm.group(1))
            flags = mm.group(3).split()
            user = "3" not in flags and not file.startswith("<")
            toks.append(Tok("marker", s, file, line, user))
            continue
        toks.append(Tok(kind, s, file, line, user))
        line += s.count("\n")
    return toks


class _Rewriter:
    def __init__(self, toks: list[Tok]):
        self.t = toks
        self.out: list[str] = [x.text for x in toks]
        self.unit = Unit(text="")
        self.braces: list[tuple[str, str]] = []  # (kind, namespace name)
        self.signatures: list[set[str]] = [set()]  # per open scope: function signatures seen
        self.stmt_start = 0

    # --- token navigation (whitespace and line markers are skipped) -----------------------
    def sig(self, i: int) -> int:
        while i < len(self.t) and self.t[i].kind in ("ws", "marker", "directive"):
            i += 1
        return i

    def prev(self, i: int) -> int:
        i -= 1
        while i >= 0 and self.t[i].kind in ("ws", "marker", "directive"):
            i -= 1
        return i

    def text(self, i: int) -> str:
        return self.t[i].text if 0 <= i < len(self.t) else ""

    def fail(self, i: int, msg: str):
        tok = self.t[min(i, len(self.t) - 1)]
        raise CompileError(f"{tok.file}:{tok.line}: {msg}")

    def replace(self, a: int, b: int, new: str) -> None:
        """Replace tokens a..b inclusive, keeping their newlines so line numbers stay right."""
        nl = sum(self.t[k].text.count("\n") for k in range(a, b + 1))
        for k in range(a, b + 1):
            self.out[k] = ""
        self.out[a] = new + "\n" * nl

    def match_close(self, i: int) -> int:
        """Index of the bracket closing the one at i: (, [, { or a template <."""
        pairs = {"(": ")", "[": "]", "{": "}", "<": ">"}
        o = self.text(i)
        c, depth, k = pairs[o], 0, i
        while k < len(self.t):
            s = self.text(k)
            if s == o:
                depth += 1
            elif s == c:
                depth -= 1
                if depth == 0:
                    return k
            elif o == "<" and s in "({[" and s:
                k = self.match_close(k)
            k += 1
        self.fail(i, f"unbalanced '{o}'")

    def is_attr(self, i: int) -> bool:
        return self.text(i) == "[" and self.text(i + 1) == "["

    def namespace(self) -> list[str]:
        return [n for kind, n in self.braces if kind == "ns" and n]

    # --- the pass --------------------------------------------------------------------------
    def run(self) -> Unit:
        i = 0
        n = len(self.t)
        stmt_start = 0
        while i < n:
            tok = self.t[i]
            if not tok.user or tok.kind in ("ws", "marker", "directive"):  # #pragma lines pass through
                i += 1
                continue
            s = tok.text
            if s == "{":
                brace = self.classify_brace(stmt_start, i)
                if (self.text(self.prev(i)) == ")" or brace[0] == "class") and all(k == "ns" for k, _ in self.braces):
                    # functions and class (template specialisations) at namespace scope
                    key = self.signature_key(stmt_start, i)
                    if key in self.signatures[-1]:  # an address-space twin, now identical: drop it
                        end = self.match_close(i)
                        self.replace(stmt_start, end, "")
                        i = stmt_start = end + 1
                        continue
                    self.signatures[-1].add(key)
                self.braces.append(brace)
                self.signatures.append(set())
                stmt_start = i + 1
            elif s == "}":
                if self.braces:
                    self.braces.pop()
                    self.signatures.pop()
                stmt_start = i + 1
            elif s == ";":
                stmt_start = i + 1
            elif tok.kind == "num":
                m = _HALF_LITERAL.match(s)
                if m:
                    self.out[i] = f"((half){m.group(1)})"
            elif s == "template" and self.text(self.sig(i + 1)) != "<" and self.text(self.prev(i)) in ("", ";", "}", "{"):
                nxt = self.instantiation(i)
                if nxt is not None:
                    i = stmt_start = nxt
                    continue
            elif s == "kernel" and self.text(self.sig(i + 1)) == "void":
                self.out[i] = ""
                self.kernel(i)
            elif self.is_attr(i):
                end = self.match_close(i)
                words = [self.text(k) for k in range(i, end) if self.t[k].kind == "id"]
                if "kernel" in words:
                    self.kernel(i)
                i = end + 1
                continue
            elif s == "&" and self.unary_subscript_address(i):
                pass
            elif s in _ADDRESS_SPACES:
                self.stmt_start = stmt_start
                i = self.address_space(i)
                continue
            i += 1
        self.unit.text = "".join(self.out)
        return self.unit

    def classify_brace(self, a: int, b: int) -> tuple[str, str]:
        words = [self.text(k) for k in range(a, b) if self.t[k].kind == "id"]
        if "namespace" in words:
            k = words.index("namespace")
            return ("ns", words[k + 1] if k + 1 < len(words) else "")
        if any(w in ("struct", "class", "union") for w in words) and "(" not in [self.text(k) for k in range(a, b)]:
            return ("class", "")
        return ("other", "")

    # --- template [[host_name("x")]] [[kernel]] decltype(f<T>) f<T>;  (or  ... void f<T>(...);)
    def instantiation(self, i: int) -> int:
        end = i
        while end < len(self.t) and self.text(end) != ";":
            if self.text(end) in ("(", "[", "{"):
                end = self.match_close(end)
            end += 1
        toks = list(range(i + 1, end))
        words = [self.text(k) for k in toks if self.t[k].kind == "id"]
        if "kernel" not in words:
            return None
        host = None
        for k in toks:
            if self.text(k) == "host_name":
                host = self.text(self.sig(self.sig(k + 1) + 1))
                break
        # the declarator: after decltype(...), or the template-id before the parameter list
        sig_toks = [k for k in toks if self.t[k].kind not in ("ws", "marker", "directive")]
        callee_toks: list[int] = []
        if "decltype" in words:
            d = next(k for k in sig_toks if self.text(k) == "decltype")
            close = self.match_close(self.sig(d + 1))
            callee_toks = [k for k in sig_toks if k > close]
        else:
            j = next(k for k in sig_toks if self.text(k) == "void")
            k = self.sig(j + 1)
            while k < end and self.text(k) != "(":
                if self.text(k) == "<":
                    for q in range(k, self.match_close(k) + 1):
                        callee_toks.append(q)
                    k = self.sig(self.match_close(k) + 1)
                    continue
                callee_toks.append(k)
                k = self.sig(k + 1)
        callee = "".join(self.t[k].text if self.t[k].kind != "ws" else " " for k in range(callee_toks[0], callee_toks[-1] + 1)) if callee_toks else ""
        if not host or not callee:
            self.fail(i, "cannot parse this kernel instantiation")
        host = host.strip('"')
        ns = self.namespace()
        if ns and not callee.startswith("::"):
            callee = "::".join(ns) + "::" + callee
        tok = self.t[i]
        self.unit.instances.append(Instance(host, callee, tok.file, tok.line))
        self.replace(i, end, "")
        return end + 1

    # --- [[kernel]] void name(params) { ---------------------------------------------------
    def kernel(self, i: int) -> None:
        tok = self.t[i]
        host_name, max_threads = None, 0
        k = i
        # scan attribute blocks around the marker for host_name / max_total_threads_per_threadgroup
        while True:
            s = self.text(k)
            if self.is_attr(k):
                close = self.match_close(k)
                for q in range(k, close):
                    w = self.text(q)
                    if w == "host_name":
                        host_name = self.text(self.sig(self.sig(q + 1) + 1)).strip('"')
                    elif w == "max_total_threads_per_threadgroup":
                        max_threads = _int(self.text(self.sig(self.sig(q + 1) + 1)), 0)
                k = self.sig(close + 1)
            elif s == "kernel":
                k = self.sig(k + 1)
            else:
                break
        if self.text(k) != "void":
            return
        name_i = self.sig(k + 1)
        open_i = self.sig(name_i + 1)
        if self.text(open_i) != "(":
            self.fail(name_i, "cannot parse the kernel signature")
        close_i = self.match_close(open_i)
        if self.text(self.sig(close_i + 1)) != "{":
            return  # a declaration
        name = self.text(name_i)
        params = self.params(open_i + 1, close_i, name)
        # a template kernel: `template <...>` right before the attributes
        p = self.prev(i)
        while self.text(p) == "]" and self.text(p - 1) == "]":
            depth, q = 0, p
            while q > 0:
                if self.text(q) == "]":
                    depth += 1
                elif self.text(q) == "[":
                    depth -= 1
                    if depth == 0:
                        break
                q -= 1
            p = self.prev(q)
        is_template = self.text(p) == ">"
        ns = self.namespace()
        qualified = "::".join(ns + [name]) if ns else name
        self.unit.kernels.append(
            KernelDef(name, qualified, params, is_template, host_name, max_threads, tok.file, tok.line))

    def params(self, a: int, b: int, kname: str) -> list[Param]:
        groups, cur, k = [], [], a
        while k < b:
            s = self.text(k)
            if s in ("(", "[", "{", "<"):
                close = self.match_close(k)
                cur.extend(range(k, close + 1))
                k = close + 1
                continue
            if s == ",":
                groups.append(cur)
                cur = []
            elif self.t[k].kind not in ("ws", "marker", "directive"):
                cur.append(k)
            k += 1
        if cur:
            groups.append(cur)
        params = []
        for g in groups:
            sig = [k for k in g if self.t[k].kind not in ("ws", "marker", "directive")]
            at = next((j for j, k in enumerate(sig) if self.is_attr(k)), None)
            if at is None:  # MSL numbers unannotated buffer parameters itself (-1: assigned below)
                params.append(Param(self.text(sig[-1]), "buffer", -1))
                continue
            pname = self.text(sig[at - 1])
            attr = [self.text(k) for k in sig[at + 2:-2]]
            params.append(self._param(pname, attr, g[0], kname))
        used = {p.index for p in params if p.kind == "buffer"}
        nxt = 0
        for p in params:
            if p.kind == "buffer" and p.index == -1:
                while nxt in used:
                    nxt += 1
                p.index = nxt
                used.add(nxt)
        return params

    def _param(self, pname: str, attr: list[str], at: int, kname: str) -> Param:
        optional = "function_constant" in attr
        head = attr[0] if attr else ""
        if head in ("buffer", "threadgroup"):
            expr = "".join(attr[2:attr.index(")")])
            return Param(pname, head, _int(expr, None, self, at), optional=optional)
        if head in BUILTINS:
            return Param(pname, "builtin", builtin=_BUILTIN_ALIASES.get(head, head))
        self.fail(at, f"kernel '{kname}': parameter '{pname}' has an attribute the emulator does not support: {head}")

    # --- address spaces ------------------------------------------------------------------
    def address_space(self, i: int) -> int:
        space = self.text(i)
        start = i
        before = self.prev(i)
        if self.text(before) == ")" or (self.text(before) == "const" and self.text(self.prev(before)) == ")"):
            return self.member_qualifier(i)
        prefix_const = self.text(before) in ("const", "volatile")
        if prefix_const:
            start = before
        # collect the type: identifiers, ::, template argument lists
        k = self.sig(i + 1)
        type_toks: list[int] = []
        while k < len(self.t):
            s = self.text(k)
            if self.t[k].kind == "id" or s == "::":
                type_toks.append(k)
                k = self.sig(k + 1)
            elif s == "<" and type_toks:
                close = self.match_close(k)
                type_toks.extend(range(k, close + 1))
                k = self.sig(close + 1)
            else:
                break
        stop = self.text(k)
        words = [self.text(q) for q in type_toks]
        is_const = prefix_const and self.text(before) == "const" or "const" in words
        core = "".join(self.t[q].text if self.t[q].kind != "ws" else " " for q in range(type_toks[0], type_toks[-1] + 1)) if type_toks else ""
        core_clean = " ".join(w for w in _retokenize(core) if w not in ("const", "volatile")).replace(" :: ", "::")
        core_clean = re.sub(r"\s*::\s*", "::", core_clean)
        if stop == "*":
            if space in ("device", "constant"):
                const = "const " if (is_const or space == "constant") else ""
                self.replace(start, k, f" ::metal_emu::dptr<{const}{core_clean}>")
                p1 = self.prev(start)
                p2 = self.prev(p1)
                if self.text(p1) == "<" and self.text(p2) == "reinterpret_cast":
                    self.out[p2] = "static_cast"
                return k + 1
            self.out[i] = ""
            return i + 1
        if stop == "&":
            if space == "device" and not is_const:
                self.replace(start, k, f" ::metal_emu::dref<{core_clean}>")
                return k + 1
            if space == "constant" and not is_const:
                self.out[i] = "const"
            else:
                self.out[i] = ""
            return i + 1
        # a value declaration
        if space == "threadgroup":
            return self.threadgroup_var(i, start, type_toks, k)
        if space == "constant":
            if not type_toks:
                self.out[i] = ""
                return i + 1
            name_i = type_toks[-1]
            nxt = self.sig(name_i + 1)
            if self.is_attr(nxt) and any(self.text(q) == "function_constant" for q in range(nxt, self.match_close(nxt))):
                close = self.match_close(nxt)
                idx_expr = "".join(self.text(q) for q in range(nxt, close) if self.t[q].kind in ("num", "punct", "id"))
                m = re.search(r"function_constant\((.*)\)", idx_expr)
                self.unit.function_constants.append(("::".join(self.namespace() + [self.text(name_i)]),
                                                     _int(m.group(1), None, self, i)))
                self.out[i] = "static"
                return i + 1
            in_class = bool(self.braces) and self.braces[-1][0] == "class"
            look = [self.text(q) for q in range(max(0, i - 12), i)]
            if in_class:
                self.out[i] = "" if "constexpr" in look or "constexpr" in words else "constexpr"
            else:
                self.out[i] = "" if is_const or "constexpr" in look or "constexpr" in words else "const"
            return i + 1
        self.out[i] = ""
        return i + 1

    def unary_subscript_address(self, i: int) -> bool:
        """`&p[i]` -> `(p + (i))`: the same address, but for a checked device pointer it keeps the
        buffer and does not count a load that never happens (MLX-style vector loads cast it)."""
        p = self.prev(i)
        if p >= 0 and (self.t[p].kind in ("id", "num") or self.text(p) in (")", "]")) and self.text(p) != "return":
            return False
        k = self.sig(i + 1)
        if self.t[k].kind != "id" or self.text(self.sig(k + 1)) != "[" or self.is_attr(self.sig(k + 1)):
            return False
        groups = []
        q = self.sig(k + 1)
        while self.text(q) == "[":
            close = self.match_close(q)
            groups.append((q, close))
            q = self.sig(close + 1)
        if self.text(q) in (".", "->", "(", "["):
            return False
        o, c = groups[-1]
        self.out[i] = "("
        self.out[o] = " + ("
        self.out[c] = "))"
        return True

    def signature_key(self, a: int, b: int) -> str:
        return " ".join("".join(self.out[a:b]).split())

    def member_qualifier(self, i: int) -> int:
        """`f() thread {..}`, `f() const constant {..}`, `T() threadgroup : ...`: MSL overloads member
        functions on the object's address space. Memory is flat here, so one version serves every
        object: keep the first of a set of twins (dropping the qualifier), drop the others, which
        would otherwise be redefinitions."""
        key = self.signature_key(self.stmt_start, i)
        if key not in self.signatures[-1]:
            self.signatures[-1].add(key)
            self.out[i] = ""
            return i + 1
        k = self.sig(i + 1)
        while k < len(self.t):
            s = self.text(k)
            if s == ";":
                break
            if s == "{" and (self.prev(k) == i or self.t[self.prev(k)].kind != "id"):
                k = self.match_close(k)
                break
            if s in ("(", "{", "["):
                k = self.match_close(k)
            k = self.sig(k + 1)
        self.replace(self.stmt_start, k, "")
        return k + 1

    def threadgroup_var(self, i: int, start: int, type_toks: list[int], k: int) -> int:
        if len(type_toks) < 2:
            self.fail(i, "cannot parse this threadgroup declaration")
        name_i = type_toks[-1]
        ttext = "".join(self.text(q) if self.t[q].kind != "ws" else " " for q in range(type_toks[0], name_i))
        dims = ""
        while self.text(k) == "[":
            close = self.match_close(k)
            dims += "".join(self.text(q) for q in range(k, close + 1) if self.t[q].kind != "marker")
            k = self.sig(close + 1)
        if self.text(k) != ";":
            self.fail(i, "threadgroup declarations must declare one variable without initializer")
        name = self.text(name_i)
        ttext = " ".join(w for w in _retokenize(ttext) if w != "volatile").replace(" :: ", "::")
        self.replace(start, k, f'auto& {name} = ::metal_emu::tg_var<{ttext}{dims}>([] {{}}, "{name}");')
        return k + 1


def _retokenize(s: str) -> list[str]:
    return [m.group() for m in _TOKEN.finditer(s) if m.lastgroup != "ws"]


def _int(expr: str, default, rw: _Rewriter | None = None, at: int = 0):
    e = expr.strip()
    e = re.sub(r"(?<=\d)[uUlL]+\b", "", e)
    if re.fullmatch(r"[0-9+\-*/() xXa-fA-F]+", e or "x"):
        try:
            return int(eval(e, {"__builtins__": {}}, {}))  # digits and operators only
        except Exception:
            pass
    if default is not None or rw is None:
        return default
    rw.fail(at, f"expected an integer constant, got '{expr}'")


def rewrite(preprocessed: str) -> Unit:
    return _Rewriter(tokenize(preprocessed)).run()
