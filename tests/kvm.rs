//! rvvmm on real KVM: the bare-metal guests of resources/guests (built by build.rs and carried
//! in this executable) booted through the library API, `Vmm` and `Vcpu`, on /dev/kvm, with
//! their exits and results checked. They run on a riscv64 host whose /dev/kvm can be opened
//! (the lab runs them in its L1, a riscv64 Linux with kvm.ko). Elsewhere each test returns at
//! once, and the first one says on stderr, in one line, why they were skipped.

mod common;

use std::io::Write;
use std::sync::Once;

static SKIP_NOTICE: Once = Once::new();

/// Why the KVM tests cannot run here, if they cannot (said once per test executable).
fn skip_reason() -> Option<String> {
    let why = if cfg!(not(target_arch = "riscv64")) {
        Some(format!(
            "this is a {} host, they need riscv64 with /dev/kvm",
            std::env::consts::ARCH
        ))
    } else if common::riscv64_under_emulation() {
        // Under an emulator such as qemu-user, the kernel (and its /dev/kvm) is the host's.
        Some("the kernel is not a RISC-V one (/proc/cpuinfo has no isa line: qemu-user?)".into())
    } else if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Some(format!("/dev/kvm cannot be opened: {e}"))
    } else {
        guests::not_built().map(|why| format!("the test guests were not built: {why}"))
    }?;
    SKIP_NOTICE.call_once(|| {
        // Straight to stderr, past the test harness's capture of print!: a skip must be seen.
        let _ = writeln!(std::io::stderr(), "kvm tests skipped: {why}");
    });
    Some(why)
}

#[cfg(target_arch = "riscv64")]
mod guests {
    include!(concat!(env!("OUT_DIR"), "/kvm_guests.rs"));

    pub fn not_built() -> Option<&'static str> {
        NOT_BUILT
    }
}

#[cfg(not(target_arch = "riscv64"))]
mod guests {
    pub fn not_built() -> Option<&'static str> {
        None
    }
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn kvm_tests_need_a_riscv64_host_with_kvm() {
    assert!(skip_reason().is_some());
}

#[cfg(target_arch = "riscv64")]
mod on_kvm {
    use std::ops::ControlFlow;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rvvmm::console::BufferConsole;
    use rvvmm::hypervisor::kvm::KvmVm;
    use rvvmm::hypervisor::VmBackend;
    use rvvmm::sbi::{Sbi, SbiContext};
    use rvvmm::{ExitReason, Vcpu, VcpuConfig, VmConfig, Vmm};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::{guests::guest, skip_reason};

    /// Where a flat guest is loaded and entered (RAM + 2 MiB).
    const ENTRY: u64 = 0x8020_0000;

