/* sysfail: SRST shutdown with reason "system failure"; rvvmm must exit non-zero. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    puts_("sysfail: reporting a system failure\n");
    sbi_call(SBI_EXT_SRST, 0, 0 /* shutdown */, 1 /* system failure */, 0, 0, 0, 0);
    fail(60, "SRST returned", 0);
}
