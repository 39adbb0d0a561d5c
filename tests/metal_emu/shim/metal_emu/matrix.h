// simdgroup_matrix<T,8,8>: each lane holds the two elements the hardware gives it (the layout
// MLX's steel/mma.h documents: row (qid&4)+((lane/2)%4), columns (qid&2)*2+(lane%2)*2 and +1,
// qid = lane/4), so thread_elements() means what it means on a GPU. load/store/multiply are
// collective: performed once per SIMD-group, device traffic counted once.
#pragma once
#include "simd.h"
#include "dptr.h"

namespace metal {

template <class T, int Cols, int Rows> struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "the emulator supports 8x8 simdgroup matrices");
  vec<T, 2> el;
  simdgroup_matrix() = default;
  explicit simdgroup_matrix(T diag) {  // MSL: a diagonal matrix
    int r, c;
    pos(metal_emu::cur_lane()->lane, r, c);
    el[0] = r == c ? diag : T(0);
    el[1] = r == c + 1 ? diag : T(0);
  }
  vec<T, 2>& thread_elements() { return el; }
  const vec<T, 2>& thread_elements() const { return el; }
  static void pos(int lane, int& row, int& col) {
    int qid = lane / 4;
    row = (qid & 4) + ((lane / 2) % 4);
    col = (qid & 2) * 2 + (lane % 2) * 2;
  }
};
template <class T, int C, int R> simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T v) {
  simdgroup_matrix<T, C, R> m;
  m.el = vec<T, 2>(v);
  return m;
}
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

}  // namespace metal

namespace metal_emu {

template <class M> using mat_elem_t = std::remove_cvref_t<decltype(std::declval<M&>().el[0])>;

inline const void* slot_ptr(Group* g, int lane, int which) {
  return reinterpret_cast<const void* const*>(g->in[lane].d)[which];
}
// Gather the 8x8 matrix spread over the lanes whose matrix addresses are in the slots.
template <class M> void gather(Group* g, int which, float out[8][8]) {
  for (int i = 0; i < g->n; i++) {
    auto* m = static_cast<M*>(slot_ptr(g, i, which));
    int r, c;
    M::pos(i, r, c);
    out[r][c] = float(m->el[0]);
    out[r][c + 1] = float(m->el[1]);
  }
}
template <class M> void check_full(Group* g, const char* what) {
  if (g->n != kSimdWidth)
    lane_failf(cur_lane(), E_DIVERGENCE, "%s needs a full SIMD-group of 32 lanes, this one has %d", what, g->n);
}

struct MatIO { void* mat; const void* ptr; BufferInfo* info; uint64_t epr, ox, oy; bool transpose; };
template <class M, class E, bool Store> void r_matio(Group* g) {
  check_full<M>(g, Store ? "simdgroup_store" : "simdgroup_load");
  MatIO a0 = slot_get<MatIO>(g->in[0]);
  for (int i = 0; i < g->n; i++) {
    MatIO a = slot_get<MatIO>(g->in[i]);
    if (a.ptr != a0.ptr || a.epr != a0.epr || a.ox != a0.ox || a.oy != a0.oy || a.transpose != a0.transpose)
      lane_failf(cur_lane(), E_DIVERGENCE, "%s arguments differ between lanes 0 and %d (they must be uniform)",
                 Store ? "simdgroup_store" : "simdgroup_load", i);
    M* m = static_cast<M*>(a.mat);
    int r, c;
    M::pos(i, r, c);
    for (int k = 0; k < 2; k++) {
      uint64_t mr = a.transpose ? uint64_t(c + k) : uint64_t(r), mc = a.transpose ? uint64_t(r) : uint64_t(c + k);
      E* p = static_cast<E*>(const_cast<void*>(a.ptr)) + (a.oy + mr) * a.epr + a.ox + mc;
      if (a.info) p = dcheck(p, a.info, Store);
      if constexpr (Store) *p = E(m->el[k]);
      else m->el[k] = mat_elem_t<M>(*p);
    }
  }
}
template <class M> void exchange_matio(const MatIO& io, ResolveFn fn, const char* what, const std::source_location& loc) {
  Lane* L = cur_lane();
  slot_put(L->group->in[L->lane], io);
  simd_arrive(L, make_site(loc, fn, what));
}

template <class MD, class MA, class MB, class MC> void r_mma(Group* g) {
  check_full<MD>(g, "simdgroup_multiply_accumulate");
  float a[8][8], b[8][8], c[8][8];
  gather<MA>(g, 1, a);
  gather<MB>(g, 2, b);
  if constexpr (!std::is_same_v<MC, void>) gather<MC>(g, 3, c);
  for (int i = 0; i < g->n; i++) {
    MD* d = static_cast<MD*>(const_cast<void*>(slot_ptr(g, i, 0)));
    int r, col;
    MD::pos(i, r, col);
    for (int k = 0; k < 2; k++) {
      float acc = 0;
      if constexpr (!std::is_same_v<MC, void>) acc = c[r][col + k];
      for (int j = 0; j < 8; j++) acc = __builtin_fmaf(a[r][j], b[j][col + k], acc);
      d->el[k] = mat_elem_t<MD>(acc);
    }
  }
}

}  // namespace metal_emu

