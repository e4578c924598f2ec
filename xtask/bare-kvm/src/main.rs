//! The benchmark floor (`cargo xtask bench`): the least a VMM can do per exit. It maps 64 MiB of
//! RAM at 0x8000_0000, loads a flat guest at RAM + 2 MiB (where rvvmm puts one), enables SBI DBCN and answers every exit with
//! the same result rvvmm gives (hypercall 0 -> (0, 1), DBCN -> stdout, MMIO read -> 0, MMIO
//! write ignored), with no devices, bus, threads or logging. `bare-kvm [--timing] [--seccomp-floor] GUEST.bin`
//!
//! `--seccomp-floor` runs it under a seccomp filter that allows everything (see
//! `seccomp_allow_all`): the floor of a VMM whose vCPU threads are sandboxed.
//!
//! `--timing` also counts the time-CSR ticks spent in user space between KVM_RUN's return and
//! the next KVM_RUN, and prints `EXIT-TIMING exits=N user_ticks=T` at the end, as rvvmm's
//! `exit-timing` build does.

#[cfg(target_arch = "riscv64")]
fn main() {
    if let Err(e) = floor::run() {
        eprintln!("bare-kvm: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_arch = "riscv64"))]
fn main() {
    eprintln!("bare-kvm runs on riscv64 hosts with KVM only");
    std::process::exit(1);
}

#[cfg(target_arch = "riscv64")]
mod floor {
    use std::io::Write;

    use kvm_bindings::{kvm_userspace_memory_region, KVM_EXIT_RISCV_SBI};
    use kvm_ioctls::{Kvm, VcpuExit};

    const RAM_BASE: u64 = 0x8000_0000;
    const RAM_SIZE: usize = 64 << 20;
    /// Where a flat guest goes and is entered, as in rvvmm.
    const LOAD_OFFSET: usize = 2 << 20;
    const REG_CORE: u64 = 0x8030_0000_0200_0000;
    const REG_DBCN: u64 = 0x8030_0000_0800_0009;

    /// Installs a seccomp filter that allows every call after loading an argument: the
    /// kernel caches the verdict of a filter that ignores the arguments (and then runs none),
    /// but must run one that reads them on every call, as it must rvvmm's, whose ioctl rules
    /// read the command. The floor of a sandboxed VMM's exit: what seccomp costs whatever a
    /// filter says.
    fn seccomp_allow_all() -> Result<(), String> {
        let ret_allow = libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        };
        let load_arg1 = libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 24,
        };
        let mut program = [load_arg1, ret_allow];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prctl with constant arguments; seccomp reads `fprog`, which points at
        // `program`, alive for the call.
        let rc = unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                -1
            } else {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog,
                ) as i32
            }
        };
        if rc != 0 {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn rdtime() -> u64 {
        let t: u64;
        // SAFETY: rdtime reads the time CSR into a register and touches no memory.
        unsafe { std::arch::asm!("rdtime {0}", out(reg) t, options(nomem, nostack)) };
        t
    }

    pub fn run() -> Result<(), String> {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let timing = args.first().is_some_and(|a| a == "--timing");
        if timing {
            args.remove(0);
        }
        // `--seccomp-floor`: run under what a rvvmm vCPU thread of a first boot runs, one
        // seccomp filter the kernel must run on each ioctl, here allowing everything.
        let seccomp_floor = args.first().is_some_and(|a| a == "--seccomp-floor");
        if seccomp_floor {
            args.remove(0);
        }
        let path = args
            .pop()
            .filter(|_| args.is_empty())
            .ok_or("usage: bare-kvm [--timing] [--seccomp-floor] GUEST.bin")?;
        let guest = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        if guest.len() > RAM_SIZE - LOAD_OFFSET {
            return Err("guest larger than RAM".into());
        }
        let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        // SAFETY: a fresh anonymous private mapping; the result is checked below.
        let ram = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RAM_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ram == libc::MAP_FAILED {
            return Err("mmap of guest RAM failed".into());
        }
        let ram = ram.cast::<u8>();
        // SAFETY: `ram` is RAM_SIZE writable bytes and the guest fits after LOAD_OFFSET.
        unsafe { std::ptr::copy_nonoverlapping(guest.as_ptr(), ram.add(LOAD_OFFSET), guest.len()) };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: RAM_BASE,
            memory_size: RAM_SIZE as u64,
            userspace_addr: ram as u64,
        };
        // SAFETY: the mapping lives until the process exits, longer than the VM.
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory region: {e}"))?;
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        for (id, value) in [
            (REG_DBCN, 1u64),
            (REG_CORE, RAM_BASE + LOAD_OFFSET as u64),
            (REG_CORE + 10, 0),
            (REG_CORE + 11, 0),
        ] {
            vcpu.set_one_reg(id, &value.to_le_bytes())
                .map_err(|e| format!("ONE_REG {id:#x}: {e}"))?;
        }
        if seccomp_floor {
            seccomp_allow_all()?;
        }
        let mut out = std::io::stdout().lock();
        let (mut returned, mut user_ticks, mut exits) = (0u64, 0u64, 0u64);
        let report = |exits: u64, user_ticks: u64| {
            if timing {
                eprintln!("EXIT-TIMING exits={exits} user_ticks={user_ticks}");
            }
        };
        loop {
            if timing && returned != 0 {
                user_ticks += rdtime() - returned;
                exits += 1;
            }
            let result = vcpu.run();
            if timing {
                returned = rdtime();
            }
            match result {
                Ok(VcpuExit::MmioRead(_, data)) => data.fill(0),
                Ok(VcpuExit::MmioWrite(..)) => {}
                Ok(VcpuExit::SystemEvent(..)) => {
                    report(exits, user_ticks);
                    return Ok(());
                }
                Ok(VcpuExit::Unsupported(KVM_EXIT_RISCV_SBI)) => {
                    let run = vcpu.get_kvm_run();
                    // SAFETY: exit_reason is KVM_EXIT_RISCV_SBI, so `riscv_sbi` is the live member.
                    let sbi = unsafe { &mut run.__bindgen_anon_1.riscv_sbi };
                    let ret = match (sbi.extension_id, sbi.function_id) {
                        (0x0848_5643, 0) => (0, 1),
                        (0x4442_434E, 2) => {
                            let _ = out
                                .write_all(&[sbi.args[0] as u8])
                                .and_then(|_| out.flush());
                            (0, 0)
                        }
                        (0x4442_434E, 0) => {
                            let (len, addr) = (sbi.args[0] as usize, sbi.args[1]);
                            let off = addr.wrapping_sub(RAM_BASE) as usize;
                            if off < RAM_SIZE && len <= RAM_SIZE - off {
                                // SAFETY: [off, off + len) lies inside the RAM mapping.
                                let bytes =
                                    unsafe { std::slice::from_raw_parts(ram.add(off), len) };
                                let _ = out.write_all(bytes).and_then(|_| out.flush());
                                (0, len as u64)
                            } else {
                                (-3i64 as u64, 0)
                            }
                        }
                        _ => (-2i64 as u64, 0),
                    };
                    sbi.ret = [ret.0, ret.1];
                }
                Ok(other) => return Err(format!("unexpected exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR => {}
                Err(e) => return Err(format!("KVM_RUN: {e}")),
            }
        }
    }
}
