/* exits: EXITS back-to-back exits (hypercalls, MMIO reads and writes), then shutdown. */
#include "lib.h"

#ifndef EXITS
#define EXITS 200000
#endif

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    for (u64 i = 0; i < EXITS / 4; i++) {
        struct sbiret r = sbi_call(SBI_EXT_RVVMM_HVC, 0, i, 0, 0, 0, 0, 0);
        if (r.error != 0 || r.value != 1)
            fail(90, "hypercall in the loop", r.error);
        mmio_write(u64, TESTDEV, i);
        if (mmio_read(u64, TESTDEV) != i)
            fail(91, "testdev read back in the loop", i);
        mmio_write(u32, 0x20000000UL, (u32)i);
    }
    print("exits: done ", EXITS);
    puts_("PASS exits\n");
    shutdown();
}
