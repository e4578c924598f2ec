/* suspend: SBI SUSP system_suspend to RAM. Probed first: absent (KVM before 6.14, or
 * --disable-sbi susp) it says so and powers off. Present: a bad sleep type is refused, then
 * the real call suspends the system; after the VMM's wake-up the hart resumes at the resume
 * address (secondary_entry, which calls secondary_main) with a0 = hart ID and a1 = the
 * opaque value, as the SBI spec says. A counter in .data tells the resumed guest it slept. */
#include "lib.h"

#define SBI_EXT_SUSP 0x53555350
#define SUSPEND_TO_RAM 0
#define OPAQUE 0x5a5a

static volatile u64 suspends = 0;

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    struct sbiret probe = sbi_call(SBI_EXT_BASE, 3, SBI_EXT_SUSP, 0, 0, 0, 0, 0);
    if (probe.error != 0 || probe.value == 0) {
        puts_("@@SUSP absent\n");
        shutdown();
    }
    puts_("@@SUSP present\n");
    struct sbiret bad = sbi_call(SBI_EXT_SUSP, 0, 0x1234, (u64)secondary_entry, OPAQUE, 0, 0, 0);
    check(bad.error == SBI_ERR_INVALID_PARAM, 61, "a bad sleep type was not refused", bad.error);
    puts_("@@SUSP bad sleep type refused\n");
    suspends += 1;
    struct sbiret r = sbi_call(SBI_EXT_SUSP, 0, SUSPEND_TO_RAM, (u64)secondary_entry, OPAQUE, 0, 0, 0);
    fail(62, "system_suspend returned", (u64)r.error);
}

void secondary_main(u64 hartid, u64 opaque)
{
    print("@@SUSP resumed on hart ", hartid);
    print("@@SUSP opaque ", opaque);
    check(suspends == 1, 63, "resumed without having suspended", suspends);
    check(opaque == OPAQUE, 64, "the opaque value was lost", opaque);
    puts_("PASS suspend\n");
    shutdown();
}
