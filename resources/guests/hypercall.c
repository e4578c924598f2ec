/* hypercall: rvvmm's hypercall EID round trip, and EIDs nobody handles. */
#include "lib.h"

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    struct sbiret r = sbi_call(SBI_EXT_RVVMM_HVC, 0, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555,
                               0x6666666666666666UL);
    check(r.error == 0, 30, "hypercall 0 error", r.error);
    check(r.value == 1, 31, "hypercall 0 ABI version", r.value);
    print("hypercall: abi version ", r.value);
    r = sbi_call(SBI_EXT_RVVMM_HVC, 7, 1, 2, 3, 4, 5, 6);
    check(r.error == SBI_ERR_NOT_SUPPORTED, 32, "hypercall 7", r.error);
    r = sbi_call(0x08000001, 0, 0, 0, 0, 0, 0, 0);
    check(r.error == SBI_ERR_NOT_SUPPORTED, 33, "experimental EID 0x08000001", r.error);
    r = sbi_call(0x09000000, 3, 0, 0, 0, 0, 0, 0);
    check(r.error == SBI_ERR_NOT_SUPPORTED, 34, "vendor EID 0x09000000", r.error);
    r = sbi_call(0x485643, 0, 0, 0, 0, 0, 0, 0);
    check(r.error == SBI_ERR_NOT_SUPPORTED, 35, "EID 0x485643 (kept by KVM)", r.error);
    /* the base extension is KVM's: probe DBCN and the hypercall EID */
    r = sbi_call(SBI_EXT_BASE, 3, SBI_EXT_DBCN, 0, 0, 0, 0, 0);
    check(r.error == 0 && r.value != 0, 36, "BASE probe_extension(DBCN)", r.value);
    puts_("PASS hypercall\n");
    shutdown();
}
