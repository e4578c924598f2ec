//! A thread's filter laid out as a search over the system call numbers.
//!
//! seccompiler (rust-vmm) compiles a filter as a linear chain: one comparison per listed call,
//! in number order. Running it costs little, since the kernel caches the verdict of every call a
//! filter allows whatever its arguments; installing it does not: the kernel works that cache out
//! by running the filter for every system call number (about 460 on riscv64), each run walking
//! the chain. In the nested lab (L1's kernel under TCG, its BPF interpreted) that made installing
//! the main thread's filter take 2 ms, and a vCPU thread's about 1 ms before its guest's first
//! instruction. seccompiler has no other layout, so this one is ours: the same rules, reached by
//! a binary search over the listed numbers (ioctl, a vCPU's call on every exit, looked at first),
//! each call with argument rules running the rules seccompiler compiled for it. The unit tests
//! run both filters through a BPF interpreter for every call number and the argument values the
//! rules name, and the kernel's own checks run on every install (tests/seccomp.rs, the lab).

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Listed calls at most per leaf of the search: a leaf compares them one by one.
const LEAF: usize = 4;

// Classic BPF opcodes (linux/bpf_common.h): class | operation | source.
/// BPF_LD | BPF_W | BPF_ABS (BPF_LD and BPF_W are 0).
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JA.
const BPF_JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;
/// Where seccomp_data holds the call number.
const NR_OFFSET: u32 = 0;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What a listed call does: allowed whatever its arguments, or its compiled rules (which end in
/// the mismatch action when none matches).
enum Action {
    Allow,
    Rules(BpfProgram),
}

/// The filter of `rules` (call number → rules; no rules: allowed whatever the arguments),
/// `mismatch` for every other call, for `arch`: what seccompiler's `SeccompFilter` would
/// allow and refuse, laid out for a cheap install.
pub(super) fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, seccompiler::BackendError> {
    let allow = u32::from(SeccompAction::Allow);
    let refuse = u32::from(mismatch.clone());
    // seccompiler's own start: the architecture check (a wrong one kills the process). It
    // compiles a filter without rules as that check and the mismatch action.
    let mut program: BpfProgram =
        SeccompFilter::new(BTreeMap::new(), mismatch, SeccompAction::Allow, arch)?.try_into()?;
    program.pop();
    program.push(stmt(BPF_LD_W_ABS, NR_OFFSET));
    let mut entries = Vec::with_capacity(rules.len());
    for (nr, chain) in rules {
        let nr = u32::try_from(nr).map_err(|_| seccompiler::BackendError::InvalidArgumentNumber)?;
        let action = if chain.is_empty() {
            Action::Allow
        } else {
            // As seccompiler chains a call's rules: each rule, on a match the allow action;
            // after the last, the mismatch action.
            let mut code = BpfProgram::new();
            for rule in chain {
                let compiled: BpfProgram = rule.into();
                code.extend(compiled);
                code.push(stmt(BPF_RET_K, allow));
            }
            code.push(stmt(BPF_RET_K, refuse));
            Action::Rules(code)
        };
        entries.push((nr, action));
    }
    // ioctl first: every vCPU exit makes one (KVM_RUN), so its search is one comparison, then
    // a jump past the search to its rules.
    let ioctl = entries
        .iter()
        .position(|(nr, _)| i64::from(*nr) == libc::SYS_ioctl)
        .map(|at| entries.remove(at));
    let search = search(&entries, allow, refuse)?;
    match ioctl {
        Some((nr, Action::Rules(rules))) => {
            program.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
            program.push(stmt(BPF_JMP_JA, search.len() as u32));
            program.extend(search);
            program.extend(rules);
        }
        Some((nr, Action::Allow)) => {
            program.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
            program.push(stmt(BPF_RET_K, allow));
            program.extend(search);
        }
        None => program.extend(search),
    }
    // A rule's "skip to the next rule" jump, never taken here (a call enters only its own
    // rules), may still point one past its call's code: the kernel checks that every jump
    // lands inside the program.
    program.push(stmt(BPF_RET_K, refuse));
    if program.len() >= 4096 {
        return Err(seccompiler::BackendError::FilterTooLarge(program.len()));
    }
    Ok(program)
}

/// The search over `entries` (sorted by number), the number in the accumulator: a leaf for a
/// few, else a comparison with the middle one's number that goes on into either half.
fn search(
    entries: &[(u32, Action)],
    allow: u32,
    refuse: u32,
) -> Result<BpfProgram, seccompiler::BackendError> {
    if entries.len() <= LEAF {
        return leaf(entries, allow, refuse);
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let high_first = high[0].0;
    let (low, high) = (search(low, allow, refuse)?, search(high, allow, refuse)?);
    let mut code = Vec::with_capacity(low.len() + high.len() + 2);
    // At or above the high half's first number: on past the low half (a JA, whose offset is 32
    // bits; the conditional jumps' are 8).
    code.push(jump(BPF_JMP_JGE_K, high_first, 0, 1));
    code.push(stmt(BPF_JMP_JA, low.len() as u32));
    code.extend(low);
    code.extend(high);
    Ok(code)
}

/// A leaf: each number compared in turn, a match jumping to its action; no match: refused.
/// Layout: the comparisons, the refusal, one allow (if any call here is allowed outright), then
/// each call's rules. Rules too long for a conditional jump (255 instructions) to reach past
/// make the filter too large.
fn leaf(
    entries: &[(u32, Action)],
    allow: u32,
    refuse: u32,
) -> Result<BpfProgram, seccompiler::BackendError> {
    let compares = entries.len();
    let any_allow = entries.iter().any(|(_, a)| matches!(a, Action::Allow));
    let allow_at = compares + 1;
    let mut rules_at = allow_at + usize::from(any_allow);
    let mut code = Vec::new();
    let mut tails = Vec::new();
    for (i, (nr, action)) in entries.iter().enumerate() {
        let target = match action {
            Action::Allow => allow_at,
            Action::Rules(rules) => {
                let at = rules_at;
                rules_at += rules.len();
                tails.extend_from_slice(rules);
                at
            }
        };
        // From the instruction after this one.
        let offset = u8::try_from(target - i - 1)
            .map_err(|_| seccompiler::BackendError::FilterTooLarge(rules_at))?;
        code.push(jump(BPF_JMP_JEQ_K, *nr, offset, 0));
    }
    code.push(stmt(BPF_RET_K, refuse));
    if any_allow {
        code.push(stmt(BPF_RET_K, allow));
    }
    code.extend(tails);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{rules, SeccompMode, ThreadKind};

    /// seccomp_data as the kernel gives it to a filter.
    struct Data {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    impl Data {
        fn word(&self, offset: u32) -> u32 {
            match offset {
                0 => self.nr,
                4 => self.arch,
                8 | 12 => 0, // the instruction pointer
                o if (16..64).contains(&o) && o % 4 == 0 => {
                    let arg = self.args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                o => panic!("load from offset {o}"),
            }
        }
    }

    /// Runs a classic BPF program as the kernel does (the instructions seccompiler and this
    /// layout use), checking every jump lands inside it.
    fn run(program: &[sock_filter], data: &Data) -> u32 {
        run_counting(program, data).0
    }

    /// [`run`], and how many instructions it ran.
    fn run_counting(program: &[sock_filter], data: &Data) -> (u32, usize) {
        let (mut pc, mut a, mut steps) = (0usize, 0u32, 0usize);
        loop {
            steps += 1;
            let ins = &program[pc];
            let next = |off: u32| {
                let to = pc + 1 + off as usize;
                assert!(to < program.len(), "jump out of the program at {pc}");
                to
            };
            pc = match ins.code {
                BPF_LD_W_ABS => {
                    a = data.word(ins.k);
                    pc + 1
                }
                0x54 => {
                    // BPF_ALU | BPF_AND | BPF_K
                    a &= ins.k;
                    pc + 1
                }
                BPF_JMP_JA => next(ins.k),
                BPF_RET_K => return (ins.k, steps),
                code => {
                    let taken = match code {
                        BPF_JMP_JEQ_K => a == ins.k,
                        BPF_JMP_JGE_K => a >= ins.k,
                        0x25 => a > ins.k,      // BPF_JGT
                        0x45 => a & ins.k != 0, // BPF_JSET
                        other => panic!("opcode {other:#x} at {pc}"),
                    };
                    next(u32::from(if taken { ins.jt } else { ins.jf }))
                }
            };
        }
    }

    /// The values `kind`'s argument rules compare with.
    fn named_values(kind: ThreadKind) -> Vec<u64> {
        use crate::seccomp::{exact_ioctls, MAIN_IOCTL_TYPES};
        let mut values: Vec<u64> = MAIN_IOCTL_TYPES.iter().map(|ty| ty << 8).collect();
        values.push(libc::AF_UNIX as u64);
        values.extend(exact_ioctls(kind));
        values
    }

    /// The argument values worth trying against `kind`'s rules: each value its rules name,
    /// beside and around it, with the upper half set, and a few others.
    fn arg_values() -> Vec<u64> {
        let mut values = vec![0, 1, u64::MAX, 0xffff_ffff, 1 << 32];
        for kind in ThreadKind::ALL {
            for v in named_values(kind) {
                values.extend([
                    v,
                    v + 1,
                    v.wrapping_sub(1),
                    v | 1 << 32,
                    v ^ 0xff,
                    v & 0xff00,
                ]);
            }
        }
        values.sort_unstable();
        values.dedup();
        values
    }

    /// This architecture's AUDIT_ARCH value, as seccomp_data gives it.
    fn audit() -> u32 {
        match std::env::consts::ARCH {
            "x86_64" => 0xc000_003e,
            _ => 0xc000_00f3,
        }
    }

    #[test]
    fn it_allows_and_refuses_as_seccompilers_chain() {
        let arch: TargetArch = std::env::consts::ARCH.try_into().unwrap();
        let wrong_arch: BpfProgram = SeccompFilter::new(
            BTreeMap::new(),
            SeccompAction::Trap,
            SeccompAction::Allow,
            arch,
        )
        .unwrap()
        .try_into()
        .unwrap();
        let own_arch = run(
            &wrong_arch,
            &Data {
                nr: 0,
                arch: 0,
                args: [0; 6],
            },
        );
        assert_eq!(own_arch, u32::from(SeccompAction::KillProcess));
        let audit = audit();
        let values = arg_values();
        for kind in ThreadKind::ALL {
            for mode in [SeccompMode::Enforce, SeccompMode::Log] {
                let mismatch = match mode {
                    SeccompMode::Log => SeccompAction::Log,
                    _ => SeccompAction::Trap,
                };
                let chain: BpfProgram =
                    SeccompFilter::new(rules(kind), mismatch.clone(), SeccompAction::Allow, arch)
                        .unwrap()
                        .try_into()
                        .unwrap();
                let tree = compile(rules(kind), mismatch, arch).unwrap();
                let mut compared = 0;
                for arch in [audit, 0x4000_0028] {
                    for nr in 0..1024 {
                        let argful = rules(kind)
                            .get(&i64::from(nr))
                            .is_some_and(|r| !r.is_empty());
                        let tries: &[u64] = if argful { &values } else { &[0] };
                        for (slot, &v) in (0..6).flat_map(|s| tries.iter().map(move |v| (s, v))) {
                            let mut args = [0u64; 6];
                            args[slot] = v;
                            let data = Data { nr, arch, args };
                            assert_eq!(
                                run(&tree, &data),
                                run(&chain, &data),
                                "{} filter, call {nr}, argument {slot} = {v:#x}, arch {arch:#x}",
                                kind.name()
                            );
                            compared += 1;
                        }
                    }
                }
                assert!(compared > 2048);
            }
        }
    }

    #[test]
    fn it_is_no_longer_than_the_chain_and_searches_in_few_steps() {
        let arch: TargetArch = std::env::consts::ARCH.try_into().unwrap();
        for kind in ThreadKind::ALL {
            let chain: BpfProgram =
                SeccompFilter::new(rules(kind), SeccompAction::Trap, SeccompAction::Allow, arch)
                    .unwrap()
                    .try_into()
                    .unwrap();
            let tree = compile(rules(kind), SeccompAction::Trap, arch).unwrap();
            assert!(
                tree.len() <= chain.len(),
                "{}: {} > {}",
                kind.name(),
                tree.len(),
                chain.len()
            );
            // What the kernel's install runs: the filter for every call number (here to its
            // end, arguments 0).
            let steps = |program: &[sock_filter]| -> usize {
                (0..512)
                    .map(|nr| {
                        let data = Data {
                            nr,
                            arch: audit(),
                            args: [0; 6],
                        };
                        run_counting(program, &data).1
                    })
                    .sum()
            };
            let (tree_steps, chain_steps) = (steps(&tree), steps(&chain));
            assert!(
                tree_steps * 4 < chain_steps,
                "{}: {tree_steps} steps against the chain's {chain_steps}",
                kind.name()
            );
        }
    }
}
