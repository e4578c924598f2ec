//! Seccomp filters, one per kind of thread (`--seccomp true|false|log`, as Cloud Hypervisor
//! has): each thread, once set up and before the guest's first instruction, allows only the
//! system calls its own work makes. A guest that takes over a vCPU thread through a bug in a
//! device model can then do what a vCPU thread does (KVM_RUN and its registers, futexes,
//! console writes) and nothing else: no open, no socket, no exec, no new KVM VM.
//!
//! The filters are built with rust-vmm's seccompiler. A call outside the list is trapped:
//! the SIGSYS handler below writes one line naming the thread and the call, restores the
//! terminal, and ends rvvmm with SIGSYS. `--seccomp log` lets every call through and the
//! kernel logs the ones outside the lists (`audit: type=1326 ... syscall=N` in dmesg): how the
//! lists were measured and how to find what a new code path needs.
//!
//! Filters stack: a thread started by a filtered thread keeps its parent's filter as well as
//! its own. The main thread installs its filter once the first boot's threads run (the
//! control loop, before it reads any request), so those threads, the input and API threads
//! run under their own filters alone. Threads it starts after that (a reboot's vCPU threads,
//! a boot through the API) run under both, so its list also holds everything those threads
//! do between their start and their own filter (naming themselves, installing the filter),
//! and whatever a device or vCPU thread may do is in its list too.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
};

mod tree;

/// Errors of the seccomp layer.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter of a thread kind could not be compiled (a bug in the lists).
    #[error("cannot build the seccomp filter of the {0} thread: {1}")]
    Build(&'static str, seccompiler::Error),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {0} thread: {1} (run with --seccomp false on a kernel without seccomp)")]
    Apply(&'static str, seccompiler::Error),
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// What `--seccomp` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Filters installed; a call outside a thread's list ends rvvmm (the default).
    #[default]
    Enforce,
    /// Filters installed, but a call outside a list is only logged by the kernel.
    Log,
    /// No filters.
    Off,
}

impl FromStr for SeccompMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "true" => Ok(SeccompMode::Enforce),
            "log" => Ok(SeccompMode::Log),
            "false" => Ok(SeccompMode::Off),
            other => Err(format!("'{other}' is not one of true, false, log")),
        }
    }
}

/// The kinds of threads rvvmm runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread: the control loop, which also makes VMs (boot, reboot, restore,
    /// `vm.create`) and writes snapshots.
    Main,
    /// A vCPU thread: KVM_RUN and the exits it handles (MMIO devices, SBI).
    Vcpu,
    /// The device thread (event loop): virtio queues, disk and tap I/O, console input.
    EventLoop,
    /// The console input thread (stdin that epoll cannot watch).
    Stdin,
    /// The REST API thread.
    Api,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::EventLoop,
        ThreadKind::Stdin,
        ThreadKind::Api,
    ];

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::EventLoop => "event-loop",
            ThreadKind::Stdin => "stdin",
            ThreadKind::Api => "api",
        }
    }
}

static MODE: OnceLock<SeccompMode> = OnceLock::new();
/// Each kind's compiled filter, built the first time a thread of that kind asks for it.
static FILTERS: [OnceLock<BpfProgram>; ThreadKind::ALL.len()] =
    [const { OnceLock::new() }; ThreadKind::ALL.len()];

thread_local! {
    /// The kind of filter this thread runs under, for the SIGSYS message.
    static FILTERED_AS: Cell<&'static str> = const { Cell::new("unfiltered") };
}

/// Turns filtering on for this process (`--seccomp`) and installs the SIGSYS handler. Threads
/// then call [`apply`], which builds their kind's filter the first time. Building is not done
/// here for every kind: in the nested lab a filter takes about 0.25 ms to build, and most runs
/// start only some kinds of thread (no API thread without `--api-socket`, no device thread
/// without devices). A filter that cannot be built is a bug in the lists below, which the unit
/// tests build for every kind and mode. Without this call (a library user, the tests)
/// [`apply`] does nothing.
pub fn enable(mode: SeccompMode) -> Result<(), SeccompError> {
    if mode == SeccompMode::Enforce {
        install_sigsys_handler().map_err(SeccompError::Handler)?;
    }
    let _ = MODE.set(mode);
    Ok(())
}

/// Installs the filter of `kind` on the calling thread, if filtering is on.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let mode = match MODE.get() {
        None | Some(SeccompMode::Off) => return Ok(()),
        Some(&mode) => mode,
    };
    let slot = &FILTERS[kind as usize];
    let program = match slot.get() {
        Some(program) => program,
        None => {
            let built = build(kind, mode)?;
            // Two threads of one kind may both have built it; the first one's is kept.
            slot.get_or_init(|| built)
        }
    };
    FILTERED_AS.with(|c| c.set(kind.name()));
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Apply(kind.name(), e))
}

