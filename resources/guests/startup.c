/* startup: powers off at once (SBI SRST). Built with a Linux Image header, so rvvmm and kvmtool
 * both load it at RAM + 2 MiB: the benchmark times exec to exit of each VMM on it. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    shutdown();
}

