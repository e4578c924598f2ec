#include "lib.h"

unsigned long strlen(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

void *memset(void *d, int c, unsigned long n)
{
    volatile u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    volatile u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

void puts_(const char *s)
{
    u64 n = strlen(s);
    while (n) {
        struct sbiret r = sbi_call(SBI_EXT_DBCN, 0, n, (u64)s, 0, 0, 0, 0);
        if (r.error || r.value <= 0)
            return;
        s += r.value;
        n -= r.value;
    }
}

void putc_(char c)
{
    sbi_call(SBI_EXT_DBCN, 2, (u8)c, 0, 0, 0, 0, 0);
}

void put_hex(u64 v)
{
    char buf[19];
    buf[0] = '0';
    buf[1] = 'x';
    for (int i = 0; i < 16; i++)
        buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
    buf[18] = 0;
    puts_(buf);
}

void put_dec(s64 v)
{
    char buf[24];
    int i = 23;
    int neg = v < 0;
    u64 u = neg ? -(u64)v : (u64)v;
    buf[i] = 0;
    do {
        buf[--i] = '0' + u % 10;
        u /= 10;
    } while (u);
    if (neg)
        buf[--i] = '-';
    puts_(&buf[i]);
}

/* One DBCN write for the whole line, so nothing the VMM logs lands inside it. */
void print(const char *a, u64 hex)
{
    char line[160];
    unsigned long n = 0;
    while (*a && n < sizeof(line) - 20)
        line[n++] = *a++;
    line[n++] = '0';
    line[n++] = 'x';
    for (int i = 0; i < 16; i++)
        line[n++] = "0123456789abcdef"[(hex >> (60 - 4 * i)) & 0xf];
    line[n++] = '\n';
    line[n] = 0;
    puts_(line);
}

void shutdown(void)
{
    sbi_call(SBI_EXT_SRST, 0, 0 /* shutdown */, 0 /* no reason */, 0, 0, 0, 0);
    puts_("FAIL: SRST shutdown returned\n");
    mmio_write(u32, FINISHER, (99 << 16) | 0x3333);
    for (;;)
        asm volatile("wfi");
}

void fail(int code, const char *what, u64 value)
{
    puts_("FAIL: ");
    puts_(what);
    puts_(" value=");
    put_hex(value);
    puts_("\n");
    mmio_write(u32, FINISHER, ((u32)code << 16) | 0x3333);
    for (;;)
        asm volatile("wfi");
}

void check(int cond, int code, const char *what, u64 value)
{
    if (!cond)
        fail(code, what, value);
}

/* Harts started by a guest that does not expect them just wait. */
__attribute__((weak)) void secondary_main(u64 hartid, u64 opaque)
{
    (void)hartid;
    (void)opaque;
    for (;;)
        asm volatile("wfi");
}
