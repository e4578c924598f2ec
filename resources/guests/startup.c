/* startup: its first instruction writes '!' (crt0's EARLY_MARK), then it powers off (SBI SRST).
 * Built with a Linux Image header, so rvvmm and kvmtool both load it at RAM + 2 MiB: the
 * benchmark times each VMM from exec to that byte and to its exit. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    shutdown();
}

