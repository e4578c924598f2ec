/* Entry of every test guest. a0 = hart ID, a1 = dtb address (set by the VMM via ONE_REG).
 * Each hart gets a 16 KiB stack; the boot hart clears .bss and calls main(hartid, dtb);
 * harts started with SBI HSM enter at secondary_entry and call secondary_main(hartid, opaque). */
#define STACK_SHIFT 14
#define MAX_HARTS 32

#ifdef IMAGE_HEADER
    /* A Linux Image header (Documentation/arch/riscv/boot-image-header.rst), so that any VMM
     * that boots Linux loads this guest at RAM + 2 MiB and enters it here (kvmtool ignores the
     * header but loads every kernel there). */
    .section .text.head, "ax"
    .globl _head
_head:
    j _start                    /* code0, code1 */
    .balign 8
    .dword 0x200000             /* text_offset */
    .dword 0x400000             /* image_size, bss included */
    .dword 0                    /* flags: little endian */
    .word 2                     /* version 0.2 */
    .word 0
    .dword 0
    .ascii "RISCV\0\0\0"         /* magic (deprecated) */
    .ascii "RSC\x05"              /* magic2 */
    .word 0
#endif

    .section .text.start
    .globl _start
_start:
#ifdef EARLY_MARK
    /* The first instruction writes '!' (SBI DBCN write_byte): the benchmark's startup clock
     * stops at that byte. a0/a1 (hart ID, dtb) are kept in s0/s1 across the call. */
    mv s0, a0
    mv s1, a1
    li a7, 0x4442434E
    li a6, 2
    li a0, '!'
    ecall
    mv a0, s0
    mv a1, s1
#endif
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, stacks_top
    slli t0, a0, STACK_SHIFT
    sub sp, sp, t0
    /* clear .bss, keeping a0/a1 */
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  la t0, boot_a0
    sd a0, 0(t0)
    la t0, boot_a1
    sd a1, 0(t0)
    call main
    j guest_halt

    .globl secondary_entry
secondary_entry:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, stacks_top
    slli t0, a0, STACK_SHIFT
    sub sp, sp, t0
    call secondary_main
    j guest_halt

    .globl guest_halt
guest_halt:
    wfi
    j guest_halt

    .section .data
    .globl boot_a0, boot_a1
    .balign 8
boot_a0: .dword 0
boot_a1: .dword 0

    .section .bss
    .balign 16
stacks:
    .space (MAX_HARTS << STACK_SHIFT)
stacks_top:
