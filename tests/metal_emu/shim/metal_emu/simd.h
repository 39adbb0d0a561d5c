// SIMD-group collectives and barriers. Each call is a rendezvous of all lanes of the SIMD-group
// at the same call site (std::source_location identifies it); a lane that arrives elsewhere, or
// has exited, is reported as divergence instead of computing garbage as a GPU would.
#pragma once
#include "vec.h"
#include "math.h"
#include "lane.h"

namespace metal_emu {

template <class T> inline T slot_get(const Slot& s) { T r; __builtin_memcpy((void*)&r, s.d, sizeof(T)); return r; }
template <class T> inline void slot_put(Slot& s, const T& v) { __builtin_memcpy(s.d, (const void*)&v, sizeof(T)); }

template <class T> inline T exchange(T x, int64_t iarg, ResolveFn fn, const char* what, const std::source_location& loc) {
  static_assert(sizeof(T) <= sizeof(Slot), "SIMD operand larger than 64 bytes");
  Lane* L = cur_lane();
  slot_put(L->group->in[L->lane], x);
  L->iarg = iarg;
  simd_arrive(L, make_site(loc, fn, what));
  return slot_get<T>(L->group->out[L->lane]);
}

struct OpSum { template <class T> static T f(T a, T b) { return a + b; } };
struct OpProd { template <class T> static T f(T a, T b) { return a * b; } };
struct OpMax { template <class T> static T f(T a, T b) { return T(metal::max(a, b)); } };
struct OpMin { template <class T> static T f(T a, T b) { return T(metal::min(a, b)); } };
// Bitwise reductions act on the bits of floating-point operands.
template <class T, class F> T bitwise(T a, T b, F f) {
  if constexpr (std::is_integral_v<T>) {
    return T(f(a, b));
  } else {
    using U = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
    static_assert(sizeof(T) == sizeof(U), "bitwise SIMD reduction of an unsupported type");
    return metal::as_type<T>(U(f(metal::as_type<U>(a), metal::as_type<U>(b))));
  }
}
struct OpAnd { template <class T> static T f(T a, T b) { return bitwise(a, b, [](auto x, auto y) { return x & y; }); } };
struct OpOr { template <class T> static T f(T a, T b) { return bitwise(a, b, [](auto x, auto y) { return x | y; }); } };
struct OpXor { template <class T> static T f(T a, T b) { return bitwise(a, b, [](auto x, auto y) { return x ^ y; }); } };

// Pairwise tree over the lanes present (a partial last SIMD-group has fewer than 32).
template <class T, class Op> void r_reduce(Group* g) {
  T v[kSimdWidth];
  for (int i = 0; i < g->n; i++) v[i] = slot_get<T>(g->in[i]);
  for (int s = 1; s < g->n; s *= 2)
    for (int i = 0; i + s < g->n; i += 2 * s) v[i] = Op::f(v[i], v[i + s]);
  for (int i = 0; i < g->n; i++) slot_put(g->out[i], v[0]);
}
template <class T, class Op, bool Inclusive> void r_scan(Group* g) {
  T acc = slot_get<T>(g->in[0]);
  slot_put(g->out[0], Inclusive ? acc : T(0));
  for (int i = 1; i < g->n; i++) {
    T x = slot_get<T>(g->in[i]);
    if (Inclusive) { acc = Op::f(acc, x); slot_put(g->out[i], acc); }
    else { slot_put(g->out[i], acc); acc = Op::f(acc, x); }
  }
}
enum ShuffleKind { SH_INDEX, SH_XOR, SH_DOWN, SH_UP, SH_ROT_DOWN, SH_ROT_UP, SH_QUAD_XOR, SH_QUAD_DOWN, SH_QUAD_UP, SH_QUAD_INDEX };
// Sources outside the SIMD-group keep the lane's own value (MSL: shuffle_down/up leave the
// edge lanes unchanged; for other shuffles that value is undefined on hardware).
template <class T, int K> void r_shuffle(Group* g) {
  for (int i = 0; i < g->n; i++) {
    int64_t a = g->lanes[i]->iarg, s;
    switch (K) {
      case SH_INDEX: s = a; break;
      case SH_XOR: s = i ^ a; break;
      case SH_DOWN: s = i + a; break;
      case SH_UP: s = i - a; break;
      case SH_ROT_DOWN: s = (i + a) % g->n; break;
      case SH_ROT_UP: s = ((i - a) % g->n + g->n) % g->n; break;
      case SH_QUAD_XOR: s = (i & ~3) | ((i & 3) ^ (a & 3)); break;
      case SH_QUAD_DOWN: s = (i & 3) + a < 4 ? i + a : i; break;
      case SH_QUAD_UP: s = (i & 3) - a >= 0 ? i - a : i; break;
      default: s = (i & ~3) | (a & 3); break;
    }
    g->out[i] = g->in[(s >= 0 && s < g->n) ? s : i];
  }
}
template <class T, class Op> void r_quad_reduce(Group* g) {
  for (int q = 0; q < g->n; q += 4) {
    T acc = slot_get<T>(g->in[q]);
    for (int i = q + 1; i < q + 4 && i < g->n; i++) acc = Op::f(acc, slot_get<T>(g->in[i]));
    for (int i = q; i < q + 4 && i < g->n; i++) slot_put(g->out[i], acc);
  }
}
// shuffle_and_fill: lanes whose source falls outside their `modulo`-sized segment take
// `fill` from the neighbouring position instead (per Apple's description of the builtins).
template <class T, bool Down> void r_fill(Group* g) {
  for (int i = 0; i < g->n; i++) {
    int64_t a = g->lanes[i]->iarg, delta = a & 0xffffffff, mod = a >> 32;
    if (mod <= 0) mod = kSimdWidth;
    int64_t j = i % mod, base = i - j, s;
    bool fill;
    if (Down) { fill = j + delta >= mod; s = base + (fill ? j + delta - mod : j + delta); }
    else { fill = j < delta; s = base + (fill ? mod + j - delta : j - delta); }
    if (s < 0 || s >= g->n) s = i;
    const T* pair = reinterpret_cast<const T*>(g->in[s].d);
    slot_put(g->out[i], pair[fill ? 1 : 0]);
  }
}
inline void r_ballot(Group* g) {
  uint64_t m = 0;
  for (int i = 0; i < g->n; i++) m |= uint64_t(slot_get<bool>(g->in[i])) << i;
  for (int i = 0; i < g->n; i++) slot_put(g->out[i], m);
}
inline void r_noop(Group*) {}

}  // namespace metal_emu

