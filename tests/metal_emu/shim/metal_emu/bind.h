// Binding kernel parameters: the generated launcher calls one binder per parameter, chosen by
// the parameter's attribute; the parameter's C++ type picks the conversion.
#pragma once
#include "dptr.h"
#include "vec.h"

namespace metal_emu {

enum Builtin {
  B_thread_position_in_grid, B_thread_position_in_threadgroup, B_thread_index_in_threadgroup,
  B_threadgroup_position_in_grid, B_threadgroups_per_grid, B_threads_per_threadgroup,
  B_dispatch_threads_per_threadgroup, B_threads_per_grid, B_thread_index_in_simdgroup,
  B_threads_per_simdgroup, B_simdgroup_index_in_threadgroup, B_simdgroups_per_threadgroup,
  B_thread_execution_width, B_quadgroup_index_in_threadgroup, B_thread_index_in_quadgroup,
  B_quadgroups_per_threadgroup
};

void builtin_value(const Lane* L, Builtin b, uint32_t out[3]);

template <class P> P bind_builtin(Lane* L, Builtin b) {
  uint32_t v[3];
  builtin_value(L, b, v);
  using Q = std::remove_cvref_t<P>;
  if constexpr (std::is_integral_v<Q>) {
    return Q(v[0]);
  } else {
    static_assert(requires { typename Q::value_type; Q::size; }, "builtin parameter must be an integer or vector");
    Q r;
    for (int i = 0; i < Q::size; i++) r[i] = typename Q::value_type(v[i]);
    return r;
  }
}

[[noreturn]] void fail_unbound(Lane* L, const char* what, int index, const char* param);
[[noreturn]] void fail_small(Lane* L, int index, size_t need, const char* param);

template <class P> struct BufferBinder;
// Pointers to unbound buffers are allowed (as on Metal) and fail only when dereferenced.
template <class T> struct BufferBinder<dptr<T>> {
  static dptr<T> bind(Lane* L, int n, bool, const char*) {
    BufferInfo* info = &L->worker->bufs[n];
    return dptr<T>(reinterpret_cast<T*>(info->base), info);
  }
};
template <class T> struct BufferBinder<const T&> {  // constant T& args [[buffer(n)]]
  static const T& bind(Lane* L, int n, bool optional, const char* param) {
    alignas(64) static const unsigned char zeros[sizeof(T) < 4096 ? 4096 : sizeof(T)] = {};
    BufferInfo* info = &L->worker->bufs[n];
    if (!info->bound) {
      if (!optional) fail_unbound(L, "buffer", n, param);
      return *reinterpret_cast<const T*>(zeros);
    }
    if (size_t(info->end - info->base) < sizeof(T)) fail_small(L, n, sizeof(T), param);
    return *reinterpret_cast<const T*>(info->base);
  }
};
template <class T> struct BufferBinder<dref<T>> {  // device T& out [[buffer(n)]]
  static dref<T> bind(Lane* L, int n, bool, const char*) {
    BufferInfo* info = &L->worker->bufs[n];
    return dref<T>(reinterpret_cast<T*>(info->base), info);
  }
};
template <class P> P bind_buffer(Lane* L, int n, bool optional, const char* param) {
  static_assert(requires { BufferBinder<P>::bind; },
                "[[buffer(n)]] parameter must be a device/constant pointer or a constant reference");
  return BufferBinder<P>::bind(L, n, optional, param);
}

template <class P> P bind_threadgroup(Lane* L, int n, const char* param) {
  static_assert(std::is_pointer_v<P>, "[[threadgroup(n)]] parameter must be a pointer");
  char* p = L->worker->tg_dyn[n];
  if (!p) fail_unbound(L, "threadgroup memory", n, param);
  return reinterpret_cast<P>(p);
}

// Program-scope threadgroup variables: `threadgroup T x[N];` becomes `auto& x = tg_var<T[N]>(...)`.
// The key is unique per declaration (lambda type), the storage per threadgroup.
template <class K> inline char tg_key = 0;
void* tg_static(Lane* L, const void* key, size_t size, size_t align, const char* name, const char* file, unsigned line);
template <class T, class K> T& tg_var(K, const char* name, std::source_location loc = std::source_location::current()) {
  return *static_cast<T*>(tg_static(cur_lane(), &tg_key<K>, sizeof(T), alignof(T), name, loc.file_name(), loc.line()));
}

// Kernels and function constants are registered by each generated launcher unit.
struct KernelEntry {
  const char* host_name;
  void (*entry)(Lane*);
  uint32_t max_threads;
  const char* file;
  int line;
};
enum FcType { FC_BOOL, FC_INT, FC_UINT, FC_FLOAT, FC_HALF, FC_SHORT, FC_USHORT, FC_CHAR, FC_UCHAR, FC_OTHER };
template <class T> constexpr int fc_type() {
  if constexpr (std::is_same_v<T, bool>) return FC_BOOL;
  else if constexpr (std::is_same_v<T, int>) return FC_INT;
  else if constexpr (std::is_same_v<T, uint>) return FC_UINT;
  else if constexpr (std::is_same_v<T, float>) return FC_FLOAT;
  else if constexpr (std::is_same_v<T, half>) return FC_HALF;
  else if constexpr (std::is_same_v<T, short>) return FC_SHORT;
  else if constexpr (std::is_same_v<T, ushort>) return FC_USHORT;
  else if constexpr (std::is_same_v<T, char> || std::is_same_v<T, signed char>) return FC_CHAR;
  else if constexpr (std::is_same_v<T, uchar>) return FC_UCHAR;
  else return FC_OTHER;
}
struct FcEntry {
  int index;
  const char* name;
  void* addr;
  int size;
  int type;
};
struct Registrar {
  Registrar(const KernelEntry* k, int nk, const FcEntry* f, int nf);
};
bool fc_defined(const void* addr);

template <class F> struct fn_args;
template <class R, class... A> struct fn_args<R (*)(A...)> { using type = std::tuple<A...>; };
template <class F, size_t I> using arg_t = std::tuple_element_t<I, typename fn_args<F>::type>;

}  // namespace metal_emu

namespace metal {
template <class T> bool is_function_constant_defined(const T& v) { return metal_emu::fc_defined(&v); }
}  // namespace metal
