//! virtio-blk (`--disk PATH[,readonly]`) on a raw image file.
//!
//! Reads and writes go straight to the file (pread/pwrite: no cache in rvvmm, so what the
//! guest wrote is in the host kernel's page cache and survives a SIGKILL of rvvmm); FLUSH is an
//! fdatasync. A read-only disk answers every write, discard and write-zeroes with
//! `VIRTIO_BLK_S_IOERR`. Requests are checked against the disk's size and sector alignment; a
//! malformed one gets an error status, never a panic.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{
    device_id, drain_queue_costed, read_config_bytes, QueueOutcome, VirtioDevice, PASS_BUDGET,
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

const SECTOR: u64 = 512;
const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
/// Write-zeroes segment flag: the range may be deallocated.
const WRITE_ZEROES_UNMAP: u32 = 1;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Bytes moved through rvvmm per copy.
const CHUNK: usize = 128 * 1024;
/// Segments per request the driver may use (config `seg_max`): a request's chain of header,
/// segments and status is as long as the 256-entry queue at most (the spec's bound for a
/// chain, in the ring or in an indirect table), as kvmtool tells it. A 1 MiB O_DIRECT read
/// into 256 scattered pages needs 256 segments: three requests at rvvmm's first value, 126, two
/// at 254. Without indirect descriptors the first of the two fills the ring and the second
/// waits for it; with them each takes one ring entry and both go at once.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The queue's size.
const QUEUE_SIZE: u16 = 256;
/// Largest data segment the driver may use (config `size_max`): with [`SEG_MAX`] it bounds
/// what Linux puts in one request (254 MiB, when its max_sectors_kb is raised that far).
const SIZE_MAX: u32 = 1 << 20;
/// Most data one read or write may carry; a larger one gets an I/O error, so one request
/// holds the device thread for a bounded time. Above what SEG_MAX x SIZE_MAX lets Linux send,
/// and above one ext4 extent (128 MiB), which a bootloader may read as one request without
/// having negotiated SIZE_MAX (U-Boot does).
const MAX_REQUEST_BYTES: usize = 256 << 20;
/// Bytes one pass of the device thread moves for this disk (at least one request's) before
/// the other devices and the console's input get their turn.
const PASS_BYTES: u64 = 64 << 20;
/// Length of the GET_ID string.
const ID_LEN: usize = 20;
/// Most sectors one discard segment may cover, and most segments a request (a discard only
/// deallocates: 32 GiB of it is a metadata operation).
const MAX_RANGE_SECTORS: u32 = 1 << 22;
const MAX_RANGE_SEGS: u32 = 16;
/// The same for write-zeroes, which may have to write the zeros where the file system cannot
/// zero a range in place: one segment of at most [`MAX_REQUEST_BYTES`].
const MAX_ZEROES_SECTORS: u32 = (MAX_REQUEST_BYTES as u64 / SECTOR) as u32;
const MAX_ZEROES_SEGS: u32 = 1;
/// Discard granularity in sectors (the host's page).
const DISCARD_ALIGNMENT: u32 = 8;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
#[error("cannot open disk {path}: {source}")]
pub struct DiskError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The block device.
pub struct Block {
    file: File,
    sectors: u64,
    readonly: bool,
    id: [u8; ID_LEN],
    config: Vec<u8>,
    memory: Option<GuestMemoryMmap>,
    queue: Option<Queue>,
    stats: BlockStats,
}

/// What the guest did with the disk (`vm.counters`; Cloud Hypervisor's names).
#[derive(Debug, Default, Clone, Copy)]
struct BlockStats {
    read_bytes: u64,
    write_bytes: u64,
    read_ops: u64,
    write_ops: u64,
    /// Requests the host could not carry out (EIO, ENOSPC, a failed flush): the guest got
    /// `VIRTIO_BLK_S_IOERR` for each.
    io_errors: u64,
}

impl Block {
    /// Locks the image at `path` for this process (`flock` on a descriptor of its own, held
    /// as long as the returned file): shared when `readonly`, else exclusive, and never
    /// waiting. An image another process holds (another rvvmm, QEMU) is an error that says so.
    pub fn lock(path: &Path, readonly: bool) -> Result<File, DiskError> {
        let err = |source| DiskError {
            path: path.to_owned(),
            source,
        };
        let file = crate::files::open_regular(path, false).map_err(err)?;
        let how = if readonly {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on an fd owned by `file`; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(err(if e.kind() == std::io::ErrorKind::WouldBlock {
                std::io::Error::other(if readonly {
                    "another process has it open for writing (it holds its lock)"
                } else {
                    "another process has it open (it holds its lock): another rvvmm or QEMU?"
                })
            } else {
                e
            }));
        }
        Ok(file)
    }