/// [`apply`] for a thread that has no one to report to: a filter the kernel refuses here (it
/// took the main thread's, so only a lack of memory could) ends rvvmm rather than leave the
/// thread unfiltered.
pub fn apply_or_exit(kind: ThreadKind) {
    if let Err(e) = apply(kind) {
        crate::console::terminal::restore();
        eprintln!("rvvmm: {e}");
        std::process::exit(1);
    }
}

/// The compiled filter of `kind` under `mode` (`Off` has none).
pub fn build(kind: ThreadKind, mode: SeccompMode) -> Result<BpfProgram, SeccompError> {
    let mismatch = match mode {
        SeccompMode::Enforce | SeccompMode::Off => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
    };
    let fail = |e| SeccompError::Build(kind.name(), seccompiler::Error::Backend(e));
    let arch = std::env::consts::ARCH.try_into().map_err(fail)?;
    tree::compile(rules(kind), mismatch, arch).map_err(fail)
}

// ioctl numbers, encoded as asm-generic's _IOC (x86_64 and riscv64 share the encoding), each
// with the struct size from the Linux uapi header it comes from.
const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;
const KVMIO: u64 = 0xAE;
// include/uapi/linux/kvm.h
const KVM_RUN: u64 = ioc(NONE, KVMIO, 0x80, 0);
const KVM_INTERRUPT: u64 = ioc(WRITE, KVMIO, 0x86, 4); // struct kvm_interrupt
const KVM_IRQ_LINE: u64 = ioc(WRITE, KVMIO, 0x61, 8); // struct kvm_irq_level
const KVM_GET_MP_STATE: u64 = ioc(READ, KVMIO, 0x98, 4); // struct kvm_mp_state
const KVM_SET_MP_STATE: u64 = ioc(WRITE, KVMIO, 0x99, 4);
const KVM_GET_ONE_REG: u64 = ioc(WRITE, KVMIO, 0xab, 16); // struct kvm_one_reg
const KVM_SET_ONE_REG: u64 = ioc(WRITE, KVMIO, 0xac, 16);
const KVM_GET_REG_LIST: u64 = ioc(READ | WRITE, KVMIO, 0xb0, 8); // struct kvm_reg_list

// include/uapi/asm-generic/ioctls.h: the terminal's, for the SIGSYS and SIGTSTP handlers'
// restore of the terminal (tcsetattr), which may run on any thread.
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;
// include/uapi/linux/if_tun.h: a virtio-net driver's DRIVER_OK (an MMIO write, handled on the
// vCPU thread) tells the tap which offloaded frames the guest takes.
const TUNSETOFFLOAD: u64 = ioc(WRITE, b'T' as u64, 0xd0, 4);

/// The system calls every thread makes: memory (the allocator), futexes (locks, condvars,
/// channels), time, the log and console writes, signals (vCPU kicks, the handlers), its
/// own end.
const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity, // std's available_parallelism, glibc's thread start
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom, // std's HashMap keys in a new thread; virtio-rng's entropy
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap, // glibc realloc of large blocks
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_epoll_pwait,
    libc::SYS_ppoll,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rseq, // glibc registers each new thread's rseq area
];

/// The main thread's: making VMs (/dev/kvm, guest RAM, taps, disks, files to load, the vsock
/// socket: at boot, reboot, restore and `vm.create`), the threads, snapshots (a directory of
/// files written and renamed). The API socket is made before the filter (its thread has its
/// own). The device thread starts under this filter, so vsock's socket calls are here too
/// (`socket` held to AF_UNIX in [`rules`]). virtio-fs: guest RAM in a memfd, the vhost-user
/// handshake (messages with fds: sendmsg and recvmsg; reply time-outs: setsockopt), which the
/// vCPU and device threads, under this filter too, continue.
const MAIN: &[libc::c_long] = &[
    libc::SYS_memfd_create,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_setsockopt,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_openat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_flock, // disk images locked for the VM's life
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_clone,
    libc::SYS_clone3, // glibc's pthread_create (clone on older glibc)
    libc::SYS_set_robust_list,
    libc::SYS_prctl, // a new thread names itself; PR_SET_NO_NEW_PRIVS before its filter
    libc::SYS_seccomp, // each thread the main thread starts installs its own filter
    libc::SYS_prlimit64, // glibc's stack size for new threads
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
];

/// A vCPU thread's own: virtio-fs's vhost-user messages, as the driver's DRIVER_OK or reset
/// (an MMIO write the vCPU thread handles) hands the queues to the backend or stops them.
const VCPU: &[libc::c_long] = &[libc::SYS_sendmsg, libc::SYS_recvmsg];

