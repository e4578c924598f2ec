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

static char *append(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *append_dec(char *p, u64 v)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = '0' + v % 10;
        v /= 10;
    } while (v);
    while (n)
        *p++ = digits[--n];
    return p;
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
    /* One DBCN write for the whole line, so nothing the VMM logs can land inside it. */
    char line[128];
    char *p = line;
    p = append(p, "\nBENCH kind=");
    p = append(p, kind);
    p = append(p, " n=");
    p = append_dec(p, N);
    p = append(p, " ticks=");
    p = append_dec(p, t1 - t0);
    p = append(p, "\n");
    *p = 0;
    puts_(line);
    shutdown();
}
