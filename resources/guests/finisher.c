/* finisher: sifive,test0 FAIL with code 42; rvvmm must exit 42. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    puts_("finisher: exiting with code 42\n");
    mmio_write(u32, FINISHER, (42 << 16) | 0x3333);
    fail(70, "finisher write returned", 0);
}
