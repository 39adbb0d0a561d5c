// Checked device pointers. The front end rewrites `device T*` / `constant T*` into dptr<T>, so
// every load and store through them is bounds-checked against the bound buffer and counted
// per buffer. Reads through a const pointer return const T&; through a non-const pointer a
// dref<T> proxy tells loads from stores.
#pragma once
#include "lane.h"

namespace metal_emu {

[[noreturn]] __attribute__((noinline, cold)) void oob_fail(const BufferInfo* info, uintptr_t addr, size_t n, bool write);
BufferInfo* find_buffer(const void* p);  // the bound buffer containing p, or the worker's sink

// A lane loading the same address again, with no other device load in between, is not counted
// twice: source like `(w[i] & 0xf) + (w[i] >> 4)` is one load after the GPU compiler's CSE.
template <class T> __attribute__((always_inline)) inline T* dcheck(T* p, BufferInfo* info, bool write) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a < reinterpret_cast<uintptr_t>(info->base) || a + sizeof(T) > reinterpret_cast<uintptr_t>(info->end))
      [[unlikely]]
    oob_fail(info, a, sizeof(T), write);
  if (write) {
    info->written += sizeof(T);
  } else {
    Lane* L = cur_lane();
    uintptr_t key = a + (uintptr_t(sizeof(T)) << 52);
    if (L->last_load != key) {
      L->last_load = key;
      info->read += sizeof(T);
    }
  }
  return p;
}

template <class T> struct dptr;
template <class T> struct dref;

template <class T> struct dptr<const T> {
  using element_type = const T;
  const T* p = nullptr;
  BufferInfo* info = &g_null_buffer;

  dptr() = default;
  dptr(std::nullptr_t) {}
  dptr(const T* q, BufferInfo* i) : p(q), info(i) {}
  dptr(const T* raw) : p(raw), info(find_buffer(raw)) {}
  template <class U> explicit dptr(const dptr<U>& o) : p((const T*)o.p), info(o.info) {}
  template <class U> requires(!std::is_same_v<std::remove_cv_t<U>, T>)
  explicit dptr(U* raw) : p((const T*)raw), info(find_buffer(raw)) {}

  const T& operator[](ptrdiff_t i) const { return *dcheck(p + i, info, false); }
  const T& operator*() const { return *dcheck(p, info, false); }
  const T* operator->() const { return dcheck(p, info, false); }
  explicit operator bool() const { return p != nullptr; }

  template <class I> requires std::is_integral_v<I> dptr operator+(I i) const { return dptr(p + i, info); }
  template <class I> requires std::is_integral_v<I> friend dptr operator+(I i, const dptr& s) { return s + i; }
  template <class I> requires std::is_integral_v<I> dptr operator-(I i) const { return dptr(p - i, info); }
  template <class I> requires std::is_integral_v<I> dptr& operator+=(I i) { p += i; return *this; }
  template <class I> requires std::is_integral_v<I> dptr& operator-=(I i) { p -= i; return *this; }
  dptr& operator++() { ++p; return *this; }
  dptr& operator--() { --p; return *this; }
  dptr operator++(int) { dptr r = *this; ++p; return r; }
  dptr operator--(int) { dptr r = *this; --p; return r; }
  friend ptrdiff_t operator-(const dptr& a, const dptr& b) { return a.p - b.p; }
  friend bool operator==(const dptr& a, const dptr& b) { return a.p == b.p; }
  friend bool operator!=(const dptr& a, const dptr& b) { return a.p != b.p; }
  friend bool operator<(const dptr& a, const dptr& b) { return a.p < b.p; }
  friend bool operator<=(const dptr& a, const dptr& b) { return a.p <= b.p; }
  friend bool operator>(const dptr& a, const dptr& b) { return a.p > b.p; }
  friend bool operator>=(const dptr& a, const dptr& b) { return a.p >= b.p; }
  friend bool operator==(const dptr& a, std::nullptr_t) { return a.p == nullptr; }
};