    /// Opens `path` (read-write unless `readonly`).
    pub fn open(path: &Path, readonly: bool) -> Result<Self, DiskError> {
        let err = |source| DiskError {
            path: path.to_owned(),
            source,
        };
        let file = crate::files::open_regular(path, !readonly).map_err(|e| {
            err(match e.kind() {
                std::io::ErrorKind::InvalidInput => {
                    std::io::Error::other("not a regular file (rvvmm takes raw image files)")
                }
                _ => e,
            })
        })?;
        let meta = file.metadata().map_err(err)?;
        let sectors = meta.len() / SECTOR;
        if meta.len() % SECTOR != 0 {
            log::warn!(
                "disk {}: size is not a multiple of 512; the last {} bytes are not visible",
                path.display(),
                meta.len() % SECTOR
            );
        }
        // The serial the guest sees (/sys/block/vda/serial): the file's device and inode.
        let mut id = [0u8; ID_LEN];
        let text = format!("rvvmm-{:x}-{:x}", meta.dev(), meta.ino());
        let n = text.len().min(ID_LEN);
        id[..n].copy_from_slice(&text.as_bytes()[..n]);
        let mut config = vec![0u8; 64];
        config[0..8].copy_from_slice(&sectors.to_le_bytes()); // capacity
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes()); // size_max
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
                                                                // discard: max_discard_sectors (36), max_discard_seg (40), discard_sector_alignment (44)
        config[36..40].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes());
        config[40..44].copy_from_slice(&MAX_RANGE_SEGS.to_le_bytes());
        config[44..48].copy_from_slice(&DISCARD_ALIGNMENT.to_le_bytes());
        // write-zeroes: max_write_zeroes_sectors (48), max_write_zeroes_seg (52), may_unmap (56)
        config[48..52].copy_from_slice(&MAX_ZEROES_SECTORS.to_le_bytes());
        config[52..56].copy_from_slice(&MAX_ZEROES_SEGS.to_le_bytes());
        config[56] = 1;
        Ok(Block {
            file,
            sectors,
            readonly,
            id,
            config,
            memory: None,
            queue: None,
            stats: BlockStats::default(),
        })
    }

    /// Handles one request; returns the bytes written into the chain (data + status) and the
    /// bytes of disk it covered (its cost in the pass's budget).
    fn request(
        &mut self,
        memory: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> (u32, u64) {
        let layout = Layout::of(&chain);
        // The last writable byte is the status: without one the driver cannot be answered.
        let Some(status_at) = layout.status else {
            return (0, 0);
        };
        let mut cost = 0u64;
        let mut header = [0u8; 16];
        let data_out = layout.readable_bytes().saturating_sub(header.len()) as u64;
        let (status, data) = if !layout.read_header(memory, &mut header) {
            (S_IOERR, 0)
        } else {
            let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
            match kind {
                T_OUT | T_WRITE_ZEROES | T_DISCARD if self.readonly => (S_IOERR, 0),
                T_IN | T_OUT => {
                    let (status, read) = self.transfer(memory, &layout, kind, sector);
                    cost = read as u64 + if kind == T_OUT { data_out } else { 0 };
                    if status == S_OK && kind == T_IN {
                        self.stats.read_ops += 1;
                        self.stats.read_bytes += read as u64;
                    } else if status == S_OK {
                        self.stats.write_ops += 1;
                        self.stats.write_bytes += data_out;
                    }
                    (status, read)
                }
                // The rare requests go through virtio-queue's Reader and Writer, which walk
                // the chain again.
                _ => self.other(memory, &chain, kind, &mut cost),
            }
        };
        if memory.write_obj(status, status_at).is_err() {
            return (data as u32, cost);
        }
        (data as u32 + 1, cost)
    }

    /// A request other than a read or write (`kind`, its header already read): its status
    /// and the bytes it wrote into the chain.
    fn other(
        &mut self,
        memory: &GuestMemoryMmap,
        chain: &DescriptorChain<&GuestMemoryMmap>,
        kind: u32,
        cost: &mut u64,
    ) -> (u8, usize) {
        let (Ok(mut reader), Ok(mut writer)) =
            (chain.clone().reader(memory), chain.clone().writer(memory))
        else {
            return (S_IOERR, 0);
        };
        // Past the header; the writable bytes but the status.
        let avail = writer.available_bytes();
        if reader.read_exact(&mut [0u8; 16]).is_err() || avail == 0 {
            return (S_IOERR, 0);
        }
        if writer.split_at(avail - 1).is_err() {
            return (S_IOERR, 0);
        }
        let status = self.execute(kind, &mut reader, &mut writer, cost);
        (status, writer.bytes_written())
    }

    /// Every request but reads and writes; adds the bytes it wrote to the disk to `cost`.
    fn execute(
        &mut self,
        kind: u32,
        reader: &mut virtio_queue::Reader<'_>,
        writer: &mut virtio_queue::Writer<'_>,
        cost: &mut u64,
    ) -> u8 {
        match kind {
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => S_OK,
                Err(e) => {
                    self.stats.io_errors += 1;
                    crate::guest_warn!(
                        "virtio-blk: the guest's flush failed on the host: {e}; it sees an I/O error ({} so far)",
                        self.stats.io_errors
                    );
                    S_IOERR
                }
            },
            T_GET_ID => match writer.write_all(&self.id[..writer.available_bytes().min(ID_LEN)]) {
                Ok(()) => S_OK,
                Err(_) => S_IOERR,
            },
            T_WRITE_ZEROES => {
                let limits = (MAX_ZEROES_SECTORS, MAX_ZEROES_SEGS);
                self.ranges(reader, limits, |file, offset, len, flags| {
                    if flags & !WRITE_ZEROES_UNMAP != 0 {
                        return Ok(S_UNSUPP);
                    }
                    if flags & WRITE_ZEROES_UNMAP != 0 && punch_hole(file, offset, len).is_ok() {
                        return Ok(S_OK);
                    }
                    if zero_range(file, offset, len).is_ok() {
                        return Ok(S_OK);
                    }
                    *cost += len;
                    write_zeros(file, offset, len).map(|_| S_OK)
                })
            }
            T_DISCARD => self.ranges(
                reader,
                (MAX_RANGE_SECTORS, MAX_RANGE_SEGS),
                |file, offset, len, flags| {
                    if flags != 0 {
                        return Ok(S_UNSUPP);
                    }
                    // A hint: where the file system cannot punch holes, the data simply stays.
                    if let Err(e) = punch_hole(file, offset, len) {
                        log::debug!("virtio-blk: discard not done: {e}");
                    }
                    Ok(S_OK)
                },
            ),
            _ => S_UNSUPP,
        }
    }

    /// A read or write of the data in the chain at `sector`, straight between the file and
    /// guest memory (preadv/pwritev on the guest's buffers: no copy in rvvmm, no allocation
    /// but the iovec list). Returns the status and, for a read, the bytes read.
    fn transfer(
        &mut self,
        memory: &GuestMemoryMmap,
        layout: &Layout,
        kind: u32,
        sector: u64,
    ) -> (u8, usize) {
        let read = kind == T_IN;
        let (mut iovecs, len) = match data_iovecs(memory, layout, read) {
            Ok(data) => data,
            Err(DataError::OutsideRam) => return (S_IOERR, 0),
            Err(DataError::TooLong) => {
                crate::guest_warn!(
                    "virtio-blk: the guest sent a request of more than {QUEUE_SIZE} descriptors (seg_max is {SEG_MAX}); it sees an I/O error"
                );
                return (S_IOERR, 0);
            }
            Err(DataError::TooLarge) => {
                crate::guest_warn!(
                    "virtio-blk: the guest sent a {} of more than {} MiB in one request (size_max is {} KiB, seg_max {SEG_MAX}); it sees an I/O error",
                    if read { "read" } else { "write" },
                    MAX_REQUEST_BYTES >> 20,
                    SIZE_MAX >> 10
                );
                return (S_IOERR, 0);
            }
        };
        let len = len as u64;
        if !len.is_multiple_of(SECTOR)
            || sector
                .checked_add(len / SECTOR)
                .is_none_or(|end| end > self.sectors)
        {
            return (S_IOERR, 0);
        }
        match rw_all(&self.file, &mut iovecs, sector * SECTOR, read) {
            Ok(()) => (S_OK, if read { len as usize } else { 0 }),
            Err(e) => {
                self.stats.io_errors += 1;
                crate::guest_warn!(
                    "virtio-blk: a guest {} at sector {sector} failed on the host: {e}; it sees an I/O error ({} so far)",
                    if read { "read" } else { "write" },
                    self.stats.io_errors
                );
                (S_IOERR, 0)
            }
        }
    }

    /// Runs `op(file, offset, len, flags)` on each segment of a discard or write-zeroes
    /// request: (sector u64, num_sectors u32, flags u32), checked against the disk and the
    /// `(sectors a segment, segments)` limits in the config space. The first status other
    /// than OK ends the request.
    fn ranges<F>(
        &mut self,
        reader: &mut virtio_queue::Reader<'_>,
        (max_sectors, max_segs): (u32, u32),
        mut op: F,
    ) -> u8
    where
        F: FnMut(&File, u64, u64, u32) -> std::io::Result<u8>,
    {
        let count = reader.available_bytes() / 16;
        if count == 0 || count > max_segs as usize {
            return S_IOERR;
        }
        for _ in 0..count {
            let mut seg = [0u8; 16];
            if reader.read_exact(&mut seg).is_err() {
                return S_IOERR;
            }
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap());
            let sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap());
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap());
            if sectors > max_sectors
                || sector
                    .checked_add(u64::from(sectors))
                    .is_none_or(|end| end > self.sectors)
            {
                return S_IOERR;
            }
            match op(
                &self.file,
                sector * SECTOR,
                u64::from(sectors) * SECTOR,
                flags,
            ) {
                Ok(S_OK) => {}
                Ok(status) => return status,
                Err(e) => {
                    self.stats.io_errors += 1;
                    crate::guest_warn!(
                        "virtio-blk: a guest discard or write-zeroes at sector {sector} failed on the host: {e}; it sees an I/O error ({} so far)",
                        self.stats.io_errors
                    );
                    return S_IOERR;
                }
            }
        }
        S_OK
    }
}

