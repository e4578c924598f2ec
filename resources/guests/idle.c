/* idle: hart 0 waits in wfi forever and never starts the other harts. The VMM's CPU time over
 * this guest's life shows what idle and stopped harts cost the host (ideally nothing). */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    puts_("idle: hart 0 in wfi, no other hart started\n");
    for (;;)
        asm volatile("wfi");
}
