/* sbi_probe: SBI base probe_extension answers for DBCN, HSM and SRST, reported on the 16550
 * UART (not through DBCN, which --disable-sbi dbcn may have switched off), then SRST shutdown. */
#include "lib.h"

#define UART_THR 0x10000000UL

static void uart_puts(const char *s)
{
    while (*s)
        mmio_write(u8, UART_THR, (u8)*s++);
}

static void report(const char *name, u64 eid)
{
    struct sbiret r = sbi_call(SBI_EXT_BASE, 3, eid, 0, 0, 0, 0, 0);
    uart_puts("sbi_probe: ");
    uart_puts(name);
    uart_puts(r.error == 0 && r.value != 0 ? "=1\n" : "=0\n");
}

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    report("dbcn", SBI_EXT_DBCN);
    report("hsm", SBI_EXT_HSM);
    report("srst", SBI_EXT_SRST);
    uart_puts("sbi_probe: done\n");
    shutdown();
}
