//! The whole VMM (threads, exit policy, bus, SBI) driven by scripted vCPUs on any host.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use rvvmm::arch::riscv64::layout::{FINISHER_BASE, TESTDEV_BASE};
use rvvmm::arch::riscv64::regs;
use rvvmm::console::BufferConsole;
use rvvmm::control::GuestStop;
use rvvmm::hypervisor::scripted::{Event, ScriptedVm, Step};
use rvvmm::hypervisor::{MpState, RawExit, SbiCall};
use rvvmm::{VmConfig, Vmm};
use vm_memory::{Bytes, GuestAddress};

const SHUTDOWN: Step = Step::Exit(RawExit::SystemEvent { kind: 1, data: 0 });

fn kernel_file(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rvvmm-scripted-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.bin");
    std::fs::write(&path, [0x73, 0x00, 0x50, 0x10]).unwrap();
    path
}

fn config(tag: &str, cpus: u32) -> VmConfig {
    VmConfig {
        kernel: kernel_file(tag),
        memory: Some(16 << 20),
        cpus: Some(cpus),
        testdev: true,
        ..Default::default()
    }
}

fn sbi(eid: u64, fid: u64, args: [u64; 6]) -> Step {
    Step::Exit(RawExit::Sbi(SbiCall { eid, fid, args }))
}

#[test]
fn dbcn_write_then_shutdown_prints_and_exits_zero() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("dbcn", 1), console.clone()).unwrap();
    let text = GuestAddress(0x8010_0000);
    vmm.vm()
        .unwrap()
        .memory()
        .write_slice(b"hi from the guest\n", text)
        .unwrap();
    let status = vmm
        .run(|| {
            Ok(ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![sbi(0x4442_434E, 0, [18, text.0, 0, 0, 0, 0]), SHUTDOWN],
            ))
        })
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(console.output_string(), "hi from the guest\n");
}

#[test]
fn finisher_and_testdev_over_the_bus() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("bus", 1), console).unwrap();
    let status = vmm
        .run(|| {
            let vm = ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![
                    Step::Exit(RawExit::MmioWrite {
                        addr: TESTDEV_BASE + 8,
                        len: 4,
                        data: [1, 2, 3, 4, 0, 0, 0, 0],
                    }),
                    Step::Exit(RawExit::MmioRead {
                        addr: TESTDEV_BASE + 8,
                        len: 2,
                    }),
                    Step::Exit(RawExit::MmioRead {
                        addr: 0x3000_0000,
                        len: 8,
                    }),
                    Step::Exit(RawExit::MmioWrite {
                        addr: FINISHER_BASE,
                        len: 4,
                        data: [0x33, 0x33, 7, 0, 0, 0, 0, 0],
                    }),
                    // Never reached: the finisher stopped the VM.
                    SHUTDOWN,
                ],
            );
            Ok(vm)
        })
        .unwrap();
    assert_eq!(status, 7);
}

