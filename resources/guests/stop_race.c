/* stop_race: asks rvvmm to stop through the sifive,test0 finisher, then prints a sentinel
 * forever. A guest that asked to stop must never run another instruction, so the sentinel must
 * never appear. Built twice: as is, it writes exit code 42; with -DREBOOT its first boot writes
 * a reboot (and must run nothing after it either), its second boot exits with code 42. */
#include "lib.h"

/* Beyond the image: RAM keeps it across a reboot, the loader does not touch it. */
#define COUNTER (RAM_BASE + 0x800000)
#define EXIT_42 ((42u << 16) | 0x3333)

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    u32 value = EXIT_42;
#ifdef REBOOT
    volatile u64 *count = (volatile u64 *)COUNTER;
    *count += 1;
    if (*count < 2)
        value = 0x7777;
#endif
    mmio_write(u32, FINISHER, value);
    for (;;)
        puts_("AFTER-STOP\n");
}
