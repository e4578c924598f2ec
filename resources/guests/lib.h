/* The test guests' library: SBI calls, console output, pass/fail reporting. */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef long s64;

#define SBI_EXT_BASE 0x10
#define SBI_EXT_HSM 0x48534D
#define SBI_EXT_SRST 0x53525354
#define SBI_EXT_DBCN 0x4442434E
#define SBI_EXT_RVVMM_HVC 0x08485643 /* rvvmm's hypercall EID */

#define SBI_SUCCESS 0
#define SBI_ERR_NOT_SUPPORTED -2
#define SBI_ERR_INVALID_PARAM -3

#define RAM_BASE 0x80000000UL
#define FINISHER 0x100000UL
#define TESTDEV 0x10080000UL

struct sbiret { s64 error; s64 value; };

static inline struct sbiret sbi_call(u64 eid, u64 fid, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    register u64 r0 asm("a0") = a0;
    register u64 r1 asm("a1") = a1;
    register u64 r2 asm("a2") = a2;
    register u64 r3 asm("a3") = a3;
    register u64 r4 asm("a4") = a4;
    register u64 r5 asm("a5") = a5;
    register u64 r6 asm("a6") = fid;
    register u64 r7 asm("a7") = eid;
    asm volatile("ecall"
                 : "+r"(r0), "+r"(r1)
                 : "r"(r2), "r"(r3), "r"(r4), "r"(r5), "r"(r6), "r"(r7)
                 : "memory");
    return (struct sbiret){ (s64)r0, (s64)r1 };
}

#define mmio_write(type, addr, v) (*(volatile type *)(addr) = (v))
#define mmio_read(type, addr) (*(volatile type *)(addr))

extern u64 boot_a0, boot_a1;
void secondary_entry(void);

void puts_(const char *s);          /* DBCN console_write */
void putc_(char c);                 /* DBCN console_write_byte */
void put_hex(u64 v);
void put_dec(s64 v);
void print(const char *a, u64 hex); /* "a" then 0x<hex> then newline */
void shutdown(void);                /* SRST shutdown, reason none */
void fail(int code, const char *what, u64 value); /* prints FAIL and exits rvvmm with code */
void check(int cond, int code, const char *what, u64 value);
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
unsigned long strlen(const char *s);

#endif
