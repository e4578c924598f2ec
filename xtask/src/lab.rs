//! The nested lab: fetch, build, boot L1 under QEMU, run the plan, judge the console.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cpio::{self, Entry};
use crate::host::{self, RISCV_TARGET};
use crate::kernel::{self, Kernel, Unpacked};
use crate::mode::Mode;
use crate::paths;
use crate::plan::{self, Case};
use crate::progress::Step;

/// A Debian pool file pinned by sha256.
pub(crate) struct Pinned {
    pub(crate) pool_path: &'static str,
    pub(crate) sha256: &'static str,
}

const BUSYBOX_DEB: Pinned = Pinned {
    pool_path: "pool/main/b/busybox/busybox-static_1.37.0-6+b9_riscv64.deb",
    sha256: "4add476d2b185c5b487c285b38d790f0881a7e4a8e2ddde835f917e770eb8633",
};
/// Debian's U-Boot for QEMU: its qemu-riscv64_smode build is the S-mode payload QEMU users
/// boot after OpenSBI, and what the U-Boot cases boot under rvvmm.
const UBOOT_DEB: Pinned = Pinned {
    pool_path: "pool/main/u/u-boot/u-boot-qemu_2025.01-3+deb13u1_all.deb",
    sha256: "a3751b5d36a411457b2e7a2834cdce0e5d40493e6588a65d51c5603740a0c71c",
};

/// Debian's GRUB for riscv64 EFI (its modules; the image is made with the chroot's
/// grub-mkimage): what a Debian install boots from U-Boot's EFI.
const GRUB_DEB: Pinned = Pinned {
    pool_path: "pool/main/g/grub2/grub-efi-riscv64-bin_2.12-9+deb13u4_riscv64.deb",
    sha256: "fb6d26ff93676e7cae7287bb3c138ab0f7f1b7998cc960e2e63379d79b0ddf83",
};

/// Debian's virtiofsd for riscv64 and the shared libraries it needs (the cross toolchain's
/// glibc is older than the 2.39 it asks for): the vhost-user-fs backend the virtio-fs cases
/// run in L1. L1 runs it through the dynamic loader with its libraries in /vfs/lib.
const VIRTIOFSD_DEBS: &[(&str, Pinned)] = &[
    (
        "virtiofsd",
        Pinned {
            pool_path: "pool/main/r/rust-virtiofsd/virtiofsd_1.13.2-1+deb13u1_riscv64.deb",
            sha256: "acae387dc93782baa58f88acbb29fe27cb2d3b092c4df560de7537c176065157",
        },
    ),
    (
        "libc6",
        Pinned {
            pool_path: "pool/main/g/glibc/libc6_2.41-12+deb13u5_riscv64.deb",
            sha256: "107a6b5d327f81122549b1c5bfa9cfdea2532c4fddd9e0211a915bdfdf22d7f5",
        },
    ),
    (
        "libgcc-s1",
        Pinned {
            pool_path: "pool/main/g/gcc-14/libgcc-s1_14.2.0-19_riscv64.deb",
            sha256: "16d3f9f534028615413d23f649e5d246baef48fe7db739ad564ef8b9a6e5587c",
        },
    ),
    (
        "libcap-ng0",
        Pinned {
            pool_path: "pool/main/libc/libcap-ng/libcap-ng0_0.8.5-4+b1_riscv64.deb",
            sha256: "2d3a19435ca2479b992f47d7db0b8c598ce05cf88cb0103d91b3d76a1524681b",
        },
    ),
    (
        "libseccomp2",
        Pinned {
            pool_path: "pool/main/libs/libseccomp/libseccomp2_2.6.0-2_riscv64.deb",
            sha256: "17f38aef157c29f0b6633c5af9dec711a93aeb0af960ffd649034ee675a14c67",
        },
    ),
];

/// The libraries of [`VIRTIOFSD_DEBS`] virtiofsd loads (and the loader itself).
const VIRTIOFSD_LIBS: &[&str] = &[
    "ld-linux-riscv64-lp64d.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libcap-ng.so.0",
    "libseccomp.so.2",
];

/// virtiofsd and its libraries, as (path in L1, bytes): /vfs/virtiofsd, /vfs/lib/*.
fn virtiofsd_files(mirror: &str, cache: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut dirs = Vec::new();
    for (name, pin) in VIRTIOFSD_DEBS {
        let deb = fetch_pinned(mirror, pin, cache)?;
        dirs.push(unpack_deb(&deb, &cache.join("virtiofsd").join(name))?);
    }
    let find = |file: &str| {
        dirs.iter()
            .flat_map(|d| {
                [
                    d.join("usr/libexec").join(file),
                    d.join("usr/lib/riscv64-linux-gnu").join(file),
                    d.join("lib/riscv64-linux-gnu").join(file),
                    d.join("usr/lib").join(file),
                    d.join("lib").join(file),
                ]
            })
            .find(|p| p.exists())
            .ok_or(format!("no {file} in the virtiofsd packages"))
    };
    let mut files = vec![("vfs/virtiofsd".to_string(), read(&find("virtiofsd")?)?)];
    for lib in VIRTIOFSD_LIBS {
        files.push((format!("vfs/lib/{lib}"), read(&find(lib)?)?));
    }
    Ok(files)
}

/// The suite whose QEMU (10.x) boots L1 with AIA; bookworm's 7.2 hangs in AIA mode.
const QEMU_SUITE: &str = "trixie";

/// A whole L1 boot may take this long before it counts as hung. Each case has its own time
/// limit inside L1; this only catches L1 itself hanging. 900 s was too short once the plan
/// grew: on a slower day the AIA pass ran past it with 13 cases left (its cases took 800 s in
/// the PLIC pass of the same run).
const L1_TIMEOUT: Duration = Duration::from_secs(1800);

/// The guests built from resources/guests, and extra C flags of each.
const GUESTS: &[(&str, &str, &str)] = &[
    ("hello", "hello", ""),
    ("boot_regs", "boot_regs", ""),
    ("dbcn", "dbcn", ""),
    ("hypercall", "hypercall", ""),
    ("mmio", "mmio", ""),
    ("virtio_abuse", "virtio_abuse", ""),
    ("mmio_odd_lw", "mmio_odd", "-DODD_LW"),
    ("mmio_odd_sw", "mmio_odd", "-DODD_SW"),
    ("mmio_odd_fld", "mmio_odd", ""),
    ("reboot", "reboot", ""),
    ("reboot_storm", "reboot", "-DREBOOTS=100"),
    ("suspend", "suspend", ""),
    ("sysfail", "sysfail", ""),
    ("finisher", "finisher", ""),
    ("stop_race", "stop_race", ""),
    ("stop_race_reboot", "stop_race", "-DREBOOT"),
    ("smp", "smp", ""),
    ("idle", "idle", ""),
    ("flood", "flood", ""),
    ("seccomp_trip", "seccomp_trip", ""),
    ("sbi_probe", "sbi_probe", ""),
    ("exits", "exits", "-DEXITS=200000"),
    ("bench_hypercall", "bench", "-DKIND_HVC"),
    ("bench_mmio_read", "bench", "-DKIND_MMIO_READ"),
    ("bench_mmio_write", "bench", "-DKIND_MMIO_WRITE"),
    ("bench_dbcn_write_byte", "bench", "-DKIND_DBCN"),
    ("bench_sbi_in_kernel", "bench", "-DKIND_SBI_KERNEL"),
    ("bench_startup", "startup", "-DIMAGE_HEADER -DEARLY_MARK"),
    // The same guest as a flat binary, for bare-kvm.
    ("bench_startup_flat", "startup", "-DEARLY_MARK"),
];

