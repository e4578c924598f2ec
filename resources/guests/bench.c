/* bench: times N back-to-back exits of one kind with the time CSR and prints
 *   BENCH kind=<kind> n=<N> ticks=<ticks>
 * through SBI DBCN, then powers off. Built once per kind (-DKIND_*), and run both by rvvmm and
 * by the bench tooling's bare KVM loop, so the two are compared on the very same guest. */
#include "lib.h"

#ifndef N
#define N 20000
#endif
#define HOLE 0x20000000UL

static inline u64 rdtime(void)
{
    u64 t;
    asm volatile("rdtime %0" : "=r"(t));
    return t;
}

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    const char *kind;
    u64 t0 = rdtime();
    for (u64 i = 0; i < N; i++) {
#if defined(KIND_HVC)
        kind = "hypercall";
        sbi_call(SBI_EXT_RVVMM_HVC, 0, i, 0, 0, 0, 0, 0);
#elif defined(KIND_MMIO_READ)
        kind = "mmio_read";
        (void)mmio_read(u32, HOLE);
#elif defined(KIND_MMIO_WRITE)
        kind = "mmio_write";
        mmio_write(u32, HOLE, (u32)i);
#elif defined(KIND_DBCN)
        kind = "dbcn_write_byte";
        sbi_call(SBI_EXT_DBCN, 2, '.', 0, 0, 0, 0, 0);
#elif defined(KIND_SBI_KERNEL)
        kind = "sbi_in_kernel";
        sbi_call(SBI_EXT_BASE, 0 /* get_spec_version */, 0, 0, 0, 0, 0, 0);
#else
#error "pick a KIND_*"
#endif
    }
    u64 t1 = rdtime();
    puts_("\nBENCH kind=");
    puts_(kind);
    puts_(" n=");
    put_dec(N);
    puts_(" ticks=");
    put_dec((s64)(t1 - t0));
    puts_("\n");
    shutdown();
}
