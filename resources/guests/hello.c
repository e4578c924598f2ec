/* hello: one line through SBI DBCN, then SRST shutdown. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    puts_("Hello from a RISC-V guest on rvvmm!\n");
    shutdown();
}