/// Everything a boot of L1 needs, ready on disk.
pub(crate) struct Prepared {
    /// This tree's target/lab, held for the whole run (see [`lock_work_dir`]).
    _lock: fs::File,
    /// The kernels to run, each as L1 and as the L2 Linux guest.
    pub(crate) kernels: Vec<KernelFiles>,
    /// A dtb dumped from the lab's QEMU (`-M virt -smp 2`), as a user would bring.
    qemu_dtb: Vec<u8>,
    busybox: Vec<u8>,
    rvvmm: Vec<u8>,
    guests: Vec<(String, Vec<u8>)>,
    chroot: PathBuf,
    /// A dtb dumped from the lab's QEMU with `aia=aplic-imsic`.
    qemu_aia_dtb: Vec<u8>,
    /// A small ext4 image for the virtio-blk cases.
    disk_image: Vec<u8>,
    /// The benchmark floor (xtask/bare-kvm), cross-built.
    bare_kvm: Vec<u8>,
    /// rvvmm built with `--features exit-timing`, for the bench.
    rvvmm_timing: Vec<u8>,
    /// The bench's startup clock (xtask/exec-timer), cross-built.
    exec_timer: Vec<u8>,
    /// A pseudo-terminal for kvmtool's console input (xtask/on-pty), cross-built.
    on_pty: Vec<u8>,
    /// The host end of the vsock cases (xtask/vsock-tool; the L2 initramfs has it too).
    vsock_tool: Vec<u8>,
    /// virtiofsd and its libraries (`vfs/...` in L1), for the virtio-fs cases.
    virtiofsd: Vec<(String, Vec<u8>)>,
    /// An optional kvmtool binary for the benchmark (`--lkvm`).
    pub(crate) lkvm: Option<Vec<u8>>,
    /// An earlier commit's measuring build, for the benchmark (`--baseline`).
    pub(crate) baseline_timing: Option<Vec<u8>>,
    /// U-Boot (qemu-riscv64_smode): the flat `u-boot.bin` and the `uboot.elf`.
    uboot_bin: Vec<u8>,
    uboot_elf: Vec<u8>,
    /// GRUB for riscv64 EFI, as on each boot disk's EFI partition.
    grub_efi: Vec<u8>,
    /// rvvmm's test executables built for riscv64 (stripped), by name: they run in L1, where
    /// their KVM tests boot guests on real KVM.
    test_executables: Vec<(String, Vec<u8>)>,
    /// xtask itself built for riscv64, to run the plan natively inside L1.
    xtask: Vec<u8>,
}

/// What one kernel brings to an L1 boot: itself, its modules and the L2 files made with it.
pub(crate) struct KernelFiles {
    pub(crate) unpacked: Unpacked,
    kvm_ko: Vec<u8>,
    /// L1's tun.ko (taps for the virtio-net cases).
    tun_ko: Vec<u8>,
    /// The L2 guest's initramfs (busybox + resources/lab/l2-init.sh + this kernel's modules).
    l2_initrd: Vec<u8>,
    /// A distro-style disk: an MBR, an ext4 partition with extlinux/extlinux.conf, the
    /// kernel and the L2 initramfs, and a second one with GRUB as the EFI removable-media
    /// binary ([`boot_disk`]).
    boot_disk: Vec<u8>,
}

impl KernelFiles {
    pub(crate) fn name(&self) -> &'static str {
        self.unpacked.kernel.name()
    }

    /// `lab[stable/plic]`'s inside: which kernel, which mode.
    pub(crate) fn label(&self, mode: Mode) -> String {
        format!("{}/{}", self.name(), mode.name())
    }
}

impl Prepared {
    /// The QEMU version line the chroot recorded.
    pub(crate) fn qemu_version(&self) -> String {
        fs::read_to_string(self.chroot.join(".rvvmm-qemu-ready"))
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_string()
    }
}