/// Why a request's data cannot be used.
#[derive(Debug, PartialEq, Eq)]
enum DataError {
    /// Some of it lies outside guest RAM.
    OutsideRam,
    /// More than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// A chain of more descriptors than the queue has entries (an indirect table may hold
    /// 65535; the spec allows no chain longer than the queue).
    TooLong,
}

/// A request's descriptors, read from guest memory once. (virtio-queue's Reader and Writer
/// each walk the chain, reading every descriptor from guest memory again; a 1 MiB request has
/// 258 of them, and a read or write needs one walk.)
struct Layout {
    /// (guest address, length, device-writable) of the first [`QUEUE_SIZE`] descriptors.
    pieces: Vec<(u64, u32, bool)>,
    /// The chain has more descriptors than the queue has entries (an indirect table may hold
    /// 65535; the spec allows no chain longer than the queue).
    too_long: bool,
    /// The chain's last device-writable byte: the status.
    status: Option<GuestAddress>,
}

impl Layout {
    /// Walks `chain` once. The iterator stops after the queue size's worth of descriptors, or
    /// an indirect table's (at most 65535), so this ends; what lies past the queue's size is
    /// looked at only for the status byte's place.
    fn of(chain: &DescriptorChain<&GuestMemoryMmap>) -> Layout {
        let mut layout = Layout {
            pieces: Vec::with_capacity(SEG_MAX as usize + 2),
            too_long: false,
            status: None,
        };
        for desc in chain.clone() {
            let (addr, len, write) = (desc.addr().0, desc.len(), desc.is_write_only());
            if write && len > 0 {
                layout.status = addr.checked_add(u64::from(len) - 1).map(GuestAddress);
            }
            if layout.pieces.len() < usize::from(QUEUE_SIZE) {
                layout.pieces.push((addr, len, write));
            } else {
                layout.too_long = true;
            }
        }
        layout
    }

