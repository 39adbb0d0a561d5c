// MSL atomics on threadgroup memory (plain pointers: one OS thread runs a threadgroup) and on
// device memory (checked dptr; real atomics, because threadgroups run on several OS threads).
#pragma once
#include "dptr.h"

namespace metal {

enum memory_order { memory_order_relaxed = 0, memory_order_acquire = 2, memory_order_release = 3,
                    memory_order_acq_rel = 4, memory_order_seq_cst = 5 };
enum class memory_scope { memory_scope_thread, memory_scope_simdgroup, memory_scope_threadgroup, memory_scope_device };

template <class T> struct atomic { T v; };
using atomic_int = atomic<int>;
using atomic_uint = atomic<uint>;
using atomic_bool = atomic<bool>;
using atomic_float = atomic<float>;
using atomic_ulong = atomic<ulong>;
using atomic_long = atomic<long>;

namespace detail {
template <class T, class F> T atomic_update(T* p, F f) {  // CAS loop for float and min/max
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  if constexpr (std::is_integral_v<T>) {
    while (!__atomic_compare_exchange_n(p, &old, T(f(old)), true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
  } else {
    static_assert(sizeof(T) == 4);
    uint32_t* u = reinterpret_cast<uint32_t*>(p);
    uint32_t ob = __atomic_load_n(u, __ATOMIC_RELAXED);
    for (;;) {
      T o = std::bit_cast<T>(ob);
      uint32_t nb = std::bit_cast<uint32_t>(T(f(o)));
      if (__atomic_compare_exchange_n(u, &ob, nb, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return o;
    }
  }
  return old;
}
template <class T> T* dev(metal_emu::dptr<atomic<T>> a) {  // checked, counted as read + write
  atomic<T>* q = a.raw();
  metal_emu::dcheck(q, a.info, false);
  metal_emu::dcheck(q, a.info, true);
  return &q->v;
}
template <class T> T* dev(metal_emu::dptr<const atomic<T>> a) { return const_cast<T*>(&metal_emu::dcheck(a.p, a.info, false)->v); }
}  // namespace detail

#define METAL_EMU_ATOMIC_RMW(name, expr)                                                           \
  template <class T, class U> T name(atomic<T>* a, U val, memory_order = memory_order_relaxed) {    \
    T v = T(val);                                                                                  \
    return detail::atomic_update(&a->v, [v](T o) { return expr; });                                \
  }                                                                                                \
  template <class T, class U> T name(metal_emu::dptr<atomic<T>> a, U val, memory_order = memory_order_relaxed) { \
    T v = T(val);                                                                                  \
    return detail::atomic_update(detail::dev(a), [v](T o) { return expr; });                       \
  }
METAL_EMU_ATOMIC_RMW(atomic_fetch_add_explicit, o + v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_sub_explicit, o - v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_max_explicit, o > v ? o : v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_min_explicit, o < v ? o : v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_and_explicit, o & v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_or_explicit, o | v)
METAL_EMU_ATOMIC_RMW(atomic_fetch_xor_explicit, o ^ v)
METAL_EMU_ATOMIC_RMW(atomic_exchange_explicit, v)
#undef METAL_EMU_ATOMIC_RMW

template <class T> T atomic_load_explicit(const atomic<T>* a, memory_order = memory_order_relaxed) {
  return __atomic_load_n(&a->v, __ATOMIC_SEQ_CST);
}
template <class T> T atomic_load_explicit(metal_emu::dptr<const atomic<T>> a, memory_order = memory_order_relaxed) {
  return __atomic_load_n(detail::dev(a), __ATOMIC_SEQ_CST);
}
template <class T, class U> void atomic_store_explicit(atomic<T>* a, U v, memory_order = memory_order_relaxed) {
  __atomic_store_n(&a->v, T(v), __ATOMIC_SEQ_CST);
}
template <class T, class U> void atomic_store_explicit(metal_emu::dptr<atomic<T>> a, U v, memory_order = memory_order_relaxed) {
  T* q = &metal_emu::dcheck(a.raw(), a.info, true)->v;
  __atomic_store_n(q, T(v), __ATOMIC_SEQ_CST);
}
template <class T, class U>
bool atomic_compare_exchange_weak_explicit(atomic<T>* a, T* expected, U desired, memory_order = memory_order_relaxed,
                                           memory_order = memory_order_relaxed) {
  return __atomic_compare_exchange_n(&a->v, expected, T(desired), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
template <class T, class U>
bool atomic_compare_exchange_weak_explicit(metal_emu::dptr<atomic<T>> a, T* expected, U desired,
                                           memory_order = memory_order_relaxed, memory_order = memory_order_relaxed) {
  return __atomic_compare_exchange_n(detail::dev(a), expected, T(desired), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

}  // namespace metal
