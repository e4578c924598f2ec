/* smp: hart 0 starts hart 1 with SBI HSM; hart 1 prints its hart ID and the opaque value. */
#include "lib.h"

static volatile u64 hart1_seen = ~0UL;

void secondary_main(u64 hartid, u64 opaque)
{
    print("smp: hello from hart ", hartid);
    check(opaque == 0x5a5a, 80, "opaque argument", opaque);
    hart1_seen = hartid;
    for (;;)
        asm volatile("wfi");
}

void main(u64 hartid, u64 dtb)
{
    (void)dtb;
    check(hartid == 0, 81, "boot hart", hartid);
    struct sbiret r = sbi_call(SBI_EXT_HSM, 2 /* get_status */, 1, 0, 0, 0, 0, 0);
    check(r.error == 0 && r.value == 1 /* STOPPED */, 82, "hart 1 stopped at boot", r.value);
    r = sbi_call(SBI_EXT_HSM, 0 /* hart_start */, 1, (u64)secondary_entry, 0x5a5a, 0, 0, 0);
    check(r.error == 0, 83, "hart_start", r.error);
    for (u64 i = 0; i < 2000000000UL && hart1_seen == ~0UL; i++)
        asm volatile("nop");
    check(hart1_seen == 1, 84, "hart 1 ran", hart1_seen);
    r = sbi_call(SBI_EXT_HSM, 2, 1, 0, 0, 0, 0, 0);
    /* Hart 1 now sits in WFI; KVM reports a vCPU blocked there as SUSPENDED (4), not STARTED,
     * whenever the query lands while it is blocked: both mean it runs. */
    check(r.error == 0 && (r.value == 0 /* STARTED */ || r.value == 4 /* SUSPENDED */), 85,
          "hart 1 started", r.value);
    puts_("PASS smp\n");
    shutdown();
}