    /// The device-readable bytes.
    fn readable_bytes(&self) -> usize {
        self.pieces
            .iter()
            .filter(|p| !p.2)
            .fold(0usize, |t, p| t.saturating_add(p.1 as usize))
    }

    /// Reads the first `header.len()` device-readable bytes; false if there are fewer or they
    /// are not in guest RAM.
    fn read_header(&self, memory: &GuestMemoryMmap, header: &mut [u8]) -> bool {
        let mut got = 0;
        for &(addr, len, _) in self.pieces.iter().filter(|p| !p.2) {
            if got == header.len() {
                break;
            }
            let n = (len as usize).min(header.len() - got);
            if memory
                .read_slice(&mut header[got..got + n], GuestAddress(addr))
                .is_err()
            {
                return false;
            }
            got += n;
        }
        got == header.len()
    }
}

/// The guest memory holding a request's data, as iovecs, and its length: for a read
/// (`writable`), every device-writable byte but the last (the status); for a write, every
/// device-readable byte after the 16-byte header.
fn data_iovecs(
    memory: &GuestMemoryMmap,
    layout: &Layout,
    writable: bool,
) -> Result<(Vec<libc::iovec>, usize), DataError> {
    if layout.too_long {
        return Err(DataError::TooLong);
    }
    let pieces = || {
        let mut skip = if writable { 0 } else { 16 };
        layout
            .pieces
            .iter()
            .filter(move |p| p.2 == writable)
            .filter_map(move |&(addr, len, _)| {
                let len = len as usize;
                let s = skip.min(len);
                skip -= s;
                (len > s).then(|| (addr + s as u64, len - s))
            })
    };
    // The size first, before any of it is looked up (the status byte may be in it: + 1).
    let mut total = pieces().fold(0usize, |t, (_, len)| t.saturating_add(len));
    if total > MAX_REQUEST_BYTES + usize::from(writable) {
        return Err(DataError::TooLarge);
    }
    let mut iovecs = Vec::with_capacity(layout.pieces.len());
    for (addr, len) in pieces() {
        let slice = memory
            .get_slice(GuestAddress(addr), len)
            .map_err(|_| DataError::OutsideRam)?;
        iovecs.push(libc::iovec {
            iov_base: slice.ptr_guard_mut().as_ptr().cast(),
            iov_len: len,
        });
    }
    if writable {
        // The status byte is the chain's last writable byte.
        total = total.checked_sub(1).ok_or(DataError::OutsideRam)?;
        let last = iovecs.last_mut().ok_or(DataError::OutsideRam)?;
        last.iov_len -= 1;
        if last.iov_len == 0 {
            iovecs.pop();
        }
    }
    Ok((iovecs, total))
}

/// preadv/pwritev of all of `iovecs` at `offset`, going on after short transfers.
fn rw_all(
    file: &File,
    mut iovecs: &mut [libc::iovec],
    mut offset: u64,
    read: bool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !iovecs.is_empty() {
        let count = iovecs.len().min(1024) as libc::c_int;
        // SAFETY: every iovec points into guest RAM, which stays mapped while `memory` (held
        // by the caller) lives, and was bounds-checked by `get_slice`; the fd is ours. The
        // guest may touch the same memory meanwhile, which the kernel's copy tolerates.
        let n = unsafe {
            if read {
                libc::preadv(
                    file.as_raw_fd(),
                    iovecs.as_ptr(),
                    count,
                    offset as libc::off_t,
                )
            } else {
                libc::pwritev(
                    file.as_raw_fd(),
                    iovecs.as_ptr(),
                    count,
                    offset as libc::off_t,
                )
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut n = n as usize;
        offset += n as u64;
        while let Some(first) = iovecs.first_mut() {
            if n < first.iov_len {
                // SAFETY: advancing within the same iovec's buffer.
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
                first.iov_len -= n;
                break;
            }
            n -= first.iov_len;
            iovecs = &mut iovecs[1..];
        }
    }
    Ok(())
}

/// Deallocates `len` bytes at `offset` (reads give zeros after), keeping the file's size.
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    fallocate(file, libc::FALLOC_FL_PUNCH_HOLE, offset, len)
}

/// Zeroes `len` bytes at `offset` in place, keeping them allocated (a metadata operation where
/// the file system can: ext4, XFS).
fn zero_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    fallocate(file, libc::FALLOC_FL_ZERO_RANGE, offset, len)
}

