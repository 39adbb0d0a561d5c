#include "attention_rows.h"

#include <cmath>
#include <cstring>

#include "attention.h"
#include "cpu/attention.h"
#include "validate.h"

namespace tandem {
namespace {

// Copies a (1, H, P, D) array (any strides) into a row-contiguous buffer of the same shape.
void copy_buffer(const mx::array& src, char* dst) {
  std::vector<char> tmp;
  int64_t st[3];
  const char* p = static_cast<const char*>(strided_view(src, tmp, st));
  const int64_t H = src.shape(1), P = src.shape(2), D = src.shape(3);
  const size_t item = src.itemsize();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < P; ++t, dst += D * item) std::memcpy(dst, p + (h * st[1] + t * st[2]) * item, D * item);
}

// Writes row b of new (B, H, L, D) into buffer (1, H, cap, D) at positions off .. off + L - 1.
void write_rows(const char* src, const int64_t st[3], int64_t b, int64_t H, int64_t L, int64_t D,
                size_t item, char* buf, int64_t cap, int64_t off) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t l = 0; l < L; ++l)
      std::memcpy(buf + ((h * cap + off + l) * D) * item, src + (b * st[0] + h * st[1] + l * st[2]) * item,
                  D * item);
}

} // namespace

void AttentionRows::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const int64_t B = static_cast<int64_t>(offsets_.size());
  const int first = value_dim_ ? 2 : 3;  // index of the first cache buffer among the inputs
  const int64_t nbuf = static_cast<int64_t>(inputs.size()) - first;
  outputs[0].set_data(mx::allocator::malloc(outputs[0].nbytes()));
  // A cache buffer is written in place when no other array shares its memory (no evaluated view of
  // it is alive), else copied first. MLX's own donation test (is_donatable) never holds for an input
  // of a multi-output primitive: every output keeps its own reference to the inputs. Writing in place
  // changes only positions at or past the row's offset, which no valid cache state covers.
  std::vector<bool> copied(static_cast<size_t>(nbuf));
  for (int64_t j = 0; j < nbuf; ++j) {
    const auto& in = inputs[first + j];
    auto& o = outputs[1 + j];
    const auto& data = in.data_shared_ptr();
    if (data.use_count() == 1 && data->is_owned() && in.flags().row_contiguous) {
      o.copy_shared_buffer(in);
    } else {
      o.set_data(mx::allocator::malloc(o.nbytes()));
      copied[j] = true;
    }
  }
  enqueue_cpu(stream(), inputs, outputs,
              [scale = scale_, offs = offsets_, vdim = value_dim_, isa = isa_, copied, B, first, nbuf](auto& in, auto& out) {
    const auto &q = in[0], &k = in[1];
    const bool shared = vdim != 0;  // values are the keys' first vdim features (MLA's latent cache)
    const size_t item = q.itemsize();
    const int64_t Hq = q.shape(1), L = q.shape(2), Dk = q.shape(3), Hkv = k.shape(1);
    const int64_t Dv = shared ? vdim : in[2].shape(3);
    std::vector<char> qtmp, ktmp, vtmp;
    int64_t qs[3], ks[3], vs[3];
    const char* qp = static_cast<const char*>(strided_view(q, qtmp, qs));
    const char* kp = static_cast<const char*>(strided_view(k, ktmp, ks));
    const char* vp = shared ? nullptr : static_cast<const char*>(strided_view(in[2], vtmp, vs));
    for (int64_t j = 0; j < nbuf; ++j)
      if (copied[j]) copy_buffer(in[first + j], out[1 + j].template data<char>());
    char* o = out[0].template data<char>();
    for (int64_t b = 0; b < B; ++b) {
      char* kc = out[1 + b].template data<char>();
      char* vc = shared ? kc : out[1 + B + b].template data<char>();
      const int64_t cap = out[1 + b].shape(2), off = offs[b], vrow = shared ? Dk : Dv;
      write_rows(kp, ks, b, Hkv, L, Dk, item, kc, cap, off);
      if (!shared) write_rows(vp, vs, b, Hkv, L, Dv, item, vc, cap, off);
      cpu::AttentionArgs a;
      a.q = qp + b * qs[0] * item;
      a.k = kc;
      a.v = vc;
      a.out = o + b * Hq * L * Dv * item;
      a.type = elem_type(q.dtype());
      a.B = 1, a.Hq = Hq, a.Hkv = Hkv, a.Lq = L, a.Lk = off + L, a.Dk = Dk, a.Dv = Dv;
      for (int i = 0; i < 3; ++i) a.qs[i] = qs[i];
      a.ks[0] = Hkv * cap * Dk, a.ks[1] = cap * Dk, a.ks[2] = Dk;
      a.vs[0] = Hkv * cap * vrow, a.vs[1] = cap * vrow, a.vs[2] = vrow;
      a.scale = scale;
      a.causal = true;
      cpu::attention(isa, a);
    }
  });
}

