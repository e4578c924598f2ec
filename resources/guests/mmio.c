/* mmio: loads and stores of every width to the test device and to a hole. */
#include "lib.h"

#define HOLE 0x20000000UL

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    mmio_write(u64, TESTDEV + 0x10, 0x1122334455667788UL);
    check(mmio_read(u64, TESTDEV + 0x10) == 0x1122334455667788UL, 40, "64-bit read back",
          mmio_read(u64, TESTDEV + 0x10));
    check(mmio_read(u32, TESTDEV + 0x14) == 0x11223344, 41, "32-bit read of the high half",
          mmio_read(u32, TESTDEV + 0x14));
    check(mmio_read(u16, TESTDEV + 0x10) == 0x7788, 42, "16-bit read", mmio_read(u16, TESTDEV + 0x10));
    check(mmio_read(u8, TESTDEV + 0x17) == 0x11, 43, "8-bit read", mmio_read(u8, TESTDEV + 0x17));
    mmio_write(u8, TESTDEV + 0x10, 0xaa);
    mmio_write(u16, TESTDEV + 0x12, 0xbbcc);
    mmio_write(u32, TESTDEV + 0x14, 0xddeeff00);
    check(mmio_read(u64, TESTDEV + 0x10) == 0xddeeff00bbcc77aaUL, 44, "mixed-width composition",
          mmio_read(u64, TESTDEV + 0x10));
    puts_("mmio: testdev ok (widths 1 2 4 8)\n");

    check(mmio_read(u8, HOLE) == 0, 45, "8-bit hole read", mmio_read(u8, HOLE));
    check(mmio_read(u16, HOLE + 2) == 0, 46, "16-bit hole read", 0);
    check(mmio_read(u32, HOLE + 4) == 0, 47, "32-bit hole read", 0);
    check(mmio_read(u64, HOLE + 8) == 0, 48, "64-bit hole read", 0);
    mmio_write(u8, HOLE, 1);
    mmio_write(u16, HOLE, 2);
    mmio_write(u32, HOLE, 3);
    mmio_write(u64, HOLE, 4);
    /* straddling the test device's end is a hole too */
    check(mmio_read(u32, TESTDEV + 0xffe) == 0, 49, "read straddling testdev's end", 0);
    puts_("mmio: hole ok, guest goes on\n");
    puts_("PASS mmio\n");
    shutdown();
}
