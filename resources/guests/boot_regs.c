/* boot_regs: a0 is the hart ID (0) and a1 points at a valid FDT inside RAM. */
#include "lib.h"

static u32 be32(u64 addr)
{
    const volatile u8 *p = (const volatile u8 *)addr;
    return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | p[3];
}

void main(u64 hartid, u64 dtb)
{
    check(hartid == 0, 10, "a0 (hart id) should be 0", hartid);
    check(dtb >= RAM_BASE && (dtb & 7) == 0, 11, "a1 should be an aligned RAM address", dtb);
    check(be32(dtb) == 0xd00dfeed, 12, "FDT magic", be32(dtb));
    u32 total = be32(dtb + 4);
    check(total >= 40 && total <= 0x10000, 13, "FDT totalsize", total);
    check(be32(dtb + 20) == 17, 14, "FDT version", be32(dtb + 20));
    print("boot_regs: a0=0 fdt_size=", total);
    print("boot_regs: a1=", dtb);
    puts_("PASS boot_regs\n");
    shutdown();
}
