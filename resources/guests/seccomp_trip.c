/* seccomp_trip: writes the test device's seccomp trip register (its last 8 bytes, "SECCOMP!"),
 * which has the vCPU thread make a system call that no seccomp filter allows: under
 * --seccomp true rvvmm must stop with its one SIGSYS line; under --seccomp log it goes on. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    puts_("seccomp_trip: tripping\n");
    mmio_write(u64, TESTDEV + 0xff8, 0x21504d4f43434553UL);
    puts_("seccomp_trip: still running\n");
    shutdown();
}