std::tuple<mx::array, std::vector<mx::array>, std::vector<mx::array>> attention_rows(
    const mx::array& q, const mx::array& k, const std::optional<mx::array>& v,
    const std::vector<mx::array>& k_caches, const std::vector<mx::array>& v_caches,
    const std::vector<int64_t>& offsets, std::optional<float> scale, std::optional<int64_t> value_dim,
    mx::StreamOrDevice s) {
  const char* op = "attention_rows";
  check_float(op, "q", q);
  check_ndim(op, "q (B, Hq, L, Dk)", q, 4);
  check_ndim(op, "k (B, Hkv, L, Dk)", k, 4);
  const bool shared = !v.has_value();
  if (shared != value_dim.has_value() || (shared && !v_caches.empty()))
    fail(op, "give either v and v_caches, or value_dim (values are the keys' first value_dim features) "
             "with v=None and no v_caches");
  if (!shared) check_ndim(op, "v (B, Hkv, L, Dv)", *v, 4);
  const auto same_dtype = [&](const std::string& what, const mx::array& a) {
    if (a.dtype() != q.dtype())
      fail(op, what + " must have q's dtype " + dtype_str(q.dtype()) + ", got " + dtype_str(a.dtype()));
  };
  same_dtype("k", k);
  if (!shared) same_dtype("v", *v);
  const std::string shapes = "; q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) +
                             (shared ? std::string() : ", v " + shape_str(v->shape()));
  if (q.size() == 0 || k.size() == 0 || (!shared && v->size() == 0))
    fail(op, "empty dimensions are not allowed" + shapes);
  const int64_t B = q.shape(0), Hq = q.shape(1), L = q.shape(2), Dk = q.shape(3), Hkv = k.shape(1);
  const int64_t Dv = shared ? *value_dim : v->shape(3);
  if (k.shape(0) != B || k.shape(2) != L ||
      (!shared && (v->shape(0) != B || v->shape(2) != L || v->shape(1) != Hkv)))
    fail(op, "q, k and v must have the same batch size and length, k and v the same heads" + shapes);
  if (k.shape(3) != Dk) fail(op, "q and k must have the same head dimension" + shapes);
  if (shared && (Dv < 1 || Dv > Dk))
    fail(op, "value_dim must be in [1, Dk = " + std::to_string(Dk) + "], got " + std::to_string(Dv));
  if (Hq % Hkv != 0)
    fail(op, "the number of query heads (" + std::to_string(Hq) + ") must be a multiple of the number of "
                 "key/value heads (" + std::to_string(Hkv) + ")" + shapes);
  if (static_cast<int64_t>(k_caches.size()) != B || (!shared && static_cast<int64_t>(v_caches.size()) != B) ||
      static_cast<int64_t>(offsets.size()) != B)
    fail(op, "one k cache, v cache and offset per batch row: batch " + std::to_string(B) + ", got " +
                 std::to_string(k_caches.size()) + ", " + std::to_string(v_caches.size()) + " and " +
                 std::to_string(offsets.size()));
  std::vector<mx::array> inputs{q, k};
  if (!shared) inputs.push_back(*v);
  std::vector<mx::Shape> out_shapes{{B, Hq, L, Dv}};
  for (int pass = 0; pass < (shared ? 1 : 2); ++pass) {
    const auto& caches = pass == 0 ? k_caches : v_caches;
    const int64_t D = pass == 0 ? Dk : Dv;
    for (int64_t b = 0; b < B; ++b) {
      const auto& c = caches[b];
      const std::string what = std::string(pass == 0 ? "k" : "v") + "_caches[" + std::to_string(b) + "]";
      same_dtype(what, c);
      if (c.ndim() != 4 || c.shape(0) != 1 || c.shape(1) != Hkv || c.shape(3) != D)
        fail(op, what + " must be (1, " + std::to_string(Hkv) + ", capacity, " + std::to_string(D) + "), got " +
                     shape_str(c.shape()));
      if (c.shape(2) != k_caches[b].shape(2))
        fail(op, "k_caches[" + std::to_string(b) + "] and v_caches[" + std::to_string(b) +
                     "] must have the same capacity");
      if (offsets[b] < 0 || offsets[b] + L > c.shape(2))
        fail(op, "offsets[" + std::to_string(b) + "] = " + std::to_string(offsets[b]) + " with " +
                     std::to_string(L) + " new positions does not fit the capacity " + std::to_string(c.shape(2)));
      inputs.push_back(c);
      out_shapes.push_back(c.shape());
    }
  }
  const float sc = scale ? *scale : 1.0f / std::sqrt(static_cast<float>(Dk));
  if (!std::isfinite(sc)) fail(op, "scale must be finite, got " + std::to_string(sc));
  std::vector<mx::Dtype> dtypes(out_shapes.size(), q.dtype());
  auto prim = std::make_shared<AttentionRows>(mx::to_stream(s), sc, offsets, shared ? Dv : 0, cpu::active_isa());
  auto outs = mx::array::make_arrays(std::move(out_shapes), dtypes, prim, inputs);
  std::vector<mx::array> kc(outs.begin() + 1, outs.begin() + 1 + B), vc(outs.begin() + 1 + B, outs.end());
  return {outs[0], kc, vc};
}

} // namespace tandem