#[test]
fn mmio_reads_are_answered_with_device_data() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("mmio", 1), console).unwrap();
    let records = Arc::new(Mutex::new(Vec::new()));
    let keep = records.clone();
    vmm.run(move || {
        let vm = ScriptedVm::new().script(
            0,
            MpState::Runnable,
            vec![
                Step::Exit(RawExit::MmioWrite {
                    addr: TESTDEV_BASE,
                    len: 8,
                    data: 0x1122_3344_5566_7788u64.to_le_bytes(),
                }),
                Step::Exit(RawExit::MmioRead {
                    addr: TESTDEV_BASE + 4,
                    len: 4,
                }),
                Step::Exit(RawExit::MmioRead {
                    addr: 0x3000_0000,
                    len: 8,
                }),
                SHUTDOWN,
            ],
        );
        keep.lock().unwrap().push(vm.record_handle(0));
        Ok(vm)
    })
    .unwrap();
    let record = records.lock().unwrap()[0].lock().unwrap().events.clone();
    let data: Vec<Vec<u8>> = record
        .iter()
        .filter_map(|e| match e {
            Event::MmioData(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![vec![0x44, 0x33, 0x22, 0x11], vec![0; 8]]);
}

#[test]
fn hypercalls_get_the_embedders_answer() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("hvc", 1), console)
        .unwrap()
        .with_hypercall_handler(Arc::new(|nr, args| {
            ControlFlow::Continue((0, nr + args.iter().sum::<u64>()))
        }));
    let records = Arc::new(Mutex::new(Vec::new()));
    let keep = records.clone();
    vmm.run(move || {
        let vm = ScriptedVm::new().script(
            0,
            MpState::Runnable,
            vec![sbi(0x0848_5643, 100, [1, 2, 3, 4, 5, 6]), SHUTDOWN],
        );
        keep.lock().unwrap().push(vm.record_handle(0));
        Ok(vm)
    })
    .unwrap();
    let events = records.lock().unwrap()[0].lock().unwrap().events.clone();
    assert!(events.contains(&Event::SbiReturn(0, 0)));
    assert!(events.contains(&Event::SbiReturn(1, 121)));
}

#[test]
fn reboot_boots_again_and_keeps_ram() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("reboot", 1), console).unwrap();
    let marker = GuestAddress(0x8080_0000);
    let mut boots = 0;
    let status = vmm
        .run(|| {
            boots += 1;
            let last = if boots == 1 {
                RawExit::SystemEvent { kind: 2, data: 0 }
            } else {
                RawExit::SystemEvent { kind: 1, data: 0 }
            };
            Ok(ScriptedVm::new().script(0, MpState::Runnable, vec![Step::Exit(last)]))
        })
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(boots, 2);
    let _: u64 = vmm.vm().unwrap().memory().read_obj(marker).unwrap();
}

#[test]
fn a_reboot_resets_the_vcpus_in_place_where_the_hypervisor_can() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(
        VmConfig {
            rng: true,
            ..config("reboot-in-place", 2)
        },
        console,
    )
    .unwrap();
    let (vms, records, ioevents) = (
        Arc::new(Mutex::new(0)),
        Arc::new(Mutex::new(Vec::new())),
        Arc::default(),
    );
    let (keep_vms, keep, keep_ioevents) = (vms.clone(), records.clone(), Arc::clone(&ioevents));
    let status = vmm
        .run(move || {
            *keep_vms.lock().unwrap() += 1;
            let reboot = Step::Exit(RawExit::SystemEvent { kind: 2, data: 0 });
            let mut vm = ScriptedVm::new()
                .with_vcpu_reset()
                // Boot 1 reboots; boot 2 (on the same vCPU, its script going on) powers off.
                .script(0, MpState::Runnable, vec![reboot, SHUTDOWN])
                .script(1, MpState::Stopped, vec![]);
            vm.ioevents = Arc::clone(&keep_ioevents);
            for i in 0..2 {
                keep.lock().unwrap().push(vm.record_handle(i));
            }
            Ok(vm)
        })
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(*vms.lock().unwrap(), 1, "one VM for both boots");
    let records = records.lock().unwrap();
    for (hart, record) in records.iter().enumerate() {
        let events = record.lock().unwrap().events.clone();
        let reset = events.iter().position(|e| *e == Event::Reset);
        let reset = reset.unwrap_or_else(|| panic!("hart {hart} not reset: {events:?}"));
        // After the reset, as after creation: a0 = hart ID, then the entry point.
        let after = &events[reset..];
        assert!(
            after.contains(&Event::SetReg(regs::a(0), hart as u64)),
            "{after:?}"
        );
        assert!(
            after.contains(&Event::SetReg(regs::PC, 0x8020_0000)),
            "{after:?}"
        );
    }
    // The virtio-rng's notification registered once per boot, taken back in between.
    assert_eq!(ioevents.lock().unwrap().len(), 1);
}

