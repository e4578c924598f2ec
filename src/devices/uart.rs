//! The ns16550a UART at 0x1000_0000 (PLIC source 10), through vm-superio's `Serial`.
//!
//! Output goes to the console synchronously. Input comes from the console's queue: the UART
//! takes bytes into its 64-byte FIFO only once the guest has touched it (so a bare-metal guest
//! that reads through SBI DBCN gets the input instead), and tops the FIFO up whenever the guest
//! reads a byte or new input arrives.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::console::Console;
use crate::control::{Flow, CONTINUE};
use crate::devices::{BusDevice, Counted};
use crate::interrupts::IrqChip;

/// Asserts the UART's interrupt source.
pub struct IrqTrigger {
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Trigger for IrqTrigger {
    type E = ();

    fn trigger(&self) -> Result<(), ()> {
        // On a level-sensitive chip the UART drives the line from its state instead.
        if !self.chip.level_sensitive() {
            self.chip.trigger(self.irq);
        }
        Ok(())
    }
}

/// IIR bit 0: no interrupt pending.
const IIR_NONE: u8 = 1;

/// `Write` onto the console, counting the bytes.
pub struct ConsoleWriter(Arc<dyn Console>, Arc<AtomicU64>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        self.1.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART.
pub struct Uart {
    serial: Mutex<Serial<IrqTrigger, NoEvents, ConsoleWriter>>,
    console: Arc<dyn Console>,
    active: AtomicBool,
    takes_input: bool,
    chip: Arc<dyn IrqChip>,
    irq: u32,
    /// The line's level as last driven (level-sensitive chips only).
    level: AtomicBool,
    /// Bytes the guest wrote out, and bytes it was given.
    tx_bytes: Arc<AtomicU64>,
    rx_bytes: AtomicU64,
}

/// Offset of the receive buffer register.
const RBR: u64 = 0;

impl Uart {
    /// A UART on `console`, interrupting through `chip` source `irq`. Without `takes_input`
    /// (another device is the console) it only writes.
    pub fn new(
        console: Arc<dyn Console>,
        chip: Arc<dyn IrqChip>,
        irq: u32,
        takes_input: bool,
    ) -> Self {
        let tx_bytes = Arc::new(AtomicU64::new(0));
        Uart {
            serial: Mutex::new(Serial::new(
                IrqTrigger {
                    chip: chip.clone(),
                    irq,
                },
                ConsoleWriter(console.clone(), tx_bytes.clone()),
            )),
            console,
            active: AtomicBool::new(false),
            takes_input,
            chip,
            irq,
            level: AtomicBool::new(false),
            tx_bytes,
            rx_bytes: AtomicU64::new(0),
        }
    }

    /// On a level-sensitive chip (KVM's AIA), holds the line high exactly while the UART has
    /// an interrupt pending, as a real 16550's INTR pin: the Linux 8250 driver is written for
    /// level-triggered lines and loses input on pulses.
    fn update_level(&self, serial: &Serial<IrqTrigger, NoEvents, ConsoleWriter>) {
        if !self.chip.level_sensitive() {
            return;
        }
        // KVM's APLIC latches a level source as pending only when the line is driven, so
        // the line is driven again for every pending condition, and lowered once when none is.
        let pending = serial.state().interrupt_identification & IIR_NONE == 0;
        if pending || self.level.load(Ordering::Acquire) {
            self.chip.set_level(self.irq, pending);
        }
        self.level.store(pending, Ordering::Release);
    }

    /// Moves waiting console input into the FIFO, as far as it has room.
    pub fn pull_input(&self) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        self.fill(&mut serial);
        self.update_level(&serial);
    }

    fn fill(&self, serial: &mut Serial<IrqTrigger, NoEvents, ConsoleWriter>) {
        if !self.takes_input {
            return;
        }
        let mut buf = [0u8; 64];
        let room = serial.fifo_capacity().min(buf.len());
        if room == 0 {
            return;
        }
        let n = self.console.read(&mut buf[..room]);
        if n > 0 {
            // Cannot fail: `room` bytes fit, and the trigger never errs.
            let _ = serial.enqueue_raw_bytes(&buf[..n]);
            self.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The UART's registers and FIFO in a snapshot (vm-superio's `SerialState`, which has no
/// serde, mirrored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UartState {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub regs: [u8; 9],
    /// Bytes in the receive FIFO.
    pub fifo: Vec<u8>,
    /// Whether the guest had touched the UART (it then takes console input).
    pub active: bool,
}

impl Uart {
    /// The registers and FIFO, for a snapshot.
    pub fn save(&self) -> UartState {
        let serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let s = serial.state();
        UartState {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            fifo: s.in_buffer,
            active: self.active.load(Ordering::Acquire),
        }
    }

    /// Takes a snapshot's registers and FIFO, and drives the line to match.
    pub fn restore(&self, saved: &UartState) -> Result<(), String> {
        let r = saved.regs;
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: saved.fifo.clone(),
        };
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let trigger = IrqTrigger {
            chip: self.chip.clone(),
            irq: self.irq,
        };
        let writer = ConsoleWriter(self.console.clone(), self.tx_bytes.clone());
        *serial = Serial::from_state(&state, trigger, NoEvents, writer)
            .map_err(|e| format!("the snapshot's UART state is invalid: {e:?}"))?;
        self.active.store(saved.active, Ordering::Release);
        self.level.store(false, Ordering::Release);
        self.update_level(&serial);
        Ok(())
    }
}

impl Counted for Uart {
    fn counters(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("tx_bytes", self.tx_bytes.load(Ordering::Relaxed)),
            ("rx_bytes", self.rx_bytes.load(Ordering::Relaxed)),
        ])
    }
}