/// fallocate(`mode` | KEEP_SIZE) of `len` bytes at `offset`.
fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on our own fd with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `len` zero bytes at `offset`.
fn write_zeros(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn name(&self) -> &'static str {
        "blk"
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_SIZE_MAX
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC;
        if self.readonly {
            f |= VIRTIO_BLK_F_RO;
        } else {
            f |= VIRTIO_BLK_F_WRITE_ZEROES | VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        self.queue.iter().map(|q| (0, q.state())).collect()
    }

    fn activate(&mut self, memory: GuestMemoryMmap, mut queues: Vec<Queue>, _features: u64) {
        use virtio_queue::QueueT;
        self.queue = queues.drain(..).next().filter(|q| q.ready());
        self.memory = Some(memory);
    }

    fn process_queue(&mut self, _index: usize) -> QueueOutcome {
        let (Some(mut queue), Some(memory)) = (self.queue.take(), self.memory.clone()) else {
            return QueueOutcome::Idle;
        };
        let outcome = drain_queue_costed(&mut queue, &memory, PASS_BUDGET, PASS_BYTES, |chain| {
            self.request(&memory, chain)
        });
        self.queue = Some(queue);
        outcome
    }

    fn reset(&mut self) {
        self.queue = None;
        self.memory = None;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        vec![
            ("read_bytes", s.read_bytes),
            ("write_bytes", s.write_bytes),
            ("read_ops", s.read_ops),
            ("write_ops", s.write_ops),
            ("io_errors", s.io_errors),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use vm_memory::{Bytes, GuestAddress};

    fn peek(memory: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        memory.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn disk(tag: &str, readonly: bool) -> (Block, PathBuf) {
        let dir = std::env::temp_dir().join(format!("rvvmm-blk-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let mut image = vec![0u8; 64 * 1024];
        image[512..517].copy_from_slice(b"hello");
        std::fs::write(&path, image).unwrap();
        (Block::open(&path, readonly).unwrap(), path)
    }

    #[test]
    fn an_image_is_locked_shared_for_readers_and_exclusive_for_a_writer() {
        let (_, path) = disk("lock", false);
        let writer = Block::lock(&path, false).unwrap();
        let e = Block::lock(&path, false).unwrap_err();
        assert!(e.to_string().contains("another process has it open"), "{e}");
        assert!(
            Block::lock(&path, true).is_err(),
            "a reader beside a writer"
        );
        drop(writer);
        let r1 = Block::lock(&path, true).unwrap();
        let _r2 = Block::lock(&path, true).unwrap();
        assert!(
            Block::lock(&path, false).is_err(),
            "a writer beside readers"
        );
        drop(r1);
    }

    const HDR: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const STATUS: u64 = DATA + 0x3000;

    fn request(mem: &GuestMemoryMmap, kind: u32, sector: u64, len: u32, data_flags: u16) {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        publish(
            mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (BUF, len, data_flags | F_NEXT, 2),
                (STATUS, 1, F_WRITE, 0),
            ],
            &[0],
        );
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn active(tag: &str, readonly: bool) -> (Block, GuestMemoryMmap, PathBuf) {
        let (mut blk, path) = disk(tag, readonly);
        let mem = memory();
        blk.activate(mem.clone(), vec![queue()], 0);
        (blk, mem, path)
    }

    #[test]
    fn read_write_flush_round_trip() {
        let (mut blk, mem, path) = active("rw", false);
        request(&mem, T_IN, 1, 512, F_WRITE);
        assert_eq!(blk.process_queue(0), QueueOutcome::Used);
        assert_eq!(status(&mem), S_OK);
        assert_eq!(&peek(&mem, BUF, 5), b"hello");
        assert_eq!(used(&mem).1, vec![(0, 513)]);

        let (mut blk, mem, _) = {
            let mem2 = memory();
            blk.activate(mem2.clone(), vec![queue()], 0);
            (blk, mem2, ())
        };
        mem.write_slice(b"written by the guest", GuestAddress(BUF))
            .unwrap();
        request(&mem, T_OUT, 2, 512, 0);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_OK);
        let image = std::fs::read(&path).unwrap();
        assert_eq!(&image[1024..1044], b"written by the guest");
    }

    #[test]
    fn host_io_errors_reach_the_guest_and_are_counted() {
        let (mut blk, mem, path) = active("eio", false);
        // The host refuses the write (here: the image's descriptor lost its write access, as
        // a full or failing file system would refuse it).
        blk.file = File::open(&path).unwrap();
        request(&mem, T_OUT, 2, 512, 0);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_IOERR);
        assert_eq!(blk.stats.io_errors, 1);
        assert!(blk.counters().contains(&("io_errors", 1)));
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let (mut blk, mem, path) = active("ro", true);
        assert_ne!(blk.features() & VIRTIO_BLK_F_RO, 0);
        request(&mem, T_OUT, 0, 512, 0);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_IOERR);
        assert_eq!(std::fs::read(&path).unwrap()[..512], [0u8; 512]);
    }

    #[test]
    fn out_of_range_and_misaligned_requests_fail_cleanly() {
        for (sector, len) in [(128, 512), (127, 1024), (u64::MAX, 512), (0, 100)] {
            let (mut blk, mem, _) = active("range", false);
            request(&mem, T_IN, sector, len, F_WRITE);
            blk.process_queue(0);
            assert_eq!(status(&mem), S_IOERR, "sector {sector} len {len}");
        }
        let (mut blk, mem, _) = active("unsupp", false);
        request(&mem, 99, 0, 512, F_WRITE);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_UNSUPP);
    }

    /// A discard or write-zeroes request with one segment in BUF.
    fn range_request(mem: &GuestMemoryMmap, kind: u32, sector: u64, sectors: u32, flags: u32) {
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&sector.to_le_bytes());
        seg[8..12].copy_from_slice(&sectors.to_le_bytes());
        seg[12..16].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&seg, GuestAddress(BUF)).unwrap();
        request(mem, kind, 0, 16, 0);
    }

    #[test]
    fn discard_and_write_zeroes_clear_ranges() {
        for (kind, flags) in [(T_DISCARD, 0), (T_WRITE_ZEROES, 0), (T_WRITE_ZEROES, 1)] {
            let (mut blk, mem, path) = active("discard", false);
            assert_ne!(blk.features() & VIRTIO_BLK_F_DISCARD, 0);
            std::fs::write(&path, vec![0xaau8; 64 * 1024]).unwrap();
            range_request(&mem, kind, 8, 16, flags);
            blk.process_queue(0);
            assert_eq!(status(&mem), S_OK, "kind {kind} flags {flags}");
            let image = std::fs::read(&path).unwrap();
            assert_eq!(image.len(), 64 * 1024, "the size stays");
            assert!(image[4096..12288].iter().all(|&b| b == 0), "kind {kind}");
            assert!(image[..4096]
                .iter()
                .chain(&image[12288..])
                .all(|&b| b == 0xaa));
        }
        // Past the end, unknown flags, a read-only disk: errors, nothing changed.
        for (kind, sector, flags, readonly, want) in [
            (T_DISCARD, 127, 0, false, S_IOERR),
            (T_DISCARD, 0, 1, false, S_UNSUPP),
            (T_WRITE_ZEROES, 0, 2, false, S_UNSUPP),
            (T_DISCARD, 0, 0, true, S_IOERR),
        ] {
            let (mut blk, mem, path) = active("discard-bad", readonly);
            range_request(&mem, kind, sector, 2, flags);
            blk.process_queue(0);
            assert_eq!(
                status(&mem),
                want,
                "kind {kind} sector {sector} flags {flags}"
            );
            assert_eq!(&std::fs::read(&path).unwrap()[512..517], b"hello");
        }
    }

    /// One request's data is bounded: the driver is told (size_max, seg_max), and a chain
    /// carrying more than MAX_REQUEST_BYTES is refused before any of it is looked up or read.
    #[test]
    fn requests_are_bounded_and_the_driver_is_told() {
        let (blk, mem, _) = active("bounds", false);
        assert_ne!(blk.features() & VIRTIO_BLK_F_SIZE_MAX, 0);
        let mut config = [0u8; 8];
        blk.read_config(8, &mut config);
        assert_eq!(
            u32::from_le_bytes(config[..4].try_into().unwrap()),
            SIZE_MAX
        );
        assert_eq!(u32::from_le_bytes(config[4..].try_into().unwrap()), SEG_MAX);
        blk.read_config(48, &mut config);
        assert_eq!(
            u64::from(u32::from_le_bytes(config[..4].try_into().unwrap())) * SECTOR,
            MAX_REQUEST_BYTES as u64
        );
        assert_eq!(u32::from_le_bytes(config[4..].try_into().unwrap()), 1);

        fn chain<'a>(
            mem: &'a GuestMemoryMmap,
            descs: &[(u64, u32, u16, u16)],
        ) -> DescriptorChain<&'a GuestMemoryMmap> {
            use virtio_queue::QueueOwnedT;
            publish(mem, descs, &[0]);
            let mut q = queue();
            let c = q.iter(mem).unwrap().next().unwrap();
            c
        }
        let big = MAX_REQUEST_BYTES as u32 / 2;
        // Two halves and one byte more (the status is the last writable byte): too large,
        // though none of it is in RAM.
        let c = chain(
            &mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (0x1_0000_0000, big, F_WRITE | F_NEXT, 2),
                (0x2_0000_0000, big + 512, F_WRITE | F_NEXT, 3),
                (STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(
            data_iovecs(&mem, &Layout::of(&c), true).err(),
            Some(DataError::TooLarge)
        );
        // Exactly the limit: only its place outside RAM is wrong.
        let c = chain(
            &mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (0x1_0000_0000, big, F_WRITE | F_NEXT, 2),
                (0x2_0000_0000, big, F_WRITE | F_NEXT, 3),
                (STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(
            data_iovecs(&mem, &Layout::of(&c), true).err(),
            Some(DataError::OutsideRam)
        );
        // A write the same: the header is not data.
        let c = chain(
            &mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (0x1_0000_0000, big, F_NEXT, 2),
                (0x2_0000_0000, big + 1, F_NEXT, 3),
                (STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(
            data_iovecs(&mem, &Layout::of(&c), false).err(),
            Some(DataError::TooLarge)
        );

        // Write-zeroes: one segment, of at most MAX_ZEROES_SECTORS.
        for (segs, sectors) in [(1, MAX_ZEROES_SECTORS + 1), (2, 1)] {
            let (mut blk, mem, _) = active("zeroes-bounds", false);
            let mut segs_bytes = Vec::new();
            for _ in 0..segs {
                let mut seg = [0u8; 16];
                seg[8..12].copy_from_slice(&sectors.to_le_bytes());
                segs_bytes.extend_from_slice(&seg);
            }
            mem.write_slice(&segs_bytes, GuestAddress(BUF)).unwrap();
            request(&mem, T_WRITE_ZEROES, 0, segs_bytes.len() as u32, 0);
            blk.process_queue(0);
            assert_eq!(
                status(&mem),
                S_IOERR,
                "{segs} segment(s) of {sectors} sectors"
            );
        }
    }

    /// The header may come in pieces, and the status in a descriptor of its own or at the
    /// end of the data's last: both are found in the one walk of the chain.
    #[test]
    fn a_header_in_pieces_and_a_status_at_the_end_of_the_data() {
        let (mut blk, mem, _) = active("pieces", false);
        let mut hdr = [0u8; 16];
        hdr[8..16].copy_from_slice(&1u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(BUF + 512)).unwrap();
        // 3 + 13 header bytes, then 512 data bytes and the status in one writable buffer.
        publish(
            &mem,
            &[
                (HDR, 3, F_NEXT, 1),
                (HDR + 3, 13, F_NEXT, 2),
                (BUF, 513, F_WRITE, 0),
            ],
            &[0],
        );
        blk.process_queue(0);
        assert_eq!(peek(&mem, BUF + 512, 1), [S_OK]);
        assert_eq!(&peek(&mem, BUF, 5), b"hello");
        assert_eq!(used(&mem).1, vec![(0, 513)]);
        // A header cut short (15 bytes) is an I/O error, still answered in the status.
        let (mut blk, mem, _) = active("short", false);
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        publish(&mem, &[(HDR, 15, F_NEXT, 1), (STATUS, 1, F_WRITE, 0)], &[0]);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_IOERR);
        assert_eq!(used(&mem).1, vec![(0, 1)]);
    }

    #[test]
    fn data_split_over_descriptors_goes_straight_to_guest_memory() {
        let (mut blk, mem, path) = active("split", false);
        let mut hdr = [0u8; 16];
        hdr[8..16].copy_from_slice(&1u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        // 512 bytes of sector 1 in pieces of 5, 300 and 207 bytes, then the status.
        publish(
            &mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (BUF, 5, F_WRITE | F_NEXT, 2),
                (BUF + 0x800, 300, F_WRITE | F_NEXT, 3),
                (BUF + 0x1000, 207, F_WRITE | F_NEXT, 4),
                (STATUS, 1, F_WRITE, 0),
            ],
            &[0],
        );
        blk.process_queue(0);
        assert_eq!(status(&mem), S_OK);
        assert_eq!(&peek(&mem, BUF, 5), b"hello");
        assert_eq!(used(&mem).1, vec![(0, 513)]);
        // And back: the same pieces written to sector 3.
        hdr[0..4].copy_from_slice(&T_OUT.to_le_bytes());
        hdr[8..16].copy_from_slice(&3u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_slice(b"world", GuestAddress(BUF + 0x1000 + 202))
            .unwrap();
        let readable: Vec<_> = [
            (HDR, 16, F_NEXT, 1),
            (BUF, 5, F_NEXT, 2),
            (BUF + 0x800, 300, F_NEXT, 3),
            (BUF + 0x1000, 207, F_NEXT, 4),
            (STATUS, 1, F_WRITE, 0),
        ]
        .to_vec();
        let (mut blk, mem2) = (blk, mem);
        blk.activate(mem2.clone(), vec![queue()], 0);
        mem2.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
        publish(&mem2, &readable, &[0]);
        blk.process_queue(0);
        assert_eq!(status(&mem2), S_OK);
        let image = std::fs::read(&path).unwrap();
        assert_eq!(&image[3 * 512..3 * 512 + 5], b"hello");
        assert_eq!(&image[4 * 512 - 5..4 * 512], b"world");
    }

    /// Where the tests put an indirect table.
    const TABLE: u64 = DATA + 0x8000;
    const F_INDIRECT: u16 = 4;

    /// Writes `descs` as an indirect table at [`TABLE`] and publishes one ring descriptor
    /// pointing to it.
    fn publish_indirect(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16, u16)]) {
        use virtio_queue::desc::split::Descriptor as SplitDescriptor;
        use virtio_queue::desc::RawDescriptor;
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(SplitDescriptor::new(*addr, *len, *flags, *next));
            mem.write_obj(d, GuestAddress(TABLE + 16 * i as u64))
                .unwrap();
        }
        publish(
            mem,
            &[(TABLE, 16 * descs.len() as u32, F_INDIRECT, 0)],
            &[0],
        );
    }

    #[test]
    fn requests_in_an_indirect_table_read_and_write_the_disk() {
        let (mut blk, mem, path) = active("indirect", false);
        assert_ne!(blk.features() & VIRTIO_RING_F_INDIRECT_DESC, 0);
        let mut hdr = [0u8; 16];
        hdr[8..16].copy_from_slice(&1u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        // Sector 1 read in two pieces through the table, then the status.
        publish_indirect(
            &mem,
            &[
                (HDR, 16, F_NEXT, 1),
                (BUF, 200, F_WRITE | F_NEXT, 2),
                (BUF + 0x800, 312, F_WRITE | F_NEXT, 3),
                (STATUS, 1, F_WRITE, 0),
            ],
        );
        assert_eq!(blk.process_queue(0), QueueOutcome::Used);
        assert_eq!(status(&mem), S_OK);
        assert_eq!(&peek(&mem, BUF, 5), b"hello");
        assert_eq!(used(&mem).1, vec![(0, 513)]);
        // And a write of those pieces to sector 5, through a table again.
        let mem2 = memory();
        blk.activate(mem2.clone(), vec![queue()], 0);
        hdr[0..4].copy_from_slice(&T_OUT.to_le_bytes());
        hdr[8..16].copy_from_slice(&5u64.to_le_bytes());
        mem2.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem2.write_slice(b"table", GuestAddress(BUF)).unwrap();
        mem2.write_slice(b"entry", GuestAddress(BUF + 0x800 + 307))
            .unwrap();
        publish_indirect(
            &mem2,
            &[
                (HDR, 16, F_NEXT, 1),
                (BUF, 200, F_NEXT, 2),
                (BUF + 0x800, 312, F_NEXT, 3),
                (STATUS, 1, F_WRITE, 0),
            ],
        );
        blk.process_queue(0);
        assert_eq!(status(&mem2), S_OK);
        let image = std::fs::read(&path).unwrap();
        assert_eq!(&image[5 * 512..5 * 512 + 5], b"table");
        assert_eq!(&image[6 * 512 - 5..6 * 512], b"entry");
    }

    #[test]
    fn an_indirect_chain_longer_than_the_queue_is_an_io_error() {
        let (mut blk, mem, _) = active("indirect-long", false);
        let mut hdr = [0u8; 16];
        hdr[8..16].copy_from_slice(&1u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        // The header, 300 sector-long pieces (all into the same buffer), the status: 302
        // descriptors, more than the queue's 256.
        let mut descs = vec![(HDR, 16, F_NEXT, 1)];
        for i in 0..300u16 {
            descs.push((BUF, 512, F_WRITE | F_NEXT, i + 2));
        }
        descs.push((STATUS, 1, F_WRITE, 0));
        publish_indirect(&mem, &descs);
        assert_eq!(blk.process_queue(0), QueueOutcome::Used);
        assert_eq!(status(&mem), S_IOERR);
        // And one as long as the queue (seg_max segments) goes through.
        let mem2 = memory();
        blk.activate(mem2.clone(), vec![queue()], 0);
        hdr[8..16].copy_from_slice(&0u64.to_le_bytes());
        mem2.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        let mut descs = vec![(HDR, 16, F_NEXT, 1)];
        // (Half-sector pieces: 127 sectors, inside the 64 KiB disk.)
        for i in 0..SEG_MAX as u16 {
            descs.push((BUF, 256, F_WRITE | F_NEXT, i + 2));
        }
        descs.push((STATUS, 1, F_WRITE, 0));
        assert_eq!(descs.len(), usize::from(QUEUE_SIZE));
        publish_indirect(&mem2, &descs);
        blk.process_queue(0);
        assert_eq!(status(&mem2), S_OK);
    }

    #[test]
    fn get_id_names_the_file() {
        let (mut blk, mem, _) = active("id", false);
        request(&mem, T_GET_ID, 0, 20, F_WRITE);
        blk.process_queue(0);
        assert_eq!(status(&mem), S_OK);
        assert!(peek(&mem, BUF, 6).starts_with(b"rvvmm-"));
    }

    #[test]
    fn hostile_chains_never_panic() {
        let (mut blk, mem, _) = active("hostile", false);
        // No status byte at all, a header outside RAM, a chain that loops, wrong directions.
        publish(
            &mem,
            &[
                (HDR, 16, 0, 0),
                (0x10, 16, F_NEXT, 2),
                (STATUS, 1, F_WRITE, 0),
                (HDR, 16, F_NEXT, 3),
                (HDR, 16, F_NEXT, 3),
                (BUF, 512, F_WRITE | F_NEXT, 6),
                (HDR, 16, 0, 0),
            ],
            &[0, 1, 3, 5],
        );
        blk.process_queue(0);
        assert_eq!(used(&mem).0, 4);
    }
}
