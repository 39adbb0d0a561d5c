// Argument struct shared by host C++ and the shader (llama.cpp's kargs habit): plain types only.
#pragma once
#ifdef __METAL_VERSION__
#define KARGS_UINT uint
#else
#include <cstdint>
#define KARGS_UINT uint32_t
#endif

struct GemvArgs {
  KARGS_UINT n_rows;   // N
  KARGS_UINT n_cols;   // K, a multiple of 16
  float scale;
};
