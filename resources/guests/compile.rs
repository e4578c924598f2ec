// How a bare-metal test guest is compiled: included (`include!`) by the crate's build.rs,
// which builds the guests the KVM integration tests boot, and by xtask, which builds the
// lab's. One place, so the two builds cannot drift apart.

/// Flags of every guest: freestanding RV64GC code linked at 0x8020_0000 by guest.ld.
const GUEST_CFLAGS: &[&str] = &[
    "-march=rv64gc",
    "-mabi=lp64d",
    "-mcmodel=medany",
    "-ffreestanding",
    "-nostdlib",
    "-nostartfiles",
    "-static",
    "-fno-pic",
    "-no-pie",
    "-fno-builtin",
    "-O2",
    "-Wall",
    "-Werror",
    "-Wno-main",
    "-Wl,--no-warn-rwx-segments",
    "-Wl,--build-id=none",
    "-T",
    "guest.ld",
];

/// `cc` compiling guest `source` (resources/guests/SOURCE.c, with crt0.S and lib.c) and its
/// `extra` flags (space-separated) to the ELF `elf`; run it in `src`, resources/guests.
fn guest_compile(
    cc: &str,
    src: &std::path::Path,
    source: &str,
    extra: &str,
    elf: &std::path::Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(cc);
    cmd.current_dir(src)
        .args(GUEST_CFLAGS)
        .args(extra.split_whitespace())
        .args(["crt0.S", "lib.c", &format!("{source}.c"), "-o"])
        .arg(elf);
    cmd
}
