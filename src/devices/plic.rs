//! The RISC-V PLIC (platform-level interrupt controller), in user space, with QEMU virt's
//! context layout: hart h has an M-mode context 2h and an S-mode context 2h+1. The S-mode
//! contexts drive each vCPU's external interrupt with KVM_INTERRUPT; the M-mode ones exist only
//! so a QEMU-dumped dtb matches (a KVM guest never runs in M-mode).
//!
//! rust-vmm has no PLIC, hence this file. Register map (RISC-V PLIC specification 1.0.0):
//!
//! ```text
//!   0x00_0000 + 4*s        priority of source s (s = 1..=ndev; 0 is "no interrupt")
//!   0x00_1000 + 4*w        pending bits, sources 32w..32w+31 (read-only)
//!   0x00_2000 + 0x80*c     enable bits of context c
//!   0x20_0000 + 0x1000*c   threshold of context c
//!   0x20_0004 + 0x1000*c   claim (read) / complete (write) of context c
//! ```
//!
//! Sources are edge-like, as in kvmtool's `riscv/plic.c`: `raise` sets a source pending, a claim
//! clears it, and a claimed source is not delivered again until the guest completes it. That
//! suits vm-superio's pulse-only `Trigger`.

use std::sync::{Arc, Mutex};

use crate::arch::riscv64::layout::PLIC_NDEV;
use crate::control::{Flow, CONTINUE};
use crate::devices::BusDevice;
use crate::hypervisor::InterruptLine;

const PRIORITY_BASE: u64 = 0x0;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
/// Priorities are 0..=7 on QEMU virt.
const PRIORITY_MASK: u32 = 7;
const WORDS: usize = (PLIC_NDEV as usize + 1).div_ceil(32);

#[derive(Debug)]
struct State {
    priority: [u32; PLIC_NDEV as usize + 1],
    pending: [u32; WORDS],
    in_flight: [u32; WORDS],
    enable: Vec<[u32; WORDS]>,
    threshold: Vec<u32>,
    level: Vec<bool>,
}

fn bit(s: u32) -> (usize, u32) {
    ((s / 32) as usize, 1 << (s % 32))
}

impl State {
    /// The source context `ctx` would get on a claim now.
    fn best(&self, ctx: usize) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for s in 1..=PLIC_NDEV {
            let (w, m) = bit(s);
            let prio = self.priority[s as usize];
            let ready = self.pending[w] & m != 0
                && self.in_flight[w] & m == 0
                && self.enable[ctx][w] & m != 0
                && prio > self.threshold[ctx];
            if ready && best.is_none_or(|(p, _)| prio > p) {
                best = Some((prio, s));
            }
        }
        best.map(|(_, s)| s)
    }
}

/// The PLIC.
pub struct Plic {
    state: Mutex<State>,
    /// Each hart's external interrupt line (index = hart ID).
    lines: Vec<Arc<dyn InterruptLine>>,
}

impl Plic {
    /// A PLIC for `lines.len()` harts.
    pub fn new(lines: Vec<Arc<dyn InterruptLine>>) -> Self {
        let contexts = lines.len() * 2;
        Plic {
            state: Mutex::new(State {
                priority: [0; PLIC_NDEV as usize + 1],
                pending: [0; WORDS],
                in_flight: [0; WORDS],
                enable: vec![[0; WORDS]; contexts],
                threshold: vec![0; contexts],
                level: vec![false; contexts],
            }),
            lines,
        }
    }