#[test]
fn system_failure_and_vcpu_errors_stop_the_vm_with_a_message() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("fail", 1), console.clone()).unwrap();
    let err = vmm
        .run(|| {
            Ok(ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![Step::Exit(RawExit::SystemEvent { kind: 1, data: 1 })],
            ))
        })
        .unwrap_err();
    assert!(err.to_string().contains("system failure"), "{err}");

    let mut vmm = Vmm::new(config("fail2", 1), console).unwrap();
    let err = vmm
        .run(|| {
            Ok(ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![Step::Exit(RawExit::FailEntry { reason: 0x99 })],
            ))
        })
        .unwrap_err();
    assert!(err.to_string().contains("reason 0x99"), "{err}");
}

#[test]
fn secondary_harts_wait_stopped_until_started() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("smp", 3), console).unwrap();
    let records = Arc::new(Mutex::new(Vec::new()));
    let keep = records.clone();
    let status = vmm
        .run(move || {
            let vm = ScriptedVm::new()
                // Hart 0 runs a while, then powers off.
                .script(0, MpState::Runnable, vec![Step::SleepMs(50), SHUTDOWN])
                // Hart 1 is started at once and idles; hart 2 is never started.
                .script(
                    1,
                    MpState::Stopped,
                    vec![Step::SetMpState(MpState::Runnable), Step::Idle],
                )
                .script(2, MpState::Stopped, vec![]);
            keep.lock()
                .unwrap()
                .extend([vm.record_handle(1), vm.record_handle(2)]);
            Ok(vm)
        })
        .unwrap();
    assert_eq!(status, 0);
    let records = records.lock().unwrap();
    let runs = |i: usize| {
        records[i]
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| **e == Event::Run)
            .count()
    };
    assert!(runs(0) > 0, "hart 1 was started, so it entered the guest");
    // Hart 2 was never started: it waited in one KVM_RUN (KVM sleeps a stopped vCPU) until
    // the stop's kick, instead of polling its mp_state every millisecond for 50 ms.
    assert_eq!(runs(1), 1, "hart 2 polled instead of waiting");
}

#[test]
fn uart_output_and_plic_interrupts_through_the_bus() {
    use rvvmm::arch::riscv64::layout::{PLIC_BASE, UART_BASE};
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("uart", 1), console.clone()).unwrap();
    let write = |addr: u64, len: u8, value: u32| {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&value.to_le_bytes());
        Step::Exit(RawExit::MmioWrite { addr, len, data })
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    let status = vmm
        .run(move || {
            let vm = ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![
                    write(PLIC_BASE + 4 * 10, 4, 1), // priority of the UART's source
                    write(PLIC_BASE + 0x2000 + 0x80, 4, 1 << 10), // enable it for hart 0, S-mode
                    write(UART_BASE + 1, 1, 0x2),    // UART: THR-empty interrupt on
                    write(UART_BASE, 1, u32::from(b'A')),
                    write(UART_BASE, 1, u32::from(b'\n')),
                    Step::Exit(RawExit::MmioRead {
                        addr: PLIC_BASE + 0x20_1004,
                        len: 4,
                    }), // claim
                    SHUTDOWN,
                ],
            );
            keep.lock().unwrap().push(vm.line_handle(0));
            Ok(vm)
        })
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(console.output_string(), "A\n");
    // THR-empty raised the UART's source; the claim took it: the line went up, then down.
    let levels = lines.lock().unwrap()[0].levels.lock().unwrap().clone();
    assert_eq!(levels, [true, false]);
}