/// The device thread's: epoll, disk I/O, tap reads and writes (read/write/readv/writev are
/// common), write-zeroes and discard (fallocate), flushes, vsock's Unix sockets (accepted,
/// read and written, shut down; `socket` and `connect` for guest-initiated connections, the
/// socket's family held to AF_UNIX in [`rules`]).
const EVENT_LOOP: &[libc::c_long] = &[
    libc::SYS_sendmsg, // virtio-fs: a device dropped here stops its backend's queues
    libc::SYS_recvmsg,
    libc::SYS_epoll_ctl,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
];

/// The API thread's: the connections of its listening socket.
const API: &[libc::c_long] = &[
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
];

/// x86_64's older calls that the same library code makes there (riscv64, like every newer
/// architecture, has only the *at and p* forms): only the x86 test build meets them.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_mkdir,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[libc::c_long] = &[];

/// The ioctl type bytes the main thread may issue any ioctl of: KVM's 0xAE, and the
/// terminal's and TUN's 'T'.
const MAIN_IOCTL_TYPES: [u64; 2] = [KVMIO, b'T' as u64];

/// The ioctls each other kind may issue, exactly.
fn exact_ioctls(kind: ThreadKind) -> &'static [u64] {
    match kind {
        ThreadKind::Main => &[],
        ThreadKind::Vcpu => &[
            KVM_RUN,
            KVM_GET_ONE_REG,
            KVM_SET_ONE_REG,
            KVM_GET_REG_LIST,
            KVM_GET_MP_STATE,
            KVM_SET_MP_STATE,
            KVM_INTERRUPT,
            KVM_IRQ_LINE,
            TUNSETOFFLOAD,
            TCGETS,
            TCSETS,
        ],
        // Input wakes the UART, which raises its interrupt from the thread that read it.
        ThreadKind::Stdin => &[KVM_INTERRUPT, KVM_IRQ_LINE, TCGETS, TCSETS],
        // FIONBIO: vsock makes the host connections it accepts non-blocking.
        ThreadKind::EventLoop => &[KVM_INTERRUPT, KVM_IRQ_LINE, TCGETS, TCSETS, FIONBIO],
        ThreadKind::Api => &[FIONBIO, FIOCLEX, TCGETS, TCSETS],
    }
}

/// The ioctls a kind may issue, by number: the main thread any of [`MAIN_IOCTL_TYPES`] (by
/// the command's type byte), the others exactly theirs.
fn ioctl_rules(kind: ThreadKind) -> Vec<SeccompRule> {
    if kind == ThreadKind::Main {
        return MAIN_IOCTL_TYPES
            .iter()
            .map(|&ty| rule(1, SeccompCmpOp::MaskedEq(0xff00), ty << 8))
            .collect();
    }
    exact_ioctls(kind)
        .iter()
        .map(|&cmd| rule(1, SeccompCmpOp::Eq, cmd))
        .collect()
}

