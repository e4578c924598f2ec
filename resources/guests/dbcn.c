/* dbcn: console_write, write_byte and read, and their error paths. */
#include "lib.h"

static char buf[64];

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    static const char msg[] = "dbcn: write ok\n";
    struct sbiret r = sbi_call(SBI_EXT_DBCN, 0, sizeof(msg) - 1, (u64)msg, 0, 0, 0, 0);
    check(r.error == 0 && r.value == sizeof(msg) - 1, 20, "console_write count", r.value);

    const char *wb = "dbcn: write_byte ok\n";
    while (*wb) {
        r = sbi_call(SBI_EXT_DBCN, 2, (u8)*wb++, 0, 0, 0, 0, 0);
        check(r.error == 0, 21, "console_write_byte", r.error);
    }

    r = sbi_call(SBI_EXT_DBCN, 0, 0, 0, 0, 0, 0, 0);
    check(r.error == 0 && r.value == 0, 22, "num_bytes = 0", r.error);
    r = sbi_call(SBI_EXT_DBCN, 0, 16, 0x1000, 0, 0, 0, 0);
    check(r.error == SBI_ERR_INVALID_PARAM, 23, "write outside RAM", r.error);
    r = sbi_call(SBI_EXT_DBCN, 0, 16, (u64)msg, 1, 0, 0, 0);
    check(r.error == SBI_ERR_INVALID_PARAM, 24, "write with base_addr_hi", r.error);
    r = sbi_call(SBI_EXT_DBCN, 0, ~0UL, (u64)msg, 0, 0, 0, 0);
    check(r.error == SBI_ERR_INVALID_PARAM, 25, "write of 2^64-1 bytes", r.error);
    r = sbi_call(SBI_EXT_DBCN, 1, 16, 0x1000, 0, 0, 0, 0);
    check(r.error == SBI_ERR_INVALID_PARAM, 26, "read outside RAM", r.error);
    r = sbi_call(SBI_EXT_DBCN, 7, 0, 0, 0, 0, 0, 0);
    check(r.error == SBI_ERR_NOT_SUPPORTED, 27, "unknown DBCN function", r.error);
    puts_("dbcn: errors ok\n");

    /* read: the lab feeds "ping" on stdin; collect up to 4 bytes, bounded tries. */
    u64 got = 0;
    for (int tries = 0; tries < 20000 && got < 4; tries++) {
        r = sbi_call(SBI_EXT_DBCN, 1, 4 - got, (u64)buf + got, 0, 0, 0, 0);
        check(r.error == 0, 28, "console_read", r.error);
        got += r.value;
    }
    buf[got] = 0;
    puts_("dbcn: read '");
    puts_(buf);
    puts_("'\n");
    puts_("PASS dbcn\n");
    shutdown();
}