/// Runs `cases` (all when empty) on each kernel in each mode; prints a line per case and the
/// summary line.
pub fn run(kernels: &[Kernel], modes: &[Mode], only: &[String]) -> Result<bool, String> {
    let cases: Vec<Case> = plan::cases()
        .into_iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| o == c.name))
        .collect();
    if cases.is_empty() {
        return Err(format!("no lab case is named {only:?}"));
    }
    let prepared = prepare(kernels)?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (ki, k) in prepared.kernels.iter().enumerate() {
        // A case of rvvmm's own logic runs on the first kernel only.
        let (cases, elsewhere): (Vec<Case>, Vec<Case>) = cases
            .iter()
            .cloned()
            .partition(|c| ki == 0 || !c.one_kernel);
        if !elsewhere.is_empty() {
            println!(
                "lab[{}] {} cases of rvvmm's own logic, which no KVM version changes, ran on the {} kernel only: {}",
                k.name(),
                elsewhere.len(),
                prepared.kernels[0].name(),
                names(&elsewhere)
            );
        }
        // A case that needs another KVM than this kernel's is skipped, and says why.
        let cases: Vec<Case> = cases
            .into_iter()
            .filter(|c| match c.needs.skip_on(&k.unpacked.release) {
                Some(why) => {
                    println!("lab[{}] {:<18} skipped ({why})", k.name(), c.name);
                    skipped += 1;
                    false
                }
                None => true,
            })
            .collect();
        for (i, &mode) in modes.iter().enumerate() {
            let label = k.label(mode);
            // A case that touches no interrupt controller runs in the first mode only.
            let (cases, elsewhere): (Vec<Case>, Vec<Case>) =
                cases.iter().cloned().partition(|c| i == 0 || !c.one_mode);
            if !elsewhere.is_empty() {
                println!(
                    "lab[{label}] {} cases that take no interrupt, or prove no interrupt path, ran in {} mode only: {}",
                    elsewhere.len(),
                    modes[0].name(),
                    names(&elsewhere)
                );
            }
            // On a later kernel, a case whose KVM interface is the same in both modes runs in
            // AIA mode only.
            let (cases, elsewhere): (Vec<Case>, Vec<Case>) = cases
                .into_iter()
                .partition(|c| ki == 0 || mode == Mode::Aia || !c.later_kernels_aia_only);
            if !elsewhere.is_empty() {
                println!(
                    "lab[{label}] {} cases whose KVM interface is the same in both modes run in aia mode only on this kernel: {}",
                    elsewhere.len(),
                    names(&elsewhere)
                );
            }
            if cases.is_empty() {
                continue;
            }
            let started = Instant::now();
            let log = boot_l1(&prepared, k, mode, &cases)?;
            if let Some(header) = log.lines().find(|l| l.starts_with("@@LAB ")) {
                println!(
                    "lab[{label}] L1: {}",
                    header.trim_start_matches("@@LAB ").trim_end()
                );
            }
            let (p, f) = plan::report(&cases, &label, mode, &log);
            passed += p;
            failed += f;
            println!(
                "lab[{label}] L1 boot and all cases: {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!("lab: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(failed == 0)
}

fn names(cases: &[Case]) -> String {
    cases.iter().map(|c| c.name).collect::<Vec<_>>().join(" ")
}

/// What `cargo xtask demo` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    /// The README's first command: Linux from QEMU's dtb to init, which says what it runs on.
    Linux,
    /// The same guest's shell on the user's terminal, for as long as they like.
    Shell,
    /// The quick check: the bare-metal hello guest.
    Hello,
}

/// Boots L1 in AIA mode and runs the demo there, showing what it ran and the guest's output.
pub fn demo(what: Demo) -> Result<bool, String> {
    use std::io::IsTerminal;
    if what == Demo::Shell && !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err("demo --shell hands the guest's shell to a terminal: run it on one".into());
    }
    let prepared = prepare(&[Kernel::Stable])?;
    let k = &prepared.kernels[0];
    println!(
        "demo: L1 is Debian's riscv64 {} kernel with kvm.ko, under QEMU (TCG, -M {}); rvvmm runs in it on /dev/kvm",
        k.unpacked.release,
        Mode::Aia.machine()
    );
    if what == Demo::Shell {
        let command = format!(
            "{} rvvmm.test=interactive\"",
            plan::README_COMMAND.trim_end_matches('"')
        );
        println!("demo: in L1's /l2: $ {command}");
        println!("demo: the guest's shell comes up on this terminal; 'exit' powers the guest off, Ctrl-A x quits rvvmm");
        let body = format!(
            "cd /l2 && PATH=/:$PATH setsid cttyhack {command}\necho \"demo: rvvmm exited with status $?\"\n"
        );
        return boot_l1_interactive(&prepared, k, Mode::Aia, &body);
    }
    let name = if what == Demo::Linux {
        plan::README_CASE
    } else {
        "hello"
    };
    let case = plan::cases()
        .into_iter()
        .find(|c| c.name == name)
        .ok_or(format!("the plan has no case {name}"))?;
    match what {
        Demo::Linux => println!("demo: in L1's /l2: $ {}", plan::README_COMMAND),
        _ => println!("demo: in L1: $ {}", case.cmd.trim_start_matches('/')),
    }
    let log = boot_l1(&prepared, k, Mode::Aia, std::slice::from_ref(&case))?;
    let ran = plan::parse_log(&log);
    let Some((_, r)) = ran.iter().find(|(n, _)| n == name) else {
        return Err("L1 did not run the demo; see target/lab/console-stable-aia.log".into());
    };
    // The guest's console as the user would see it; the lab's own @@ markers left out.
    for line in r.output.lines().filter(|l| !l.starts_with("@@")) {
        println!("{}", line.trim_end_matches('\r'));
    }
    let verdict = plan::judge(&case, Mode::Aia, Some(r));
    if verdict.pass {
        println!("demo: rvvmm exited with status {}, as expected", r.rc);
    } else {
        println!("demo: not as expected: {}", verdict.detail);
    }
    Ok(verdict.pass)
}

pub(crate) fn prepare(kernels: &[Kernel]) -> Result<Prepared, String> {
    host::ensure_tools()?;
    let cache = paths::cache_dir();
    let work = paths::work_dir();
    for dir in [&cache, &work] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock = lock_work_dir(&work)?;
    let mirror = host::debian_mirror()?;
    let busybox_deb = fetch_pinned(&mirror, &BUSYBOX_DEB, &cache)?;
    let uboot_deb = fetch_pinned(&mirror, &UBOOT_DEB, &cache)?;
    let uboot_dir = unpack_deb(&uboot_deb, &cache.join("u-boot"))?;
    let uboot_bin = read(&uboot_dir.join("usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"))?;
    let uboot_elf = read(&uboot_dir.join("usr/lib/u-boot/qemu-riscv64_smode/uboot.elf"))?;
    let busybox_dir = unpack_deb(&busybox_deb, &cache.join("busybox"))?;
    let busybox = read(&busybox_dir.join("usr/bin/busybox"))?;
    let virtiofsd = virtiofsd_files(&mirror, &cache)?;
    let unpacked = kernels
        .iter()
        .map(|&k| kernel::unpack(k, &mirror, &cache))
        .collect::<Result<Vec<_>, _>>()?;
    let chroot = ensure_qemu_chroot(&mirror, &cache)?;
    let grub_dir = unpack_deb(
        &fetch_pinned(&mirror, &GRUB_DEB, &cache)?,
        &cache.join("grub"),
    )?;
    let grub_efi = grub_image(Some(&chroot), &grub_dir, &work)?;

    let mut step = Step::start(format!("lab: cross-building for {RISCV_TARGET}"));
    step.at("rvvmm");
    let rvvmm = cross_build(&["--package", "rvvmm", "--bin", "rvvmm"], "rvvmm")?;
    // The measuring build: cargo keeps both feature sets' artifacts, so a warm rebuild of
    // either is free; the uplifted binary is whichever was built last, hence read at once.
    step.at("rvvmm --features exit-timing");
    let rvvmm_timing = cross_build(RVVMM_TIMING, "rvvmm")?;
    step.at("bare-kvm, exec-timer, on-pty, vsock-tool");
    let bare_kvm = cross_build(
        &[
            "--package",
            "bare-kvm",
            "--package",
            "exec-timer",
            "--package",
            "on-pty",
            "--package",
            "vsock-tool",
        ],
        "bare-kvm",
    )?;
    let exec_timer =
        read(&paths::root().join(format!("target/{RISCV_TARGET}/release/exec-timer")))?;
    let on_pty = read(&paths::root().join(format!("target/{RISCV_TARGET}/release/on-pty")))?;
    let vsock_tool =
        read(&paths::root().join(format!("target/{RISCV_TARGET}/release/vsock-tool")))?;
    step.at("xtask");
    let xtask = cross_build(&["--package", "xtask", "--bin", "xtask"], "xtask")?;
    step.at("rvvmm's test executables");
    let test_executables = riscv64_test_executables(&work.join("tests"))?;
    step.at("the test guests");
    let guests = build_guests(&work.join("guests"))?;
    step.done("rvvmm, bare-kvm, exec-timer, on-pty, vsock-tool, xtask, tests, guests");
    let kernels = unpacked
        .into_iter()
        .map(|k| kernel_files(k, &busybox, &vsock_tool, &grub_efi, &work))
        .collect::<Result<Vec<_>, _>>()?;
    let disk_image = ext4_image(&work)?;
    let qemu_dtb = dump_qemu_dtb(&chroot, Mode::Plic)?;
    let qemu_aia_dtb = dump_qemu_dtb(&chroot, Mode::Aia)?;
    Ok(Prepared {
        qemu_aia_dtb,
        disk_image,
        uboot_bin,
        uboot_elf,
        grub_efi,
        test_executables,
        xtask,
        bare_kvm,
        rvvmm_timing,
        exec_timer,
        on_pty,
        vsock_tool,
        virtiofsd,
        lkvm: None,
        baseline_timing: None,
        kernels,
        _lock: lock,
        qemu_dtb,
        busybox,
        rvvmm,
        guests,
        chroot,
    })
}

