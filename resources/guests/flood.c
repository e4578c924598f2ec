/* flood: 256 KiB of console output through SBI DBCN (4 KiB a call), then power-off. With
 * nobody reading rvvmm's stdout, rvvmm must drop what does not fit after its stall time and
 * let the power-off through. */
#include "lib.h"

static char buf[4096];

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    for (int i = 0; i < 4096; i++)
        buf[i] = (i % 64 == 63) ? '\n' : 'a' + i % 26;
    for (int i = 0; i < 64; i++)
        sbi_call(SBI_EXT_DBCN, 0, sizeof(buf), (u64)buf, 0, 0, 0, 0);
    puts_("flood: done\n");
    shutdown();
}
