// Shim semantics: swizzles, vector construction and conversion, packed types, as_type, select,
// clamp, fast:: math, integer vector ops, half literals. Each thread writes 16 floats.
#include <metal_stdlib>
using namespace metal;

[[kernel]] void vector_ops(const device float4* a [[buffer(0)]],
                           const device packed_float3* p [[buffer(1)]],
                           const device uint* u [[buffer(2)]],
                           device float* out [[buffer(3)]],
                           uint i [[thread_position_in_grid]]) {
  float4 v = a[i];
  float3 q = p[i];                        // packed -> padded
  float4 w = float4(v.zw, q.xy);          // construction from swizzles
  w.xy = w.yx;                            // swizzle assignment
  half4 h = half4(v) * 2.0h;              // explicit conversion, half literal
  uint4 bits = as_type<uint4>(v);
  uint4 shifted = (bits >> 16u) & 0xffu;  // integer vector ops with scalar splat
  float4 s = select(v, -v, v < 0.0f);     // abs via select
  float c = clamp(v.x, -1.0f, 1.0f);
  float e = fast::exp(min(v.y, 10.0f));
  uchar4 b = as_type<uchar4>(u[i]);
  device float* o = out + 16 * i;
  o[0] = w.x; o[1] = w.y; o[2] = w.z; o[3] = w.w;
  o[4] = float(h.x); o[5] = float(h.w);
  o[6] = float(shifted.x); o[7] = float(shifted.w);
  o[8] = s.x + s.y + s.z + s.w;
  o[9] = c;
  o[10] = e;
  o[11] = float(b.x) + 256.0f * float(b.w);
  o[12] = dot(v.xyz, q);
  o[13] = float(all(abs(v) >= 0.0f)) + float(any(isnan(v)));
  o[14] = q.z;
  o[15] = float(sizeof(float3) + sizeof(packed_float3));
}