#[test]
fn dump_dtb_patches_a_qemu_dtb_to_the_vcpu() {
    use rvvmm::arch::riscv64::fdt::tree::Tree;
    let dir = std::env::temp_dir().join(format!("rvvmm-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.dtb");
    let cfg = VmConfig {
        kernel: kernel_file("dump"),
        // Carried in the test executable, which also runs far from the tree (the lab's L1).
        dtb: Some({
            let path = dir.join("virt.dtb");
            std::fs::write(&path, include_bytes!("data/qemu-virt-smp2.dtb")).unwrap();
            path
        }),
        cmdline: Some("console=ttyS0".into()),
        cpus: Some(1),
        ..Default::default()
    };
    let vmm = Vmm::new(cfg, Arc::new(BufferConsole::default())).unwrap();
    assert_eq!(
        vmm.vm().unwrap().ram_size(),
        2 << 30,
        "RAM from the dtb's /memory"
    );
    let vm = ScriptedVm::new()
        .with_reg(rvvmm::arch::riscv64::regs::CONFIG_ISA, 0x112d)
        .with_reg(rvvmm::arch::riscv64::regs::TIMER_FREQUENCY, 12_345_678);
    vmm.dump_dtb(&vm, &out).unwrap();
    let tree = Tree::parse(&std::fs::read(&out).unwrap()).unwrap();
    let cpu0 = tree.node("/cpus/cpu@0").unwrap();
    assert_eq!(cpu0.prop_str("riscv,isa"), Some("rv64imafdc"));
    assert_eq!(
        tree.node("/cpus/cpu@1").unwrap().prop_str("status"),
        Some("disabled")
    );
    assert_eq!(
        tree.node("/cpus").unwrap().prop_u32("timebase-frequency"),
        Some(12_345_678)
    );
    assert_eq!(
        tree.node("/chosen").unwrap().prop_str("bootargs"),
        Some("console=ttyS0")
    );
}

#[test]
fn virtio_interrupts_on_the_in_kernel_aia_are_edges() {
    use rvvmm::arch::riscv64::fdt::tree::Tree;
    let mut cfg = config("aia-edges", 1);
    cfg.rng = true;
    cfg.console = rvvmm::config::ConsoleKind::Virtio;
    // The dtb says rising edges for the virtio devices, a level for the UART.
    let out = std::env::temp_dir().join(format!("rvvmm-edges-{}.dtb", std::process::id()));
    let vmm = Vmm::new(cfg.clone(), Arc::new(BufferConsole::default())).unwrap();
    vmm.dump_dtb(&ScriptedVm::new().with_aia(), &out).unwrap();
    let tree = Tree::parse(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let irq = |path: &str| tree.node(path).unwrap().prop_u32s("interrupts");
    assert_eq!(irq("/soc/virtio_mmio@10001000"), vec![1, 1], "rng");
    assert_eq!(irq("/soc/virtio_mmio@10002000"), vec![2, 1], "console");
    assert_eq!(irq("/soc/serial@10000000"), vec![10, 4]);
    // A run: nothing was used, so no virtio line was pulsed (and none raised and left high).
    let mut vmm = Vmm::new(cfg, Arc::new(BufferConsole::default())).unwrap();
    let vm = ScriptedVm::new()
        .with_aia()
        .script(0, MpState::Runnable, vec![SHUTDOWN]);
    let lines = vm.irq_lines.clone();
    let mut vm = Some(vm);
    assert_eq!(vmm.run(|| Ok(vm.take().expect("one boot"))).unwrap(), 0);
    assert!(lines.lock().unwrap().iter().all(|&(irq, _)| irq > 8));
}

#[test]
fn devices_beyond_the_sources_kvms_aplic_reports_are_refused() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("aplic-sources", 1), console).unwrap();
    let mut vm = ScriptedVm::new().with_aia();
    vm.aia_sources = Some(5);
    let mut vm = Some(vm.script(0, MpState::Runnable, vec![SHUTDOWN]));
    let err = vmm.run(|| Ok(vm.take().expect("one boot"))).unwrap_err();
    // The UART is source 10, as on QEMU's virt machine.
    assert_eq!(
        err.to_string(),
        "the in-kernel APLIC has 5 interrupt sources, and a device needs source 10 (use fewer devices, or --irqchip plic)"
    );
}

