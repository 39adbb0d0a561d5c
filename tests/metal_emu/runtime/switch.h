// The fiber context switch: saves the callee-saved registers on the current stack, stores the
// stack pointer, loads the other one and returns into it (no signal-mask system call, unlike
// swapcontext). A new fiber starts in the trampoline, which calls entry(lane).
#pragma once

#if defined(__APPLE__)
#define METAL_EMU_SYM(x) "_" #x
#define METAL_EMU_LOCAL(x) ".private_extern " METAL_EMU_SYM(x) "\n"
#else
#define METAL_EMU_SYM(x) #x
#define METAL_EMU_LOCAL(x) ".hidden " #x "\n.type " #x ",@function\n"
#endif

#if defined(__x86_64__)
asm(".text\n.globl " METAL_EMU_SYM(metal_emu_switch) "\n" METAL_EMU_LOCAL(metal_emu_switch)
    ".p2align 4\n" METAL_EMU_SYM(metal_emu_switch) ":\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".globl " METAL_EMU_SYM(metal_emu_trampoline) "\n" METAL_EMU_LOCAL(metal_emu_trampoline)
    METAL_EMU_SYM(metal_emu_trampoline) ":\n"
    "  movq %r12, %rdi\n  callq *%rbx\n  ud2\n");
// Initial frame popped by metal_emu_switch: r15 r14 r13 r12 rbx rbp, return address.
constexpr int kFrameWords = 7;
inline void* init_frame(void* top, void* arg, void (*fn)(void*), void (*tramp)()) {
  uint64_t* sp = reinterpret_cast<uint64_t*>(static_cast<char*>(top) - 72);  // rsp = 8 mod 16 at entry
  sp[0] = sp[1] = sp[2] = 0;
  sp[3] = reinterpret_cast<uint64_t>(arg);   // r12
  sp[4] = reinterpret_cast<uint64_t>(fn);    // rbx
  sp[5] = 0;                                 // rbp
  sp[6] = reinterpret_cast<uint64_t>(tramp); // return address
  return sp;
}
#elif defined(__aarch64__)
asm(".text\n.globl " METAL_EMU_SYM(metal_emu_switch) "\n" METAL_EMU_LOCAL(metal_emu_switch)
    ".p2align 4\n" METAL_EMU_SYM(metal_emu_switch) ":\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n  stp x21, x22, [sp, #16]\n  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n  stp x27, x28, [sp, #64]\n  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n  stp d14, d15, [sp, #144]\n"
    "  mov x2, sp\n  str x2, [x0]\n  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n  ldp x21, x22, [sp, #16]\n  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n  ldp x27, x28, [sp, #64]\n  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n  ret\n"
    ".globl " METAL_EMU_SYM(metal_emu_trampoline) "\n" METAL_EMU_LOCAL(metal_emu_trampoline)
    METAL_EMU_SYM(metal_emu_trampoline) ":\n"
    "  mov x0, x19\n  blr x20\n  brk #0\n");
inline void* init_frame(void* top, void* arg, void (*fn)(void*), void (*tramp)()) {
  uint64_t* sp = reinterpret_cast<uint64_t*>(static_cast<char*>(top) - 176);
  for (int i = 0; i < 22; i++) sp[i] = 0;
  sp[0] = reinterpret_cast<uint64_t>(arg);    // x19
  sp[1] = reinterpret_cast<uint64_t>(fn);     // x20
  sp[11] = reinterpret_cast<uint64_t>(tramp); // x30
  return sp;
}
#else
#error "metal_emu: fibers are implemented for x86-64 and aarch64 only"
#endif

extern "C" void metal_emu_trampoline() __attribute__((visibility("hidden")));