namespace metal {

template <class T, class E>
void simdgroup_load(simdgroup_matrix<T, 8, 8>& d, const E* src, ulong elements_per_row = 8, ulong2 origin = ulong2(0),
                    bool transpose = false, SL loc = SL::current()) {
  metal_emu::exchange_matio<simdgroup_matrix<T, 8, 8>>(
      {&d, src, nullptr, elements_per_row, origin.x, origin.y, transpose},
      &metal_emu::r_matio<simdgroup_matrix<T, 8, 8>, E, false>, "simdgroup_load", loc);
}
template <class T, class E>
void simdgroup_load(simdgroup_matrix<T, 8, 8>& d, metal_emu::dptr<const E> src, ulong elements_per_row = 8,
                    ulong2 origin = ulong2(0), bool transpose = false, SL loc = SL::current()) {
  metal_emu::exchange_matio<simdgroup_matrix<T, 8, 8>>(
      {&d, src.p, src.info, elements_per_row, origin.x, origin.y, transpose},
      &metal_emu::r_matio<simdgroup_matrix<T, 8, 8>, E, false>, "simdgroup_load", loc);
}
template <class T, class E>
void simdgroup_store(const simdgroup_matrix<T, 8, 8>& s, E* dst, ulong elements_per_row = 8, ulong2 origin = ulong2(0),
                     bool transpose = false, SL loc = SL::current()) {
  metal_emu::exchange_matio<simdgroup_matrix<T, 8, 8>>(
      {const_cast<simdgroup_matrix<T, 8, 8>*>(&s), dst, nullptr, elements_per_row, origin.x, origin.y, transpose},
      &metal_emu::r_matio<simdgroup_matrix<T, 8, 8>, E, true>, "simdgroup_store", loc);
}
template <class T, class E>
void simdgroup_store(const simdgroup_matrix<T, 8, 8>& s, metal_emu::dptr<E> dst, ulong elements_per_row = 8,
                     ulong2 origin = ulong2(0), bool transpose = false, SL loc = SL::current()) {
  metal_emu::exchange_matio<simdgroup_matrix<T, 8, 8>>(
      {const_cast<simdgroup_matrix<T, 8, 8>*>(&s), dst.p, dst.info, elements_per_row, origin.x, origin.y, transpose},
      &metal_emu::r_matio<simdgroup_matrix<T, 8, 8>, E, true>, "simdgroup_store", loc);
}

template <class TD, class TA, class TB, class TC>
void simdgroup_multiply_accumulate(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                   const simdgroup_matrix<TB, 8, 8>& b, const simdgroup_matrix<TC, 8, 8>& c,
                                   SL loc = SL::current()) {
  metal_emu::Lane* L = metal_emu::cur_lane();
  const void* ptrs[4] = {&d, &a, &b, &c};
  metal_emu::slot_put(L->group->in[L->lane], ptrs);
  metal_emu::simd_arrive(L, metal_emu::make_site(loc,
      &metal_emu::r_mma<simdgroup_matrix<TD, 8, 8>, const simdgroup_matrix<TA, 8, 8>, const simdgroup_matrix<TB, 8, 8>,
                        const simdgroup_matrix<TC, 8, 8>>, "simdgroup_multiply_accumulate"));
}
template <class TD, class TA, class TB>
void simdgroup_multiply(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                        const simdgroup_matrix<TB, 8, 8>& b, SL loc = SL::current()) {
  metal_emu::Lane* L = metal_emu::cur_lane();
  const void* ptrs[4] = {&d, &a, &b, nullptr};
  metal_emu::slot_put(L->group->in[L->lane], ptrs);
  metal_emu::simd_arrive(L, metal_emu::make_site(loc,
      &metal_emu::r_mma<simdgroup_matrix<TD, 8, 8>, const simdgroup_matrix<TA, 8, 8>, const simdgroup_matrix<TB, 8, 8>, void>,
      "simdgroup_multiply"));
}

}  // namespace metal