#[test]
fn a_vcpu_making_only_hot_exits_still_stops() {
    // The stop flag is not read after hypercall and MMIO exits; the kicks that follow a stop
    // request must end such a vCPU's KVM_RUN, however many exits it makes.
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("busy", 2), console).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let status = vmm.run(|| {
            Ok(ScriptedVm::new()
                .script(
                    0,
                    MpState::Runnable,
                    vec![Step::Busy(RawExit::MmioWrite {
                        addr: 0x2000_0000,
                        len: 4,
                        data: [1, 0, 0, 0, 0, 0, 0, 0],
                    })],
                )
                .script(1, MpState::Runnable, vec![Step::SleepMs(30), SHUTDOWN]))
        });
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    let status = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the VM did not stop within 20 s: the busy vCPU was never kicked out");
    assert_eq!(status, Ok(0));
}

#[test]
fn a_guest_that_never_stops_is_stopped_by_the_timeout() {
    let console = Arc::new(BufferConsole::default());
    let mut vmm = Vmm::new(config("timeout", 2), console)
        .unwrap()
        .with_timeout(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let status = vmm.run(|| {
            Ok(ScriptedVm::new()
                .script(0, MpState::Runnable, vec![sentinel_forever()])
                .script(1, MpState::Runnable, vec![Step::Idle]))
        });
        let _ = done.send(status.map_err(|e| e.to_string()));
    });
    let status = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the timeout did not stop the VM within 20 s");
    assert_eq!(status, Ok(rvvmm::vmm::TIMEOUT_STATUS));
    assert_eq!(rvvmm::vmm::TIMEOUT_STATUS, 124);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

/// A DBCN write_byte of 'S' made forever: the guest "printing a sentinel" after asking to stop.
fn sentinel_forever() -> Step {
    Step::Busy(RawExit::Sbi(SbiCall {
        eid: 0x4442_434E,
        fid: 2,
        args: [u64::from(b'S'), 0, 0, 0, 0, 0],
    }))
}

fn finisher_write(value: u32) -> Step {
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&value.to_le_bytes());
    Step::Exit(RawExit::MmioWrite {
        addr: FINISHER_BASE,
        len: 4,
        data,
    })
}

/// Runs one boot per script in `boots` (vCPU 0 only) and returns rvvmm's status, the console
/// output, and how many times each boot's vCPU entered the guest.
fn run_boots(
    mut vmm: Vmm,
    console: &BufferConsole,
    boots: Vec<Vec<Step>>,
) -> (i32, String, Vec<usize>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let keep = records.clone();
    let mut boots = boots.into_iter();
    let status = vmm
        .run(move || {
            let steps = boots.next().expect("no more boots scripted");
            let vm = ScriptedVm::new().script(0, MpState::Runnable, steps);
            keep.lock().unwrap().push(vm.record_handle(0));
            Ok(vm)
        })
        .unwrap();
    let runs = records
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            r.lock()
                .unwrap()
                .events
                .iter()
                .filter(|e| **e == Event::Run)
                .count()
        })
        .collect();
    (status, console.output_string(), runs)
}

#[test]
fn a_guest_that_asks_to_stop_never_runs_another_instruction() {
    // Each stop a guest can ask for, followed by a guest that would print forever: the vCPU
    // must not re-enter the guest after the request (one KVM_RUN a boot, no sentinel).
    let srst = |kind| Step::Exit(RawExit::SystemEvent { kind, data: 0 });
    let cases: Vec<(&str, Vec<Step>, i32)> = vec![
        (
            "finisher exit code",
            vec![finisher_write((42 << 16) | 0x3333)],
            42,
        ),
        ("finisher pass", vec![finisher_write(0x5555)], 0),
        ("SRST shutdown", vec![srst(1)], 0),
    ];
    for (name, mut steps, want) in cases {
        let console = Arc::new(BufferConsole::default());
        let vmm = Vmm::new(config("stop-at-once", 1), console.clone()).unwrap();
        steps.push(sentinel_forever());
        let (status, output, runs) = run_boots(vmm, &console, vec![steps]);
        assert_eq!(status, want, "{name}");
        assert_eq!(output, "", "{name}: the guest ran on after asking to stop");
        assert_eq!(runs, [1], "{name}: KVM_RUN entries");
    }
}