/// One kernel's L1 modules and L2 files, made in target/lab/kernel-NAME.
fn kernel_files(
    unpacked: Unpacked,
    busybox: &[u8],
    vsock_tool: &[u8],
    grub_efi: &[u8],
    work: &Path,
) -> Result<KernelFiles, String> {
    let dir = work.join(format!("kernel-{}", unpacked.kernel.name()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (_, kvm_ko) = unpacked.module("arch/riscv/kvm/kvm", &dir)?;
    let (_, tun_ko) = unpacked.module("drivers/net/tun", &dir)?;
    let l2_initrd = l2_initramfs(
        busybox,
        vsock_tool,
        &unpacked.l2_modules(&dir.join("l2-modules"))?,
    );
    let boot_disk = boot_disk(&dir, &read(&unpacked.image)?, &l2_initrd, Some(grub_efi))?;
    Ok(KernelFiles {
        unpacked,
        kvm_ko,
        tun_ko,
        l2_initrd,
        boot_disk,
    })
}

/// Takes target/lab for this run: two lab, bench or demo runs in one tree would write the
/// same initramfs and console logs (a demo started during a bench once emptied the bench's
/// console log under it).
fn lock_work_dir(work: &Path) -> Result<fs::File, String> {
    let path = work.join(".lock");
    let file =
        fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "another cargo xtask lab, bench or demo is running in this tree (it holds {}); wait for it, or run from another clone",
            path.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// What the native runner needs on a riscv64 host with cargo: rvvmm and the guests built
/// here, and the Linux guest's files (Debian's kernel, the busybox initramfs, the disks,
/// U-Boot) in target/lab/native/l2. QEMU's dtbs only when qemu-system-riscv64 is installed
/// (the cases that use them are skipped otherwise, and say so).
pub(crate) fn prepare_native(cases: Vec<String>) -> Result<crate::native::Options, String> {
    host::ensure_tools()?;
    let cache = paths::cache_dir();
    let work = paths::work_dir().join("native");
    let l2 = work.join("l2");
    for dir in [&cache, &l2] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mirror = host::debian_mirror()?;
    let kernel = kernel::unpack(Kernel::Stable, &mirror, &cache)?;
    let busybox_dir = unpack_deb(
        &fetch_pinned(&mirror, &BUSYBOX_DEB, &cache)?,
        &cache.join("busybox"),
    )?;
    let uboot_dir = unpack_deb(
        &fetch_pinned(&mirror, &UBOOT_DEB, &cache)?,
        &cache.join("u-boot"),
    )?;
    let step = Step::start("lab: building rvvmm and the test guests for this host");
    cross_build(&["--package", "rvvmm", "--bin", "rvvmm"], "rvvmm")?;
    let rvvmm = paths::root().join(format!("target/{RISCV_TARGET}/release/rvvmm"));
    let vsock_tool = cross_build(&["--package", "vsock-tool"], "vsock-tool")?;
    build_guests(&work.join("guests"))?;
    step.done("");
    let image = read(&kernel.image)?;
    let initrd = l2_initramfs(
        &read(&busybox_dir.join("usr/bin/busybox"))?,
        &vsock_tool,
        &kernel.l2_modules(&work.join("l2-modules"))?,
    );
    let uboot = uboot_dir.join("usr/lib/u-boot/qemu-riscv64_smode");
    // GRUB where this host has grub-mkimage (Debian: grub-common); else no EFI partition, and
    // the case that boots it is skipped for want of l2/bootriscv64.efi.
    let grub_efi = if host::have("grub-mkimage") {
        let grub_dir = unpack_deb(
            &fetch_pinned(&mirror, &GRUB_DEB, &cache)?,
            &cache.join("grub"),
        )?;
        Some(grub_image(None, &grub_dir, &work)?)
    } else {
        None
    };
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("Image", image.clone()),
        ("initrd.cpio", initrd.clone()),
        ("disk.img", ext4_image(&work)?),
        (
            "boot-disk.img",
            boot_disk(&work, &image, &initrd, grub_efi.as_deref())?,
        ),
        ("u-boot.bin", read(&uboot.join("u-boot.bin"))?),
        ("uboot.elf", read(&uboot.join("uboot.elf"))?),
    ];
    files.extend(grub_efi.map(|g| ("bootriscv64.efi", g)));
    for (name, bytes) in files {
        fs::write(l2.join(name), bytes).map_err(|e| e.to_string())?;
    }
    if host::have("qemu-system-riscv64") {
        for (mode, name) in [(Mode::Plic, "virt.dtb"), (Mode::Aia, "virt-aia.dtb")] {
            host::run_quiet(
                Command::new("qemu-system-riscv64")
                    .args([
                        "-M",
                        &format!("{},dumpdtb={}", mode.machine(), l2.join(name).display()),
                    ])
                    .args(["-cpu", "rv64", "-smp", "2", "-m", "2G", "-display", "none"]),
            )?;
        }
    }
    Ok(crate::native::Options {
        rvvmm,
        guests: work.join("guests"),
        l2: Some(l2),
        cases,
    })
}

/// The cargo arguments of rvvmm's measuring build.
const RVVMM_TIMING: &[&str] = &[
    "--package",
    "rvvmm",
    "--bin",
    "rvvmm",
    "--features",
    "exit-timing",
];

/// rvvmm's test executables (`cargo test --no-run`) for riscv64, stripped into `out`: the
/// library's unit tests as `lib`, each tests/NAME.rs as `NAME`. Returns (name, bytes).
fn riscv64_test_executables(out: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let json = host::run_quiet(host::cargo().current_dir(paths::root()).args([
        "test",
        "--quiet",
        "--no-run",
        "--package",
        "rvvmm",
        "--target",
        RISCV_TARGET,
        "--message-format=json",
    ]))?;
    fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut built = Vec::new();
    for line in json.lines().filter(|l| l.contains("\"executable\":\"")) {
        let field = |key: &str| -> Option<&str> {
            let at = line.find(key)? + key.len();
            line[at..].split('"').next()
        };
        let (Some(path), Some(kind)) = (field("\"executable\":\""), field("\"kind\":[\"")) else {
            continue;
        };
        let stem = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('-'))
            .map(|(stem, _)| stem)
            .unwrap_or("test");
        let name = match kind {
            "lib" => "lib".to_string(),
            "bin" => format!("bin-{stem}"),
            _ => stem.to_string(),
        };
        let stripped = out.join(&name);
        host::run_quiet(
            Command::new("riscv64-linux-gnu-strip")
                .arg("-o")
                .arg(&stripped)
                .arg(path),
        )?;
        built.push((name, read(&stripped)?));
    }
    if !built.iter().any(|(n, _)| n == "kvm") {
        return Err("cargo test --no-run built no tests/kvm.rs executable".into());
    }
    Ok(built)
}

/// `cargo build --release --target riscv64 ARGS`, then the built binary `bin`.
fn cross_build(args: &[&str], bin: &str) -> Result<Vec<u8>, String> {
    let root = paths::root();
    cross_build_in(&root, &root.join("target"), args, bin)
}

/// [`cross_build`] of the workspace at `src`, into `target`.
fn cross_build_in(src: &Path, target: &Path, args: &[&str], bin: &str) -> Result<Vec<u8>, String> {
    host::run_visible(
        host::cargo()
            .current_dir(src)
            .env("CARGO_TARGET_DIR", target)
            .args(["build", "--quiet", "--release", "--target", RISCV_TARGET])
            .args(args),
    )?;
    read(&target.join(format!("{RISCV_TARGET}/release/{bin}")))
}

/// rvvmm's measuring build (`exit-timing`) at git revision `rev`, cross-built from that
/// revision's own sources (kept in target/baseline, so a rerun is warm), for the benchmark to
/// time beside the working tree's.
pub(crate) fn build_baseline(rev: &str) -> Result<Vec<u8>, String> {
    let root = paths::root();
    let src = root.join("target/baseline/src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let step = Step::start(format!(
        "lab: cross-building rvvmm at {rev} (the baseline) for {RISCV_TARGET}"
    ));
    host::run_quiet(Command::new("sh").arg("-c").arg(format!(
        "git -C '{}' archive --format=tar '{rev}' | tar -x -C '{}'",
        root.display(),
        src.display()
    )))?;
    let built = cross_build_in(
        &src,
        &root.join("target/baseline/target"),
        RVVMM_TIMING,
        "rvvmm",
    )?;
    step.done("");
    Ok(built)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn sha256_hex(path: &Path) -> Result<String, String> {
    let bytes = read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Returns the cached file, downloading it when missing or when its sha256 is wrong.
pub(crate) fn fetch_pinned(mirror: &str, pin: &Pinned, cache: &Path) -> Result<PathBuf, String> {
    fetch_pool(mirror, pin.pool_path, pin.sha256, &cache.join("debs"))
}

/// The archive's `pool_path`, kept in `dir` and checked against `sha256`.
pub(crate) fn fetch_pool(
    mirror: &str,
    pool_path: &str,
    sha256: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    let name = pool_path.rsplit('/').next().unwrap_or(pool_path);
    let dest = dir.join(name);
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    if dest.exists() && sha256_hex(&dest)? == sha256 {
        return Ok(dest);
    }
    if dest.exists() {
        eprintln!("lab: {name} in the cache has a wrong sha256; fetching it again");
        let _ = fs::remove_file(&dest);
    }
    host::download(&format!("{mirror}/{pool_path}"), &dest)?;
    let got = sha256_hex(&dest)?;
    if got != sha256 {
        let _ = fs::remove_file(&dest);
        return Err(format!("{name}: sha256 {got}, expected {sha256}"));
    }
    Ok(dest)
}

/// Unpacks a .deb once (a marker records which one).
pub(crate) fn unpack_deb(deb: &Path, dir: &Path) -> Result<PathBuf, String> {
    let marker = dir.join(".rvvmm-unpacked");
    let want = deb.file_name().unwrap().to_string_lossy().into_owned();
    if fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(dir.to_path_buf());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    host::run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    fs::write(&marker, &want).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}

pub(crate) fn decompress_xz(src: &Path, dest: &Path) -> Result<Vec<u8>, String> {
    let out =
        fs::File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(src)
        .stdout(out)
        .status()
        .map_err(|e| format!("cannot run xz: {e}"))?;
    if !status.success() {
        return Err(format!("xz -dc {} failed", src.display()));
    }
    read(dest)
}

/// A Debian trixie chroot with QEMU 10, made once with debootstrap.
fn ensure_qemu_chroot(mirror: &str, cache: &Path) -> Result<PathBuf, String> {
    let root = cache.join(format!("{QEMU_SUITE}-qemu"));
    let marker = root.join(".rvvmm-qemu-ready");
    if marker.exists() {
        return Ok(root);
    }
    let mut step = Step::start(format!(
        "lab: making a Debian {QEMU_SUITE} chroot with QEMU (once; a few minutes)"
    ));
    let _ = fs::remove_dir_all(&root);
    step.at("debootstrap");
    host::run_quiet(
        Command::new("debootstrap")
            .args(["--variant=minbase", QEMU_SUITE])
            .arg(&root)
            .arg(mirror),
    )?;
    step.at("apt-get install qemu-system-riscv");
    host::run_quiet(
        Command::new("chroot")
            .arg(&root)
            .args([
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "qemu-system-riscv",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let version = host::run_quiet(
        Command::new("chroot")
            .arg(&root)
            .args(["qemu-system-riscv64", "--version"]),
    )?;
    step.done(version.lines().next().unwrap_or_default());
    fs::write(&marker, version).map_err(|e| e.to_string())?;
    Ok(root)
}

include!("../../resources/guests/compile.rs");

/// Cross-compiles every test guest to a flat binary.
fn build_guests(out: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let src = paths::root().join("resources/guests");
    let mut built = Vec::new();
    for (name, source, cflags) in GUESTS {
        let elf = out.join(format!("{name}.elf"));
        let bin = out.join(format!("{name}.bin"));
        let mut gcc = guest_compile("riscv64-linux-gnu-gcc", &src, source, cflags, &elf);
        host::run_quiet(&mut gcc)?;
        host::run_quiet(
            Command::new("riscv64-linux-gnu-objcopy")
                .args(["-O", "binary"])
                .arg(&elf)
                .arg(&bin),
        )?;
        built.push((name.to_string(), read(&bin)?));
        if *name == "hello" {
            // The same guest as an ELF, loaded by its program headers.
            built.push(("hello_elf".to_string(), read(&elf)?));
        }
    }
    Ok(built)
}

/// A small ext4 image made from a directory with `mkfs.ext4 -d`, for the virtio-blk cases.
fn ext4_image(work: &Path) -> Result<Vec<u8>, String> {
    let root = work.join("disk-root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    fs::write(
        root.join("hello.txt"),
        "made by the lab with mkfs.ext4 -d\n",
    )
    .map_err(|e| e.to_string())?;
    let image = work.join("disk.img");
    let _ = fs::remove_file(&image);
    host::run_quiet(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rvvmm-lab", "-d"])
            .arg(&root)
            .arg(&image)
            .arg("16M"),
    )?;
    read(&image)
}

/// A disk as distributions make them for U-Boot's distro boot: an MBR with a bootable Linux
/// partition (from sector 2048), an ext4 file system with `extlinux/extlinux.conf`, the kernel
/// and the initramfs; and, given GRUB's EFI image, a second partition holding it as the EFI
/// removable-media binary, under both spellings U-Boot looks for (`/EFI/BOOT/BOOTRISCV64.EFI`
/// for bootmeth efi, `efi/boot/bootriscv64.efi` for the distro scripts; ext4 is case-sensitive).
/// It is a partition of its own so that U-Boot's first partition still boots through extlinux
/// with no key typed. The MBR is written here (16 bytes of partition entry; a tool for it would
/// be one more host dependency).
fn boot_disk(
    work: &Path,
    kernel: &[u8],
    initrd: &[u8],
    grub_efi: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let root = work.join("boot-root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("extlinux")).map_err(|e| e.to_string())?;
    fs::write(root.join("Image"), kernel).map_err(|e| e.to_string())?;
    fs::write(root.join("initrd.cpio"), initrd).map_err(|e| e.to_string())?;
    fs::write(
        root.join("extlinux/extlinux.conf"),
        "default l2\ntimeout 0\nlabel l2\n  kernel /Image\n  initrd /initrd.cpio\n  append console=ttyS0 earlycon=sbi rvvmm.marker=extlinux\n",
    )
    .map_err(|e| e.to_string())?;
    let mib = (kernel.len() + initrd.len()) / (1 << 20) + 8;
    let mut parts = vec![(0x80, ext4_partition(work, &root, "rvvmm-boot", mib)?)];
    if let Some(grub) = grub_efi {
        let efi_root = work.join("efi-root");
        let _ = fs::remove_dir_all(&efi_root);
        for (dir, name) in [
            ("EFI/BOOT", "BOOTRISCV64.EFI"),
            ("efi/boot", "bootriscv64.efi"),
        ] {
            fs::create_dir_all(efi_root.join(dir)).map_err(|e| e.to_string())?;
            fs::write(efi_root.join(dir).join(name), grub).map_err(|e| e.to_string())?;
        }
        let mib = 2 * grub.len() / (1 << 20) + 4;
        parts.push((0, ext4_partition(work, &efi_root, "rvvmm-efi", mib)?));
    }
    let mut disk = vec![0u8; 1 << 20];
    let mut start = 2048u32;
    for (i, (flags, part)) in parts.iter().enumerate() {
        let sectors = (part.len() / 512) as u32;
        let entry = &mut disk[446 + 16 * i..462 + 16 * i];
        entry[0] = *flags; // 0x80: bootable
        entry[4] = 0x83; // Linux
        entry[8..12].copy_from_slice(&start.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        // CHS fields say "use LBA".
        entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        start += sectors;
    }
    disk[510] = 0x55;
    disk[511] = 0xaa;
    for (_, part) in &parts {
        disk.extend_from_slice(part);
    }
    Ok(disk)
}

/// An ext4 file system of `mib` MiB labelled `label`, holding `root`'s files.
fn ext4_partition(work: &Path, root: &Path, label: &str, mib: usize) -> Result<Vec<u8>, String> {
    let part = work.join(format!("{label}.img"));
    let _ = fs::remove_file(&part);
    host::run_quiet(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-d"])
            .arg(root)
            .arg(&part)
            .arg(format!("{mib}M")),
    )?;
    read(&part)
}

/// GRUB's config, built into its image: find the extlinux partition (where the kernel and the
/// initramfs are), then boot the kernel as an EFI application with GRUB's initrd (handed over
/// through the LoadFile2 protocol, as on any distro's EFI boot).
const GRUB_CONFIG: &str = "search --no-floppy --file --set=root /extlinux/extlinux.conf
echo \"rvvmm lab: GRUB boots /Image from $root\"
linux /Image console=ttyS0 earlycon=sbi rvvmm.marker=efi
initrd /initrd.cpio
boot
";

/// The modules GRUB's image needs for [`GRUB_CONFIG`].
const GRUB_MODULES: &[&str] = &[
    "boot",
    "linux",
    "ext2",
    "part_msdos",
    "search",
    "search_fs_file",
    "echo",
    "normal",
    "configfile",
];

/// GRUB for riscv64 EFI, made with grub-mkimage from Debian's modules in `grub_dir`: in the
/// lab's trixie chroot (its grub-common, installed there once) or, with `chroot` None, with
/// this host's grub-mkimage.
fn grub_image(chroot: Option<&Path>, grub_dir: &Path, work: &Path) -> Result<Vec<u8>, String> {
    // The files go where both the host and the chroot see them.
    let (base, inside) = match chroot {
        Some(root) => {
            if !root.join("usr/bin/grub-mkimage").exists() {
                let step = Step::start("lab: installing grub-common in the chroot (once)");
                for args in [
                    &["apt-get", "update", "-q"][..],
                    &[
                        "apt-get",
                        "install",
                        "-y",
                        "-q",
                        "--no-install-recommends",
                        "grub-common",
                    ],
                ] {
                    host::run_quiet(
                        Command::new("chroot")
                            .arg(root)
                            .args(args)
                            .env("DEBIAN_FRONTEND", "noninteractive"),
                    )?;
                }
                step.done("");
            }
            (
                root.join("tmp/rvvmm-grub"),
                PathBuf::from("/tmp/rvvmm-grub"),
            )
        }
        None => {
            let dir = work.join("grub");
            (dir.clone(), dir)
        }
    };
    let _ = fs::remove_dir_all(&base);
    let modules = base.join("riscv64-efi");
    fs::create_dir_all(&modules).map_err(|e| e.to_string())?;
    let src = grub_dir.join("usr/lib/grub/riscv64-efi");
    for entry in fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        fs::copy(entry.path(), modules.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    fs::write(base.join("embedded.cfg"), GRUB_CONFIG).map_err(|e| e.to_string())?;
    let mut mkimage = match chroot {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg("grub-mkimage");
            c
        }
        None => Command::new("grub-mkimage"),
    };
    mkimage
        .args(["-O", "riscv64-efi", "-p", "/EFI/BOOT"])
        .arg("-d")
        .arg(inside.join("riscv64-efi"))
        .arg("-c")
        .arg(inside.join("embedded.cfg"))
        .arg("-o")
        .arg(inside.join("bootriscv64.efi"))
        .args(GRUB_MODULES);
    host::run_quiet(&mut mkimage)?;
    read(&base.join("bootriscv64.efi"))
}

/// The L2 Linux guest's initramfs.
fn l2_initramfs(busybox: &[u8], vsock_tool: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let init = include_str!("../../resources/lab/l2-init.sh");
    let paths: Vec<String> = modules
        .iter()
        .map(|(n, _)| format!("lib/modules/{n}"))
        .collect();
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::CharDev("dev/console", 5, 1),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::Dir("tmp"),
        Entry::File("bin/busybox", 0o755, busybox),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::File("bin/vsock-tool", 0o755, vsock_tool),
        Entry::File("init", 0o755, init.as_bytes()),
        Entry::Dir("lib"),
        Entry::Dir("lib/modules"),
    ];
    for (path, (_, bytes)) in paths.iter().zip(modules) {
        entries.push(Entry::File(path, 0o644, bytes));
    }
    cpio::archive(&entries)
}

/// The dtb QEMU's `virt` machine describes, as `-M virt,dumpdtb=` writes it (`machine`
/// selects the PLIC or AIA flavour).
fn dump_qemu_dtb(chroot: &Path, mode: Mode) -> Result<Vec<u8>, String> {
    let lab_dir = chroot.join("lab");
    fs::create_dir_all(&lab_dir).map_err(|e| e.to_string())?;
    host::run_quiet(
        qemu(chroot, &format!("{},dumpdtb=/lab/virt.dtb", mode.machine()))
            .args(["-display", "none"]),
    )?;
    read(&lab_dir.join("virt.dtb"))
}

/// QEMU in the chroot with L1's machine: `-M machine`, the H-capable CPU, 2 harts, 2 GiB.
fn qemu(chroot: &Path, machine: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(chroot)
        .args(["qemu-system-riscv64", "-M", machine, "-cpu", "rv64"])
        .args(["-smp", "2", "-m", "2G"]);
    cmd
}

/// L1's /init: set up, load kvm.ko, run `body` (the plan's runner), power off.
fn init_script(body: &str) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         mkdir -p /tmp\n\
         insmod /kvm.ko || echo '@@LAB insmod kvm.ko failed'\n\
         insmod /tun.ko || echo '@@LAB insmod tun.ko failed'\n\
         echo 160 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; mount -t hugetlbfs none /dev/hugepages\n\
         echo \"@@LAB kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) harts, $(grep -m1 ^isa /proc/cpuinfo)\"\n\
         {body}\
         echo '@@LAB done'\n\
         poweroff -f\n"
    )
}

fn initramfs(p: &Prepared, k: &KernelFiles, cases: &[Case], body: &str) -> Result<Vec<u8>, String> {
    let init = init_script(body);
    let image = read(&k.unpacked.image)?;
    let scripts: Vec<(String, String)> = cases
        .iter()
        .map(|c| (format!("cases/{}.sh", c.name), plan::case_script(c)))
        .collect();
    let stdins: Vec<(String, &str)> = cases
        .iter()
        .filter_map(|c| c.stdin.map(|s| (format!("cases/{}.stdin", c.name), s)))
        .collect();
    let guest_paths: Vec<(String, &[u8])> = p
        .guests
        .iter()
        .map(|(n, b)| match n.strip_suffix("_elf") {
            Some(base) => (format!("guests/{base}.elf"), b.as_slice()),
            None => (format!("guests/{n}.bin"), b.as_slice()),
        })
        .collect();
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::CharDev("dev/console", 5, 1),
        Entry::CharDev("dev/null", 1, 3),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::Dir("tmp"),
        Entry::Dir("cases"),
        Entry::Dir("guests"),
        Entry::File("bin/busybox", 0o755, &p.busybox),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::File("init", 0o755, init.as_bytes()),
        Entry::File("kvm.ko", 0o644, &k.kvm_ko),
        Entry::File("tun.ko", 0o644, &k.tun_ko),
        Entry::File("rvvmm", 0o755, &p.rvvmm),
        Entry::Dir("l2"),
        Entry::File("l2/Image", 0o644, &image),
        Entry::File("l2/initrd.cpio", 0o644, &k.l2_initrd),
        Entry::File("l2/virt.dtb", 0o644, &p.qemu_dtb),
        Entry::File("bare-kvm", 0o755, &p.bare_kvm),
        Entry::File("rvvmm-timing", 0o755, &p.rvvmm_timing),
        Entry::File("exec-timer", 0o755, &p.exec_timer),
        Entry::File("on-pty", 0o755, &p.on_pty),
        Entry::File("vsock-tool", 0o755, &p.vsock_tool),
        Entry::File("l2/disk.img", 0o644, &p.disk_image),
        Entry::File("l2/u-boot.bin", 0o644, &p.uboot_bin),
        Entry::File("l2/uboot.elf", 0o644, &p.uboot_elf),
        Entry::File("l2/boot-disk.img", 0o644, &k.boot_disk),
        Entry::File("l2/bootriscv64.efi", 0o644, &p.grub_efi),
        Entry::File("l2/virt-aia.dtb", 0o644, &p.qemu_aia_dtb),
        Entry::File("xtask", 0o755, &p.xtask),
        Entry::Dir("tests"),
        Entry::Dir("vfs"),
        Entry::Dir("vfs/lib"),
    ];
    entries.extend(
        p.virtiofsd
            .iter()
            .map(|(path, b)| Entry::File(path, 0o755, b)),
    );
    let tests: Vec<(String, &[u8])> = p
        .test_executables
        .iter()
        .map(|(n, b)| (format!("tests/{n}"), b.as_slice()))
        .collect();
    entries.extend(tests.iter().map(|(path, b)| Entry::File(path, 0o755, b)));
    if let Some(lkvm) = &p.lkvm {
        entries.push(Entry::File("lkvm", 0o755, lkvm));
    }
    if let Some(base) = &p.baseline_timing {
        entries.push(Entry::File("rvvmm-base-timing", 0o755, base));
    }
    entries.extend(
        scripts
            .iter()
            .map(|(path, s)| Entry::File(path, 0o755, s.as_bytes())),
    );
    entries.extend(
        stdins
            .iter()
            .map(|(path, s)| Entry::File(path, 0o644, s.as_bytes())),
    );
    entries.extend(
        guest_paths
            .iter()
            .map(|(path, b)| Entry::File(path, 0o644, b)),
    );
    Ok(cpio::archive(&entries))
}

/// Boots L1 once with `cases`; returns the console log. Fails if QEMU cannot start, or L1
/// neither finishes nor powers off within [`L1_TIMEOUT`].
pub(crate) fn boot_l1(
    p: &Prepared,
    k: &KernelFiles,
    mode: Mode,
    cases: &[Case],
) -> Result<String, String> {
    let label = k.label(mode);
    let mut qemu = l1_qemu(
        p,
        k,
        mode,
        cases,
        &plan::runner_then(cases, "/tmp/case.out", plan::L1_AFTER_CASE),
    )?;
    let log_path = paths::work_dir().join(format!("console-{}-{}.log", k.name(), mode.name()));
    let log_file = fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    eprintln!(
        "lab[{label}]: booting L1 ({} kernel, QEMU -M {}), console in {}",
        k.unpacked.release,
        mode.machine(),
        log_path.display()
    );
    let mut step = Step::start(format!("lab[{label}]: L1, {} case(s)", cases.len()));
    let mut watch = CaseWatch::new(&log_path, cases.len());
    let mut child = qemu
        .args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > L1_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        step.at(&watch.poll());
        std::thread::sleep(Duration::from_millis(200));
    };
    step.done(&format!("{} case(s) ran", watch.started));
    let log = String::from_utf8_lossy(&read(&log_path)?).into_owned();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    match status {
        None => {
            let _ = std::io::stdout().flush();
            eprintln!(
                "lab[{label}]: L1 did not finish in {} s; killed",
                L1_TIMEOUT.as_secs()
            );
        }
        Some(s) if !s.success() => return Err(format!("QEMU failed ({s}): {}", stderr.trim())),
        Some(_) => {}
    }
    if !log.contains("@@LAB done") {
        eprintln!("lab[{label}]: L1 did not reach the end of its plan; last console lines:");
        for line in log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("    | {line}");
        }
    }
    Ok(log)
}

/// QEMU booting L1 in `mode` with an initramfs whose init runs `body` (with `cases`' files);
/// the caller adds the serial port.
fn l1_qemu(
    p: &Prepared,
    k: &KernelFiles,
    mode: Mode,
    cases: &[Case],
    body: &str,
) -> Result<Command, String> {
    let lab_dir = p.chroot.join("lab");
    fs::create_dir_all(&lab_dir).map_err(|e| e.to_string())?;
    let image_name = format!("Image-{}", k.name());
    fs::copy(&k.unpacked.image, lab_dir.join(&image_name))
        .map_err(|e| format!("cannot copy the kernel: {e}"))?;
    let initrd_name = format!("initrd-{}-{}.cpio", k.name(), mode.name());
    fs::write(lab_dir.join(&initrd_name), initramfs(p, k, cases, body)?)
        .map_err(|e| e.to_string())?;
    let mut cmd = qemu(&p.chroot, mode.machine());
    cmd.args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(format!("/lab/{image_name}"))
        .arg("-initrd")
        .arg(format!("/lab/{initrd_name}"))
        .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"]);
    Ok(cmd)
}

/// Boots L1 with its console on this terminal (Ctrl-C and Ctrl-A reach L1 and what runs
/// there: QEMU's own signal and escape keys are off) and its init running `body`; returns when
/// L1 powers off.
fn boot_l1_interactive(
    p: &Prepared,
    k: &KernelFiles,
    mode: Mode,
    body: &str,
) -> Result<bool, String> {
    let status = l1_qemu(p, k, mode, &[], body)?
        .args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ])
        .status()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    Ok(status.success())
}

