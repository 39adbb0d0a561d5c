// The kernel and function-constant registry filled by the generated launchers, and the C entry
// points that describe a library to Python.
#include <cstring>

#include "internal.h"

namespace metal_emu {

// Function-local statics: launchers register from static constructors of other objects.
static std::vector<const KernelEntry*>& kernel_list() {
  static std::vector<const KernelEntry*> v;
  return v;
}
const std::vector<const KernelEntry*>& kernels() { return kernel_list(); }
static std::vector<FcEntry>& fcs() {
  static std::vector<FcEntry> v;
  return v;
}
static std::vector<char>& fc_flags() {
  static std::vector<char> v;
  return v;
}
std::mutex& dispatch_mutex() {
  static std::mutex m;
  return m;
}

Registrar::Registrar(const KernelEntry* k, int nk, const FcEntry* f, int nf) {
  for (int i = 0; i < nk; i++) kernel_list().push_back(&k[i]);
  for (int i = 0; i < nf; i++) {
    fcs().push_back(f[i]);
    fc_flags().push_back(0);
  }
}
bool fc_defined(const void* addr) {
  for (size_t i = 0; i < fcs().size(); i++)
    if (fcs()[i].addr == addr) return fc_flags()[i];
  return true;
}

}  // namespace metal_emu

using namespace metal_emu;

API int metal_emu_kernel_count() { return int(kernels().size()); }
API const char* metal_emu_kernel_name(int i) { return kernels()[size_t(i)]->host_name; }
API unsigned metal_emu_kernel_max_threads(int i) { return kernels()[size_t(i)]->max_threads; }
API const char* metal_emu_kernel_file(int i) { return kernels()[size_t(i)]->file; }
API int metal_emu_kernel_line(int i) { return kernels()[size_t(i)]->line; }
API int metal_emu_fc_count() { return int(fcs().size()); }
API void metal_emu_fc_info(int i, int* index, const char** name, int* size, int* type) {
  const FcEntry& f = fcs()[size_t(i)];
  *index = f.index;
  *name = f.name;
  *size = f.size;
  *type = f.type;
}
API void metal_emu_fc_set(int i, const void* value, int defined) {
  std::lock_guard<std::mutex> lock(dispatch_mutex());
  FcEntry& f = fcs()[size_t(i)];
  if (defined) memcpy(f.addr, value, size_t(f.size));
  else memset(f.addr, 0, size_t(f.size));
  fc_flags()[size_t(i)] = char(defined != 0);
}
API int metal_emu_launch_desc_size() { return int(sizeof(LaunchDesc)); }