#[test]
fn a_reboot_request_ends_the_boot_before_the_next_instruction() {
    for (name, reboot) in [
        ("finisher reset", finisher_write(0x7777)),
        (
            "SRST reboot",
            Step::Exit(RawExit::SystemEvent { kind: 2, data: 0 }),
        ),
    ] {
        let console = Arc::new(BufferConsole::default());
        let vmm = Vmm::new(config("reboot-at-once", 1), console.clone()).unwrap();
        let boots = vec![
            vec![reboot, sentinel_forever()],
            vec![finisher_write((3 << 16) | 0x3333), sentinel_forever()],
        ];
        let (status, output, runs) = run_boots(vmm, &console, boots);
        assert_eq!(status, 3, "{name}");
        assert_eq!(output, "", "{name}: boot 1 ran on after its reboot request");
        assert_eq!(runs, [1, 1], "{name}: KVM_RUN entries per boot");
    }
}

#[test]
fn an_embedders_hypercall_can_stop_the_vm_at_once() {
    let console = Arc::new(BufferConsole::default());
    let vmm = Vmm::new(config("hvc-stop", 1), console.clone())
        .unwrap()
        .with_hypercall_handler(Arc::new(|nr, _| match nr {
            5 => ControlFlow::Break(GuestStop::Exit(5)),
            _ => ControlFlow::Continue((0, 0)),
        }));
    let steps = vec![
        sbi(0x0848_5643, 1, [0; 6]),
        sbi(0x0848_5643, 5, [0; 6]),
        sentinel_forever(),
    ];
    let (status, output, runs) = run_boots(vmm, &console, vec![steps]);
    assert_eq!(status, 5);
    assert_eq!(output, "");
    assert_eq!(runs, [2], "one KVM_RUN per hypercall, none after the stop");
}

#[test]
fn a_system_suspend_sleeps_until_the_timer_then_runs_on() {
    let console = Arc::new(BufferConsole::default());
    let limit = std::time::Duration::from_millis(300);
    let mut vmm = Vmm::new(config("susp", 1), console.clone())
        .unwrap()
        .with_suspend_limit(limit);
    let text = GuestAddress(0x8010_0000);
    vmm.vm()
        .unwrap()
        .memory()
        .write_slice(b"resumed\n", text)
        .unwrap();
    let start = std::time::Instant::now();
    let status = vmm
        .run(|| {
            Ok(ScriptedVm::new().script(
                0,
                MpState::Runnable,
                vec![
                    // SUSP system_suspend(SUSPEND_TO_RAM, resume address, opaque).
                    sbi(0x5355_5350, 0, [0, 0x8020_0000, 7, 0, 0, 0]),
                    sbi(0x4442_434E, 0, [8, text.0, 0, 0, 0, 0]),
                    SHUTDOWN,
                ],
            ))
        })
        .unwrap();
    assert_eq!(status, 0);
    assert!(
        start.elapsed() >= limit,
        "the guest slept {:?}",
        start.elapsed()
    );
    assert_eq!(
        console.output_string(),
        "resumed\n",
        "it ran on after the wake"
    );
}

#[test]
fn a_suspend_limit_on_a_kvm_without_sbi_susp_is_a_one_line_error() {
    use rvvmm::arch::riscv64::regs::{sbi_ext, SBI_EXT_SUSP};
    let mut vmm = Vmm::new(config("nosusp", 1), Arc::new(BufferConsole::default()))
        .unwrap()
        .with_suspend_limit(std::time::Duration::from_secs(1));
    // As on Linux 6.12: KVM does not know the SUSP register, so rvvmm cannot turn it on.
    let err = vmm
        .run(|| Ok(ScriptedVm::new().with_fixed_reg(sbi_ext(SBI_EXT_SUSP))))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks SBI SUSP"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}