    /// The guest's binary in a file of this test's own, as `--kernel` takes it.
    fn kernel_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvvmm-kvm-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, guest(name)).unwrap();
        path
    }

    /// Boots guest `name` on KVM with `cpus` vCPUs; returns rvvmm's status (or its error) and
    /// the console output. A guest that has not stopped after 60 s fails the test.
    fn boot(
        name: &str,
        cpus: u32,
        input: &[u8],
        vmm_hook: impl FnOnce(Vmm) -> Vmm,
    ) -> (Result<i32, String>, String) {
        let console = Arc::new(BufferConsole::default());
        console.type_in(input);
        let config = VmConfig {
            kernel: kernel_file(name),
            memory: Some(64 << 20),
            cpus: Some(cpus),
            testdev: true,
            ..Default::default()
        };
        let mut vmm = vmm_hook(Vmm::new(config, console.clone()).expect("the VM is built"))
            .with_timeout(Duration::from_secs(60));
        let status = vmm.run(KvmVm::new).map_err(|e| rvvmm::error_chain(&e));
        assert_ne!(
            status,
            Ok(rvvmm::vmm::TIMEOUT_STATUS),
            "{name} did not stop in 60 s: {}",
            console.output_string()
        );
        (status, console.output_string())
    }

    fn assert_has(output: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                output.contains(line),
                "{line:?} not in the guest's output:\n{output}"
            );
        }
    }

    /// Boots guest `name` (unless the KVM tests skip here) and checks rvvmm's status and the
    /// lines the guest must print.
    fn guest_ends(name: &str, cpus: u32, input: &[u8], status: i32, lines: &[&str]) {
        if skip_reason().is_some() {
            return;
        }
        let (got, out) = boot(name, cpus, input, |v| v);
        assert_eq!(got, Ok(status), "{out}");
        assert_has(&out, lines);
    }

    #[test]
    fn hello_prints_and_powers_off() {
        guest_ends("hello", 1, b"", 0, &["Hello from a RISC-V guest on rvvmm!"]);
    }

    #[test]
    fn boot_registers_hold_the_hart_and_the_dtb() {
        // 64 MiB of RAM: the dtb sits 2 MiB below its top, at 0x83e0_0000.
        guest_ends(
            "boot_regs",
            1,
            b"",
            0,
            &["boot_regs: a1=0x0000000083e00000", "PASS boot_regs"],
        );
    }

    #[test]
    fn dbcn_writes_and_reads_the_console() {
        guest_ends(
            "dbcn",
            1,
            b"ping",
            0,
            &[
                "dbcn: write ok",
                "dbcn: write_byte ok",
                "dbcn: errors ok",
                "dbcn: read 'ping'",
                "PASS dbcn",
            ],
        );
    }

    #[test]
    fn hypercalls_reach_the_embedders_handler() {
        if skip_reason().is_some() {
            return;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let (status, out) = boot("hypercall", 1, b"", move |v| {
            v.with_hypercall_handler(Arc::new(move |nr, args| {
                record.lock().unwrap().push((nr, *args));
                rvvmm::sbi::hypercall::answer(nr, args)
            }))
        });
        assert_eq!(status, Ok(0), "{out}");
        assert_has(
            &out,
            &[
                "hypercall: abi version 0x0000000000000001",
                "PASS hypercall",
            ],
        );
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.as_slice(),
            &[
                (
                    0,
                    [
                        0x1111,
                        0x2222,
                        0x3333,
                        0x4444,
                        0x5555,
                        0x6666_6666_6666_6666
                    ]
                ),
                (7, [1, 2, 3, 4, 5, 6])
            ]
        );
    }

    #[test]
    fn mmio_reaches_the_test_device_and_unclaimed_reads_are_answered() {
        guest_ends("mmio", 1, b"", 0, &["mmio: testdev ok", "PASS mmio"]);
    }

    #[test]
    fn a_second_hart_starts_through_hsm() {
        guest_ends(
            "smp",
            2,
            b"",
            0,
            &["smp: hello from hart 0x0000000000000001", "PASS smp"],
        );
    }

    #[test]
    fn a_reboot_boots_the_guest_again() {
        guest_ends(
            "reboot",
            1,
            b"",
            0,
            &[
                "reboot: boot 0x0000000000000001",
                "reboot: boot 0x0000000000000002",
                "PASS reboot",
            ],
        );
    }

    #[test]
    fn the_guests_failure_is_the_vmms_result() {
        guest_ends("finisher", 1, b"", 42, &["finisher: exiting with code 42"]);
        if skip_reason().is_some() {
            return;
        }
        let (status, _) = boot("sysfail", 1, b"", |v| v);
        let err = status.expect_err("a system failure is an error");
        assert!(err.contains("system failure"), "{err}");
    }

    /// The vCPU lifecycle below the VMM: new -> setup -> set_entry -> run, on KVM, until the
    /// guest's first hypercall, which comes back as one `ExitReason::Hypercall` with its
    /// number and arguments; answered, the guest goes on to its next one.
    #[test]
    fn the_vcpu_lifecycle_returns_a_hypercall_exit() {
        if skip_reason().is_some() {
            return;
        }
        let vm = KvmVm::new().expect("a KVM VM");
        let memory: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 16 << 20)]).unwrap();
        memory
            .write_slice(guest("hypercall"), GuestAddress(ENTRY))
            .unwrap();
        vm.map_memory(&memory).expect("RAM mapped");
        let console = Arc::new(BufferConsole::default());
        let sbi = Sbi::new(SbiContext {
            memory: memory.clone(),
            console: console.clone(),
        });
        let backend = vm.create_vcpu(0).expect("vCPU 0");
        let config = VcpuConfig {
            hart_id: 0,
            dtb_addr: 0,
        };
        let mut vcpu = Vcpu::new(0, config, backend, sbi).expect("Vcpu::new");
        vcpu.setup().expect("setup");
        vcpu.set_entry(ENTRY).expect("set_entry");
        let mut hypercalls = Vec::new();
        for _ in 0..10_000 {
            match vcpu.run().expect("run") {
                ExitReason::Hypercall { nr, args } => {
                    hypercalls.push((nr, args));
                    let answer = rvvmm::sbi::hypercall::answer(nr, &args);
                    let ControlFlow::Continue((error, value)) = answer else {
                        break;
                    };
                    vcpu.set_gpr(0, error as u64).unwrap();
                    vcpu.set_gpr(1, value).unwrap();
                    if hypercalls.len() == 2 {
                        break;
                    }
                }
                ExitReason::Nothing => {}
                other => panic!(
                    "unexpected exit {other:?}; console: {}",
                    console.output_string()
                ),
            }
        }
        assert_eq!(hypercalls.len(), 2, "console: {}", console.output_string());
        assert_eq!(
            hypercalls[0],
            (
                0,
                [
                    0x1111,
                    0x2222,
                    0x3333,
                    0x4444,
                    0x5555,
                    0x6666_6666_6666_6666
                ]
            )
        );
        assert_eq!(hypercalls[1].0, 7);
        assert!(console.output_string().contains("hypercall: abi version"));
    }
}
