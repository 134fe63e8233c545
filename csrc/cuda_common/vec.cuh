// 16-byte vectorised global loads/stores and the host-side test for when they are legal.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace alae_fast {

// VEC consecutive elements moved as one aligned access (one LDG.128 when VEC*sizeof(T) == 16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

template <int VEC, typename T>
__device__ __forceinline__ Vec<T, VEC> load_vec(const T* __restrict__ p) {
  return *reinterpret_cast<const Vec<T, VEC>*>(p);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const Vec<T, VEC>& value) {
  *reinterpret_cast<Vec<T, VEC>*>(p) = value;
}

// Elements per 16-byte access.
template <typename T>
constexpr int vec16() {
  return 16 / int(sizeof(T));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Rows of `row_length` elements of `element_size` bytes move 16 bytes at a time when a row is a
// whole number of 16-byte vectors and every buffer of `ptrs` starts 16-byte aligned.
inline bool vectorisable(int64_t row_length, int64_t element_size, std::initializer_list<const void*> ptrs) {
  bool ok = row_length * element_size % 16 == 0;
  for (const void* p : ptrs) ok = ok && aligned16(p);
  return ok;
}

}  // namespace alae_fast