namespace metal {

using SL = std::source_location;

#define METAL_EMU_SIMD_REDUCE(name, Op)                                                            \
  template <class T> T name(T x, SL loc = SL::current()) {                                         \
    return metal_emu::exchange(x, 0, &metal_emu::r_reduce<T, metal_emu::Op>, #name, loc);          \
  }
METAL_EMU_SIMD_REDUCE(simd_sum, OpSum)
METAL_EMU_SIMD_REDUCE(simd_product, OpProd)
METAL_EMU_SIMD_REDUCE(simd_max, OpMax)
METAL_EMU_SIMD_REDUCE(simd_min, OpMin)
METAL_EMU_SIMD_REDUCE(simd_and, OpAnd)
METAL_EMU_SIMD_REDUCE(simd_or, OpOr)
METAL_EMU_SIMD_REDUCE(simd_xor, OpXor)
#undef METAL_EMU_SIMD_REDUCE
#define METAL_EMU_QUAD_REDUCE(name, Op)                                                            \
  template <class T> T name(T x, SL loc = SL::current()) {                                         \
    return metal_emu::exchange(x, 0, &metal_emu::r_quad_reduce<T, metal_emu::Op>, #name, loc);     \
  }
METAL_EMU_QUAD_REDUCE(quad_sum, OpSum)
METAL_EMU_QUAD_REDUCE(quad_max, OpMax)
METAL_EMU_QUAD_REDUCE(quad_min, OpMin)
#undef METAL_EMU_QUAD_REDUCE
#define METAL_EMU_SIMD_SCAN(name, Op, inc)                                                         \
  template <class T> T name(T x, SL loc = SL::current()) {                                         \
    return metal_emu::exchange(x, 0, &metal_emu::r_scan<T, metal_emu::Op, inc>, #name, loc);        \
  }
METAL_EMU_SIMD_SCAN(simd_prefix_inclusive_sum, OpSum, true)
METAL_EMU_SIMD_SCAN(simd_prefix_exclusive_sum, OpSum, false)
METAL_EMU_SIMD_SCAN(simd_prefix_inclusive_product, OpProd, true)
METAL_EMU_SIMD_SCAN(simd_prefix_exclusive_product, OpProd, false)
#undef METAL_EMU_SIMD_SCAN
#define METAL_EMU_SHUFFLE(name, kind)                                                              \
  template <class T, class I> requires std::is_integral_v<I>                                       \
  T name(T x, I arg, SL loc = SL::current()) {                                                     \
    return metal_emu::exchange(x, int64_t(arg), &metal_emu::r_shuffle<T, metal_emu::kind>, #name, loc); \
  }
METAL_EMU_SHUFFLE(simd_shuffle, SH_INDEX)
METAL_EMU_SHUFFLE(simd_broadcast, SH_INDEX)
METAL_EMU_SHUFFLE(simd_shuffle_xor, SH_XOR)
METAL_EMU_SHUFFLE(simd_shuffle_down, SH_DOWN)
METAL_EMU_SHUFFLE(simd_shuffle_up, SH_UP)
METAL_EMU_SHUFFLE(simd_shuffle_rotate_down, SH_ROT_DOWN)
METAL_EMU_SHUFFLE(simd_shuffle_rotate_up, SH_ROT_UP)
METAL_EMU_SHUFFLE(quad_shuffle, SH_QUAD_INDEX)
METAL_EMU_SHUFFLE(quad_broadcast, SH_QUAD_INDEX)
METAL_EMU_SHUFFLE(quad_shuffle_xor, SH_QUAD_XOR)
METAL_EMU_SHUFFLE(quad_shuffle_down, SH_QUAD_DOWN)
METAL_EMU_SHUFFLE(quad_shuffle_up, SH_QUAD_UP)
#undef METAL_EMU_SHUFFLE
template <class T, class I>
T simd_shuffle_and_fill_down(T x, T fill, I delta, ushort modulo = 32, SL loc = SL::current()) {
  static_assert(2 * sizeof(T) <= sizeof(metal_emu::Slot));
  struct P { T a, b; };
  metal_emu::Lane* L = metal_emu::cur_lane();
  metal_emu::slot_put(L->group->in[L->lane], P{x, fill});
  L->iarg = int64_t(delta) | (int64_t(modulo) << 32);
  metal_emu::simd_arrive(L, metal_emu::make_site(loc, &metal_emu::r_fill<T, true>, "simd_shuffle_and_fill_down"));
  return metal_emu::slot_get<T>(L->group->out[L->lane]);
}
template <class T, class I>
T simd_shuffle_and_fill_up(T x, T fill, I delta, ushort modulo = 32, SL loc = SL::current()) {
  struct P { T a, b; };
  metal_emu::Lane* L = metal_emu::cur_lane();
  metal_emu::slot_put(L->group->in[L->lane], P{x, fill});
  L->iarg = int64_t(delta) | (int64_t(modulo) << 32);
  metal_emu::simd_arrive(L, metal_emu::make_site(loc, &metal_emu::r_fill<T, false>, "simd_shuffle_and_fill_up"));
  return metal_emu::slot_get<T>(L->group->out[L->lane]);
}
template <class T> T simd_broadcast_first(T x, SL loc = SL::current()) {
  return metal_emu::exchange(x, 0, &metal_emu::r_shuffle<T, metal_emu::SH_INDEX>, "simd_broadcast_first", loc);
}

struct simd_vote {
  uint64_t v;
  explicit operator uint64_t() const { return v; }
  bool all() const { return v == ~uint64_t(0) >> (64 - metal_emu::cur_lane()->group->n); }
  bool any() const { return v != 0; }
};
inline simd_vote simd_ballot(bool b, SL loc = SL::current()) {
  metal_emu::Lane* L = metal_emu::cur_lane();
  metal_emu::slot_put(L->group->in[L->lane], b);
  metal_emu::simd_arrive(L, metal_emu::make_site(loc, &metal_emu::r_ballot, "simd_ballot"));
  return simd_vote{metal_emu::slot_get<uint64_t>(L->group->out[L->lane])};
}
inline bool simd_all(bool b, SL loc = SL::current()) { return simd_ballot(b, loc).all(); }
inline bool simd_any(bool b, SL loc = SL::current()) { return simd_ballot(b, loc).any(); }
inline bool simd_is_first(SL loc = SL::current()) {
  return metal_emu::exchange(metal_emu::cur_lane()->lane, 0, &metal_emu::r_shuffle<uint, metal_emu::SH_INDEX>,
                             "simd_is_first", loc) == metal_emu::cur_lane()->lane;
}

enum class mem_flags : uint { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4,
                              mem_threadgroup_imageblock = 8, mem_object_data = 16 };
constexpr mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(uint(a) | uint(b)); }

inline void threadgroup_barrier(mem_flags = mem_flags::mem_none, SL loc = SL::current()) {
  metal_emu::barrier_arrive(metal_emu::cur_lane(), metal_emu::make_site(loc, nullptr, "threadgroup_barrier"));
}
inline void simdgroup_barrier(mem_flags = mem_flags::mem_none, SL loc = SL::current()) {
  metal_emu::simd_arrive(metal_emu::cur_lane(), metal_emu::make_site(loc, &metal_emu::r_noop, "simdgroup_barrier"));
}

}  // namespace metal
