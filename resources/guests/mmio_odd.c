/* mmio_odd: what a guest can do to MMIO besides aligned integer loads and stores, one access
 * a build (-DODD_LW: a misaligned lw, -DODD_SW: a misaligned sw, else an fld). Each either
 * traps in the guest (the handler below reports the cause), is emulated (the guest goes on),
 * or is one KVM refuses: then rvvmm must end with its one line naming the hart and the pc,
 * never crash or hang. */
#include "lib.h"

static volatile u64 trap_cause, trap_value, traps;

/* Records the trap and steps over the 4-byte instruction (the accesses below are written
 * with .option norvc, so each is 4 bytes). */
__attribute__((interrupt("supervisor"), aligned(4))) static void on_trap(void)
{
    u64 sepc;
    asm volatile("csrr %0, scause" : "=r"(trap_cause));
    asm volatile("csrr %0, stval" : "=r"(trap_value));
    asm volatile("csrr %0, sepc" : "=r"(sepc));
    asm volatile("csrw sepc, %0" ::"r"(sepc + 4));
    traps++;
}

static __attribute__((unused)) u64 load32(u64 addr)
{
    u64 v = 0;
    asm volatile(".option push\n.option norvc\nlw %0, 0(%1)\n.option pop" : "+r"(v) : "r"(addr) : "memory");
    return v;
}

static __attribute__((unused)) void store32(u64 addr, u64 v)
{
    asm volatile(".option push\n.option norvc\nsw %0, 0(%1)\n.option pop" ::"r"(v), "r"(addr) : "memory");
}

static void report(const char *what, u64 before, u64 value)
{
    puts_(what);
    if (traps != before) {
        print(": the guest took trap cause ", trap_cause);
    } else {
        print(": emulated, value ", value);
    }
}

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    asm volatile("csrw stvec, %0" ::"r"((u64)on_trap));
    mmio_write(u64, TESTDEV + 0x20, 0x8877665544332211UL);
    u64 before = traps;
#if defined(ODD_LW)
    puts_("mmio_odd: misaligned lw from MMIO next\n");
    u64 v = load32(TESTDEV + 0x21);
    report("mmio_odd: misaligned lw", before, v);
#elif defined(ODD_SW)
    puts_("mmio_odd: misaligned sw to MMIO next\n");
    store32(TESTDEV + 0x23, 0xa1b2c3d4);
    report("mmio_odd: misaligned sw", before, mmio_read(u64, TESTDEV + 0x20));
#else
    /* FP on: sstatus.FS = Initial. */
    asm volatile("csrs sstatus, %0" ::"r"(1UL << 13));
    puts_("mmio_odd: fld from MMIO next\n");
    double d;
    asm volatile("fld %0, 0(%1)" : "=f"(d) : "r"(TESTDEV + 0x20) : "memory");
    (void)d;
    report("mmio_odd: fld", before, 0);
#endif
    check(mmio_read(u64, TESTDEV + 0x28) == 0, 61, "testdev read", 0);
    puts_("mmio_odd: the test device still answers\n");
    shutdown();
}