/// Follows an L1 console log as it grows, for the progress line: which case runs now.
struct CaseWatch {
    file: Option<fs::File>,
    /// The last partial line read.
    pending: Vec<u8>,
    total: usize,
    /// Cases started so far, the one running and since when.
    started: usize,
    current: Option<(String, Instant)>,
}

impl CaseWatch {
    fn new(log: &Path, total: usize) -> CaseWatch {
        CaseWatch {
            file: fs::File::open(log).ok(),
            pending: Vec::new(),
            total,
            started: 0,
            current: None,
        }
    }

    /// Reads what the log gained; says what L1 is doing.
    fn poll(&mut self) -> String {
        use std::io::Read;
        let mut chunk = Vec::new();
        if let Some(f) = &mut self.file {
            let _ = f.read_to_end(&mut chunk);
        }
        self.feed(&chunk);
        match &self.current {
            Some((name, since)) => format!(
                "case {}/{} {name} ({} s)",
                self.started,
                self.total,
                since.elapsed().as_secs()
            ),
            None if self.started == 0 => "booting L1".into(),
            None => format!("{}/{} cases ran; powering off", self.started, self.total),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(name) = line.trim_end().strip_prefix("@@CASE ") {
                self.started += 1;
                self.current = Some((name.to_string(), Instant::now()));
            } else if line.contains("@@END ") || line.contains("@@LAB done") {
                self.current = None;
            }
        }
        // A guest may print without newlines for long: keep the tail only.
        if self.pending.len() > 4096 {
            let cut = self.pending.len() - 4096;
            self.pending.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_in_the_same_tree_is_refused() {
        let dir = std::env::temp_dir().join(format!("rvvmm-xtask-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let first = lock_work_dir(&dir).unwrap();
        let second = lock_work_dir(&dir).unwrap_err();
        assert!(
            second.contains("another cargo xtask lab, bench or demo"),
            "{second}"
        );
        drop(first);
        // The lock goes when the last descriptor of its open file goes. The files are opened
        // O_CLOEXEC, but a test running beside this one that spawns a process holds a copy
        // from its fork until its exec (CI once saw WouldBlock here): wait that out, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let third = loop {
            match lock_work_dir(&dir) {
                Ok(f) => break f,
                Err(e) if std::time::Instant::now() >= deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        };
        drop(third);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_case_watch_follows_markers_across_partial_reads() {
        let mut w = CaseWatch {
            file: None,
            pending: Vec::new(),
            total: 3,
            started: 0,
            current: None,
        };
        assert_eq!(w.poll(), "booting L1");
        w.feed(b"@@LAB kernel x\n@@CA");
        assert_eq!(w.started, 0);
        w.feed(b"SE hello\nguest says hi\n");
        assert!(w.poll().starts_with("case 1/3 hello ("));
        w.feed(b"no newline from the guest@@END hello rc=0 s=1\n@@CASE smp\n");
        assert!(w.poll().starts_with("case 2/3 smp ("));
        w.feed(&[b'x'; 10_000]);
        assert!(w.pending.len() <= 4096);
        w.feed(b"\n@@END smp rc=0 s=2\n");
        assert_eq!(w.poll(), "2/3 cases ran; powering off");
    }
}