fn rule(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompRule {
    // Neither can fail: the argument index is below 6 and the rule has one condition.
    let cond = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .expect("a valid seccomp condition");
    SeccompRule::new(vec![cond]).expect("a rule with one condition")
}

/// The rules of `kind`: its system calls allowed whatever their arguments (an empty rule list
/// in seccompiler), ioctl by number.
fn rules(kind: ThreadKind) -> BTreeMap<i64, Vec<SeccompRule>> {
    let own: &[libc::c_long] = match kind {
        ThreadKind::Main => MAIN,
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Stdin => &[],
        ThreadKind::EventLoop => EVENT_LOOP,
        ThreadKind::Api => API,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(own)
        .chain(LEGACY)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    rules.insert(libc::SYS_ioctl, ioctl_rules(kind));
    if matches!(kind, ThreadKind::Main | ThreadKind::EventLoop) {
        // vsock's socket, and its guest-initiated connections: Unix sockets only.
        rules.insert(
            libc::SYS_socket,
            vec![rule(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)],
        );
    }
    rules
}

/// The system call the SIGSYS handler's test hook makes: allowed in no list (the test
/// device's trip register, `--testdev`, has a vCPU thread make it).
pub const FORBIDDEN_FOR_TESTS: libc::c_long = libc::SYS_getppid;

/// Makes the system call that no filter allows (a test hook; harmless unfiltered).
pub fn trip() {
    // SAFETY: getppid takes no arguments and changes nothing.
    unsafe { libc::syscall(FORBIDDEN_FOR_TESTS) };
}

fn install_sigsys_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid storage; the fields used are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action` is initialised and `on_sigsys` only makes async-signal-safe calls.
    if unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The SIGSYS handler: one line (thread, system call number), the terminal restored, then
/// rvvmm ends by SIGSYS. Only async-signal-safe work: no allocation, no lock, one write.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // siginfo_t's SIGSYS fields (include/uapi/asm-generic/siginfo.h): after si_signo,
    // si_errno, si_code and padding to 8 bytes, `void *_call_addr; int _syscall;`.
    // SAFETY: the kernel passes a valid siginfo_t for a SIGSYS from seccomp; offset 24 lies
    // inside it (it is 128 bytes) and holds an int.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    // SAFETY: as above; offset 16 holds the address of the system call instruction.
    let at = unsafe { info.cast::<u8>().add(16).cast::<u64>().read_unaligned() };
    let mut line = Line::default();
    line.push(b"rvvmm: seccomp: the ");
    line.push(FILTERED_AS.with(|c| c.get()).as_bytes());
    line.push(b" thread made system call ");
    line.push_number(nr);
    line.push(b", which its filter does not allow; stopping (--seccomp log lets it through and the kernel logs it)");
    // Where, for `addr2line -e rvvmm` (a call that happens rarely is found from its line).
    line.push(b" [at 0x");
    line.push_hex(at);
    if let Some(ra) = return_address(ctx) {
        line.push(b", return address 0x");
        line.push_hex(ra);
    }
    line.push(b"]\n");
    // SAFETY: writes the bytes of `line`, which live for the call.
    unsafe { libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len) };
    crate::console::terminal::restore_and_die(libc::SIGSYS);
}

/// The interrupted thread's return address register from the signal's context (`ra`: the
/// caller of the libc function that made the call), on riscv64.
#[cfg(target_arch = "riscv64")]
fn return_address(ctx: *mut libc::c_void) -> Option<u64> {
    if ctx.is_null() {
        return None;
    }
    // The kernel's riscv64 ucontext: uc_flags, uc_link, uc_stack (24 bytes), uc_sigmask (8),
    // 120 reserved bytes, then uc_mcontext (16-aligned, at 176), whose gregs[1] is ra.
    // SAFETY: the kernel passes its ucontext for an SA_SIGINFO handler; offset 184 lies in it.
    Some(unsafe { ctx.cast::<u8>().add(176 + 8).cast::<u64>().read_unaligned() })
}

#[cfg(not(target_arch = "riscv64"))]
fn return_address(_ctx: *mut libc::c_void) -> Option<u64> {
    None
}

/// A fixed buffer the SIGSYS handler formats into.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, v: u64) {
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            let nibble = (v >> (60 - 4 * i)) & 0xf;
            *d = b"0123456789abcdef"[nibble as usize];
        }
        self.push(&digits);
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 11];
        let mut i = digits.len();
        let mut v = i64::from(n).unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_builds_in_both_modes() {
        for kind in ThreadKind::ALL {
            for mode in [SeccompMode::Enforce, SeccompMode::Log] {
                let program = build(kind, mode).unwrap();
                assert!(
                    program.len() > 10,
                    "{kind:?}: {} instructions",
                    program.len()
                );
            }
        }
    }

    #[test]
    fn modes_parse_as_cloud_hypervisor_spells_them() {
        assert_eq!("true".parse(), Ok(SeccompMode::Enforce));
        assert_eq!("false".parse(), Ok(SeccompMode::Off));
        assert_eq!("log".parse(), Ok(SeccompMode::Log));
        assert!("yes".parse::<SeccompMode>().is_err());
    }

    #[test]
    fn no_list_allows_the_test_hooks_call() {
        for list in [COMMON, MAIN, EVENT_LOOP, API, LEGACY] {
            assert!(!list.contains(&FORBIDDEN_FOR_TESTS));
        }
    }

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // As vmm-sys-util's ioctl macros and Linux's headers give them.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_INTERRUPT, 0x4004_ae86);
        assert_eq!(KVM_IRQ_LINE, 0x4008_ae61);
        assert_eq!(KVM_GET_MP_STATE, 0x8004_ae98);
        assert_eq!(KVM_SET_MP_STATE, 0x4004_ae99);
        assert_eq!(KVM_GET_ONE_REG, 0x4010_aeab);
        assert_eq!(KVM_SET_ONE_REG, 0x4010_aeac);
        assert_eq!(KVM_GET_REG_LIST, 0xc008_aeb0);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
    }

    #[test]
    fn line_formats_numbers_without_allocating() {
        let mut line = Line::default();
        line.push(b"n=");
        line.push_number(0);
        line.push(b" ");
        line.push_number(435);
        line.push(b" ");
        line.push_number(-1);
        assert_eq!(&line.buf[..line.len], b"n=0 435 -1");
        let mut full = Line::default();
        full.push(&[b'x'; 300]);
        assert_eq!(full.len, 256);
    }
}