impl BusDevice for Uart {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 1 || offset > 7 {
            return;
        }
        self.active.store(true, Ordering::Release);
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        data[0] = serial.read(offset as u8);
        if offset == RBR {
            self.fill(&mut serial);
        }
        self.update_level(&serial);
    }

    fn write(&self, offset: u64, data: &[u8]) -> Flow {
        if data.len() != 1 || offset > 7 {
            log::debug!(
                "UART: ignored {}-byte write at offset {offset:#x}",
                data.len()
            );
            return CONTINUE;
        }
        self.active.store(true, Ordering::Release);
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = serial.write(offset as u8, data[0]) {
            crate::guest_warn!("UART: {e:?}");
        }
        self.fill(&mut serial);
        self.update_level(&serial);
        CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::BufferConsole;
    use crate::devices::plic::Plic;
    use crate::hypervisor::scripted::RecordedLine;
    use crate::hypervisor::InterruptLine;

    const IER: u64 = 1;
    const LSR: u64 = 5;

    fn setup() -> (Uart, Arc<BufferConsole>, Arc<Plic>, Arc<RecordedLine>) {
        let console = Arc::new(BufferConsole::default());
        let line = Arc::new(RecordedLine::default());
        let plic = Arc::new(Plic::new(vec![line.clone() as Arc<dyn InterruptLine>]));
        // Let source 10 reach hart 0's S-mode context.
        assert_eq!(plic.write(4 * 10, &1u32.to_le_bytes()), CONTINUE);
        assert_eq!(
            plic.write(0x2000 + 0x80, &(1u32 << 10).to_le_bytes()),
            CONTINUE
        );
        (
            Uart::new(console.clone(), plic.clone(), 10, true),
            console,
            plic,
            line,
        )
    }

    #[test]
    fn a_restored_uart_has_the_registers_and_the_fifo() {
        let console = Arc::new(BufferConsole::default());
        let chip: Arc<dyn IrqChip> = Arc::new(Plic::new(vec![
            Arc::new(RecordedLine::default()) as Arc<dyn InterruptLine>
        ]));
        let uart = Uart::new(console.clone(), chip.clone(), 10, true);
        assert_eq!(uart.write(IER, &[1]), CONTINUE);
        assert_eq!(uart.write(7, &[0x5a]), CONTINUE); // scratch
        console.type_in(b"hi");
        uart.pull_input();
        let saved = uart.save();
        assert_eq!(saved.fifo, b"hi");
        assert!(saved.active);
        let fresh = Uart::new(console, chip, 10, true);
        fresh.restore(&saved).unwrap();
        assert_eq!(fresh.save(), saved);
        let mut byte = [0u8];
        fresh.read(RBR, &mut byte);
        assert_eq!(byte[0], b'h');
        let mut bad = saved;
        bad.fifo = vec![0; 65];
        assert!(fresh.restore(&bad).is_err());
    }

    #[test]
    fn output_reaches_the_console() {
        let (uart, console, _, _) = setup();
        for b in b"ok\n" {
            assert_eq!(uart.write(0, &[*b]), CONTINUE);
        }
        assert_eq!(console.output_string(), "ok\n");
    }

    #[test]
    fn input_waits_until_the_guest_uses_the_uart_then_interrupts() {
        let (uart, console, _, line) = setup();
        console.input.lock().unwrap().extend(b"hi");
        uart.pull_input();
        assert_eq!(
            console.input.lock().unwrap().len(),
            2,
            "untouched UART takes nothing"
        );
        assert_eq!(uart.write(IER, &[1]), CONTINUE); // enable the received-data interrupt
        uart.pull_input();
        assert_eq!(*line.levels.lock().unwrap(), [true]);
        let mut b = [0u8];
        uart.read(LSR, &mut b);
        assert_eq!(b[0] & 1, 1, "data ready");
        uart.read(0, &mut b);
        assert_eq!(b[0], b'h');
        uart.read(0, &mut b);
        assert_eq!(b[0], b'i');
        assert!(console.input.lock().unwrap().is_empty());
    }

    #[test]
    fn a_long_paste_is_delivered_whole_through_the_small_fifo() {
        let (uart, console, _, _) = setup();
        assert_eq!(uart.write(IER, &[1]), CONTINUE);
        let text: Vec<u8> = (0..500).map(|i| b'a' + (i % 26) as u8).collect();
        console.input.lock().unwrap().extend(&text);
        uart.pull_input();
        let mut got = Vec::new();
        let mut b = [0u8];
        for _ in 0..500 {
            uart.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, text);
    }

    #[derive(Default)]
    struct LevelChip(Mutex<Vec<(u32, bool)>>);

    impl IrqChip for LevelChip {
        fn trigger(&self, _irq: u32) {
            panic!("a level-sensitive chip gets levels, not pulses");
        }
        fn level_sensitive(&self) -> bool {
            true
        }
        fn set_level(&self, irq: u32, level: bool) {
            self.0.lock().unwrap().push((irq, level));
        }
    }

    #[test]
    fn on_a_level_sensitive_chip_the_line_follows_the_uart() {
        let console = Arc::new(BufferConsole::default());
        let chip = Arc::new(LevelChip::default());
        let uart = Uart::new(console.clone(), chip.clone(), 10, true);
        assert_eq!(uart.write(IER, &[1]), CONTINUE); // received-data interrupt on
        console.input.lock().unwrap().extend(b"ab");
        uart.pull_input();
        assert_eq!(chip.0.lock().unwrap().first(), Some(&(10, true)));
        let mut b = [0u8];
        uart.read(2, &mut b); // IIR: reading it acknowledges
        uart.read(0, &mut b);
        uart.read(0, &mut b);
        assert_eq!(chip.0.lock().unwrap().last(), Some(&(10, false)));
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let (uart, console, _, _) = setup();
        assert_eq!(uart.write(0, b"xy"), CONTINUE);
        let mut d = [0xffu8; 4];
        uart.read(0, &mut d);
        assert_eq!(d, [0; 4]);
        assert!(console.output_string().is_empty());
    }
}
