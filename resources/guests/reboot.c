/* reboot: SRST cold reboot; rvvmm restarts the guest on the same RAM. A counter beyond the
 * image (RAM keeps it, the loader does not touch it) tells the boots apart. */
#include "lib.h"

#define COUNTER (RAM_BASE + 0x800000)
/* Boots before it powers off (the lab's storm case builds it with -DREBOOTS=100). */
#ifndef REBOOTS
#define REBOOTS 2
#endif

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    volatile u64 *count = (volatile u64 *)COUNTER;
    *count += 1;
    print("reboot: boot ", *count);
    if (*count < REBOOTS) {
        sbi_call(SBI_EXT_SRST, 0, 1 /* cold reboot */, 0, 0, 0, 0, 0);
        fail(50, "SRST reboot returned", 0);
    }
    puts_("PASS reboot\n");
    shutdown();
}
