//! What the fuzz targets share: a reader that turns the fuzzer's bytes into operations, and a
//! small guest RAM.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest RAM base (QEMU virt's, rvvmm's).
pub const RAM_BASE: u64 = 0x8000_0000;
/// Guest RAM the targets map: small, so random addresses often land in it.
pub const RAM_SIZE: usize = 0x1_0000;

/// A fresh guest RAM of [`RAM_SIZE`] bytes at [`RAM_BASE`].
pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), RAM_SIZE)]).expect("64 KiB of RAM")
}

/// The fuzzer's bytes read front to back; reads past the end give zeros and `done()` is true.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn done(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let src = self.bytes(2);
        b[..src.len()].copy_from_slice(src);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let src = self.bytes(4);
        b[..src.len()].copy_from_slice(src);
        u32::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// An access width: 1, 2, 4 or 8 bytes.
    pub fn width(&mut self) -> usize {
        1 << (self.u8() & 3)
    }
}