template <class T> struct dptr : dptr<const T> {
  using base = dptr<const T>;
  using element_type = T;
  dptr() = default;
  dptr(std::nullptr_t) {}
  dptr(T* q, BufferInfo* i) : base(q, i) {}
  dptr(T* raw) : base(raw) {}
  template <class U> explicit dptr(const dptr<U>& o) : base((const T*)o.p, o.info) {}
  template <class U> requires(!std::is_same_v<std::remove_cv_t<U>, T>)
  explicit dptr(U* raw) : base(reinterpret_cast<const T*>(raw)) {}

  T* raw() const { return const_cast<T*>(this->p); }
  dref<T> operator[](ptrdiff_t i) const { return dref<T>(raw() + i, this->info); }
  dref<T> operator*() const { return dref<T>(raw(), this->info); }
  T* operator->() const { return dcheck(raw(), this->info, false); }

  template <class I> requires std::is_integral_v<I> dptr operator+(I i) const { return dptr(raw() + i, this->info); }
  template <class I> requires std::is_integral_v<I> friend dptr operator+(I i, const dptr& s) { return s + i; }
  template <class I> requires std::is_integral_v<I> dptr operator-(I i) const { return dptr(raw() - i, this->info); }
  template <class I> requires std::is_integral_v<I> dptr& operator+=(I i) { this->p += i; return *this; }
  template <class I> requires std::is_integral_v<I> dptr& operator-=(I i) { this->p -= i; return *this; }
  dptr& operator++() { ++this->p; return *this; }
  dptr& operator--() { --this->p; return *this; }
  dptr operator++(int) { dptr r = *this; ++this->p; return r; }
  dptr operator--(int) { dptr r = *this; --this->p; return r; }
};

// A reference into device memory: converting to T is a counted load, assigning a counted store.
template <class T> struct dref {
  T* p;
  BufferInfo* info;
  dref(T* q, BufferInfo* i) : p(q), info(i) {}
  dref(const dref&) = default;
  operator T() const { return *dcheck(p, info, false); }
  T load() const { return *dcheck(p, info, false); }
  template <class U> requires(!std::is_same_v<U, T> && requires(const T& t) { U(t); })
  explicit operator U() const { return U(load()); }
  const dref& operator=(const T& v) const { *dcheck(p, info, true) = v; return *this; }
  const dref& operator=(const dref& o) const { return *this = o.load(); }
  dptr<T> operator&() const { return dptr<T>(p, info); }
#define METAL_EMU_DREF_OP(op)                                                            \
  template <class U> const dref& operator op##=(const U& v) const {                      \
    T t = load();                                                                        \
    t op## = v;                                                                          \
    return *this = t;                                                                    \
  }
  METAL_EMU_DREF_OP(+) METAL_EMU_DREF_OP(-) METAL_EMU_DREF_OP(*) METAL_EMU_DREF_OP(/)
  METAL_EMU_DREF_OP(%) METAL_EMU_DREF_OP(&) METAL_EMU_DREF_OP(|) METAL_EMU_DREF_OP(^)
  METAL_EMU_DREF_OP(<<) METAL_EMU_DREF_OP(>>)
#undef METAL_EMU_DREF_OP
  const dref& operator++() const { T t = load(); ++t; return *this = t; }
  const dref& operator--() const { T t = load(); --t; return *this = t; }
  T operator++(int) const { T t = load(); T u = t; ++u; *this = u; return t; }
  T operator--(int) const { T t = load(); T u = t; --u; *this = u; return t; }
  // element of a device vector: out[i][k] = v
  template <class X = T> requires requires { typename X::value_type; }
  dref<typename X::value_type> operator[](int k) const {
    return dref<typename X::value_type>(reinterpret_cast<typename X::value_type*>(p) + k, info);
  }
};

}  // namespace metal_emu