    /// A device asserts source `irq`.
    pub fn raise(&self, irq: u32) {
        if irq == 0 || irq > PLIC_NDEV {
            return;
        }
        let mut state = self.lock();
        let (w, m) = bit(irq);
        state.pending[w] |= m;
        self.update(&mut state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-evaluates every S-mode context's line and tells KVM about changes.
    fn update(&self, state: &mut State) {
        for (hart, line) in self.lines.iter().enumerate() {
            let ctx = 2 * hart + 1;
            let level = state.best(ctx).is_some();
            if level != state.level[ctx] {
                state.level[ctx] = level;
                if let Err(e) = line.set_level(level) {
                    log::error!("PLIC: cannot set hart {hart}'s external interrupt: {e}");
                }
            }
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let mut state = self.lock();
        let contexts = state.threshold.len() as u64;
        match offset {
            o if o < PENDING_BASE => {
                let s = (o - PRIORITY_BASE) / 4;
                state.priority.get(s as usize).copied().unwrap_or(0)
            }
            o if o < ENABLE_BASE => {
                let w = ((o - PENDING_BASE) / 4) as usize;
                state.pending.get(w).copied().unwrap_or(0)
            }
            o if o < CONTEXT_BASE => {
                let ctx = (o - ENABLE_BASE) / ENABLE_STRIDE;
                let w = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                if ctx < contexts && w < WORDS {
                    state.enable[ctx as usize][w]
                } else {
                    0
                }
            }
            o => {
                let ctx = (o - CONTEXT_BASE) / CONTEXT_STRIDE;
                if ctx >= contexts {
                    return 0;
                }
                let ctx = ctx as usize;
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => state.threshold[ctx],
                    4 => {
                        let claimed = state.best(ctx).unwrap_or(0);
                        if claimed != 0 {
                            let (w, m) = bit(claimed);
                            state.pending[w] &= !m;
                            state.in_flight[w] |= m;
                            self.update(&mut state);
                        }
                        claimed
                    }
                    _ => 0,
                }
            }
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        let mut state = self.lock();
        let contexts = state.threshold.len() as u64;
        match offset {
            o if o < PENDING_BASE => {
                let s = ((o - PRIORITY_BASE) / 4) as usize;
                if s >= 1 && s < state.priority.len() {
                    state.priority[s] = value & PRIORITY_MASK;
                }
            }
            o if o < ENABLE_BASE => {} // pending bits are read-only
            o if o < CONTEXT_BASE => {
                let ctx = (o - ENABLE_BASE) / ENABLE_STRIDE;
                let w = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                if ctx < contexts && w < WORDS {
                    // Source 0 does not exist.
                    let mask = if w == 0 { !1 } else { !0 };
                    state.enable[ctx as usize][w] = value & mask;
                }
            }
            o => {
                let ctx = (o - CONTEXT_BASE) / CONTEXT_STRIDE;
                if ctx >= contexts {
                    return;
                }
                let ctx = ctx as usize;
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => state.threshold[ctx] = value & PRIORITY_MASK,
                    // Completion of a source not enabled for this context is ignored.
                    4 if (1..=PLIC_NDEV).contains(&value) => {
                        let (w, m) = bit(value);
                        if state.enable[ctx][w] & m != 0 {
                            state.in_flight[w] &= !m;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.update(&mut state);
    }
}

/// The PLIC's registers in a snapshot (the lines' levels follow from them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlicState {
    /// Priority of each source (index 0 unused).
    pub priority: Vec<u32>,
    /// Pending bits.
    pub pending: Vec<u32>,
    /// Claimed, not yet completed.
    pub in_flight: Vec<u32>,
    /// Enable bits of each context.
    pub enable: Vec<Vec<u32>>,
    /// Threshold of each context.
    pub threshold: Vec<u32>,
}

impl Plic {
    /// The registers, for a snapshot.
    pub fn save(&self) -> PlicState {
        let state = self.lock();
        PlicState {
            priority: state.priority.to_vec(),
            pending: state.pending.to_vec(),
            in_flight: state.in_flight.to_vec(),
            enable: state.enable.iter().map(|e| e.to_vec()).collect(),
            threshold: state.threshold.clone(),
        }
    }

    /// Takes the registers of a snapshot and drives the harts' lines to match.
    pub fn restore(&self, saved: &PlicState) -> Result<(), String> {
        let mut state = self.lock();
        let contexts = state.threshold.len();
        let fits = saved.priority.len() == state.priority.len()
            && saved.pending.len() == WORDS
            && saved.in_flight.len() == WORDS
            && saved.enable.len() == contexts
            && saved.enable.iter().all(|e| e.len() == WORDS)
            && saved.threshold.len() == contexts;
        if !fits {
            return Err(format!(
                "the snapshot's PLIC has another shape ({} contexts; this VM's has {contexts})",
                saved.threshold.len()
            ));
        }
        state.priority.copy_from_slice(&saved.priority);
        state.pending.copy_from_slice(&saved.pending);
        state.in_flight.copy_from_slice(&saved.in_flight);
        for (to, from) in state.enable.iter_mut().zip(&saved.enable) {
            to.copy_from_slice(from);
        }
        state.threshold.clone_from(&saved.threshold);
        state.level.iter_mut().for_each(|l| *l = false);
        self.update(&mut state);
        Ok(())
    }
}

impl crate::interrupts::IrqChip for Plic {
    fn trigger(&self, irq: u32) {
        self.raise(irq);
    }
}

impl BusDevice for Plic {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) -> Flow {
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!("PLIC: ignored {}-byte write at {offset:#x}", data.len());
            return CONTINUE;
        }
        self.write_reg(
            offset,
            u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
        );
        CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::scripted::RecordedLine;

    fn plic(harts: usize) -> (Plic, Vec<Arc<RecordedLine>>) {
        let lines: Vec<Arc<RecordedLine>> = (0..harts).map(|_| Arc::default()).collect();
        let dyn_lines = lines
            .iter()
            .map(|l| l.clone() as Arc<dyn InterruptLine>)
            .collect();
        (Plic::new(dyn_lines), lines)
    }

    fn w(p: &Plic, off: u64, v: u32) {
        assert_eq!(p.write(off, &v.to_le_bytes()), CONTINUE);
    }

    fn r(p: &Plic, off: u64) -> u32 {
        let mut d = [0u8; 4];
        p.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    const S1: u64 = 3; // hart 1's S-mode context

    #[test]
    fn claim_complete_cycle_drives_the_harts_line() {
        let (p, lines) = plic(2);
        w(&p, 4 * 10, 1); // priority of source 10
        w(&p, ENABLE_BASE + ENABLE_STRIDE * S1, 1 << 10);
        p.raise(10);
        assert_eq!(*lines[1].levels.lock().unwrap(), [true]);
        assert!(lines[0].levels.lock().unwrap().is_empty());
        assert_eq!(r(&p, PENDING_BASE), 1 << 10);
        let claim = CONTEXT_BASE + CONTEXT_STRIDE * S1 + 4;
        assert_eq!(r(&p, claim), 10);
        assert_eq!(*lines[1].levels.lock().unwrap(), [true, false]);
        // Raised again while in flight: pending, but not delivered until completion.
        p.raise(10);
        assert_eq!(r(&p, claim), 0);
        w(&p, claim, 10);
        assert_eq!(*lines[1].levels.lock().unwrap(), [true, false, true]);
        assert_eq!(r(&p, claim), 10);
    }

    #[test]
    fn threshold_priority_and_enables_gate_delivery() {
        let (p, lines) = plic(1);
        let claim = CONTEXT_BASE + CONTEXT_STRIDE + 4;
        w(&p, 4 * 3, 2);
        w(&p, 4 * 5, 6);
        p.raise(3);
        p.raise(5);
        assert!(
            lines[0].levels.lock().unwrap().is_empty(),
            "nothing enabled yet"
        );
        w(&p, ENABLE_BASE + ENABLE_STRIDE, (1 << 3) | (1 << 5) | 1);
        assert_eq!(
            r(&p, ENABLE_BASE + ENABLE_STRIDE),
            (1 << 3) | (1 << 5),
            "source 0 cannot be enabled"
        );
        w(&p, CONTEXT_BASE + CONTEXT_STRIDE, 5); // threshold 5: only source 5 (prio 6) passes
        assert_eq!(r(&p, claim), 5);
        assert_eq!(r(&p, claim), 0);
        w(&p, CONTEXT_BASE + CONTEXT_STRIDE, 0);
        assert_eq!(r(&p, claim), 3);
        assert_eq!(r(&p, 4 * 5), 6);
    }

    #[test]
    fn a_restored_plic_delivers_what_the_saved_one_would() {
        let (p, _) = plic(2);
        w(&p, 4 * 10, 3);
        w(&p, ENABLE_BASE + ENABLE_STRIDE * S1, 1 << 10);
        w(&p, CONTEXT_BASE + CONTEXT_STRIDE * S1, 1);
        p.raise(10);
        let saved = p.save();
        let (q, lines) = plic(2);
        q.restore(&saved).unwrap();
        assert_eq!(
            *lines[1].levels.lock().unwrap(),
            [true],
            "the line follows the state"
        );
        assert_eq!(q.save(), saved);
        assert_eq!(r(&q, CONTEXT_BASE + CONTEXT_STRIDE * S1 + 4), 10);
        let (one, _) = plic(1);
        assert!(one.restore(&saved).unwrap_err().contains("another shape"));
    }

    #[test]
    fn hostile_accesses_are_harmless() {
        let (p, _) = plic(1);
        for off in [
            0x3ff_fffc,
            4 * 200,
            ENABLE_BASE + ENABLE_STRIDE * 500,
            CONTEXT_BASE + CONTEXT_STRIDE * 9 + 4,
            0x1ffffc,
        ] {
            w(&p, off, u32::MAX);
            let _ = r(&p, off);
        }
        assert_eq!(p.write(1, &[1, 2, 3, 4]), CONTINUE);
        assert_eq!(p.write(0, &[1]), CONTINUE);
        p.raise(0);
        p.raise(1000);
        w(&p, CONTEXT_BASE + 4, 1000); // completing a source that does not exist
    }
}
