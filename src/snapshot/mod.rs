//! Snapshot files: what a paused VM is written to, and read back from.
//!
//! A snapshot is a directory (Cloud Hypervisor's `file:///dir` URLs name it) with two files:
//!
//! - `state.snap`: a header (magic `RVVMMSNP`, the format version, the section count and the
//!   header's own CRC-32), then named sections, each with its length and CRC-32. Each section
//!   is JSON (serde): `config` (the VM's config, as `vm.create` takes it), `vcpus`, `irqchip`,
//!   `uart`, `virtio`, `memory`. Everything is checked before anything is restored: a wrong
//!   magic or version, a truncated file or a flipped byte is refused naming the section.
//! - `memory.bin`: guest RAM, byte for byte, as a sparse file: only blocks with a non-zero byte
//!   are written (large `pwrite`s), the rest are holes. Restore reads back only the data
//!   extents (`SEEK_DATA`/`SEEK_HOLE`), so a 256 MiB guest that touched 40 MiB costs 40 MiB of
//!   reads. Its length is checked; its bytes have no checksum (reading 256 MiB twice would
//!   double the restore time; the state file's checksums cover what is small and crucial).

pub mod aia;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The state file's name in a snapshot directory.
pub const STATE_FILE: &str = "state.snap";
/// The RAM file's name.
pub const MEMORY_FILE: &str = "memory.bin";
/// The state file's first bytes.
pub const MAGIC: &[u8; 8] = b"RVVMMSNP";
/// The format version this rvvmm writes and reads.
pub const VERSION: u32 = 1;
/// Largest state file read (the sections are a few hundred KiB at most).
const MAX_STATE: u64 = 64 << 20;
/// Blocks of RAM checked for zeros and written at once.
const BLOCK: usize = 64 << 10;

/// Errors of snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The URL is not `file:///dir`.
    #[error("'{0}' is not a snapshot URL (file:///path/to/dir)")]
    Url(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not one this rvvmm reads.
    #[error("{path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the section.
        what: String,
    },
}

type Result<T> = std::result::Result<T, SnapshotError>;

/// The directory a `file:///dir` URL names.
pub fn dir_of_url(url: &str) -> Result<PathBuf> {
    match url.strip_prefix("file://") {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(PathBuf::from(path)),
        _ => Err(SnapshotError::Url(url.to_string())),
    }
}

/// Parses Cloud Hypervisor's restore argument, `source_url=file:///dir[,resume=on|off]` (or
/// a bare `file:///dir`): the directory and whether to resume.
pub fn parse_restore(arg: &str) -> std::result::Result<(PathBuf, bool), String> {
    let mut dir = None;
    let mut resume = false;
    for part in arg.split(',') {
        match part.split_once('=') {
            Some(("source_url", url)) => dir = Some(dir_of_url(url).map_err(|e| e.to_string())?),
            Some(("resume", "on" | "true")) => resume = true,
            Some(("resume", "off" | "false")) => resume = false,
            None if part.starts_with("file://") => {
                dir = Some(dir_of_url(part).map_err(|e| e.to_string())?)
            }
            _ => {
                return Err(format!(
                    "unknown restore option '{part}' (source_url=file:///dir[,resume=on])"
                ))
            }
        }
    }
    let dir = dir.ok_or("a restore needs source_url=file:///path/to/dir")?;
    Ok((dir, resume))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The sections of a state file, in order, as written or as read and checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sections(Vec<(String, Vec<u8>)>);

impl Sections {
    /// Adds section `name` holding `value` as JSON.
    pub fn put<T: Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| SnapshotError::Format {
            path: PathBuf::from(STATE_FILE),
            what: format!("section {name}: cannot encode: {e}"),
        })?;
        self.0.push((name.to_string(), bytes));
        Ok(())
    }

    /// Adds section `name` holding `bytes` as they are (a test's or the fuzz target's way to
    /// write any section with a right checksum).
    pub fn put_raw(&mut self, name: &str, bytes: Vec<u8>) {
        self.0.push((name.to_string(), bytes));
    }

    /// Section `name`'s bytes (checked by [`Sections::decode`]).
    pub fn bytes(&self, name: &str) -> std::result::Result<&[u8], String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, bytes)| bytes.as_slice())
            .ok_or_else(|| format!("section {name} is missing"))
    }

    /// Section `name`, decoded.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> std::result::Result<T, String> {
        serde_json::from_slice(self.bytes(name)?).map_err(|e| format!("section {name}: {e}"))
    }

    /// The bytes of the state file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        for (name, bytes) in &self.0 {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Parses and checks a state file's bytes: every section's CRC before any is used.
    pub fn decode(data: &[u8]) -> std::result::Result<Self, String> {
        let mut at = 0usize;
        let mut take = |n: usize, what: &str| -> std::result::Result<&[u8], String> {
            let end = at
                .checked_add(n)
                .filter(|e| *e <= data.len())
                .ok_or_else(|| format!("truncated in {what}"))?;
            let bytes = &data[at..end];
            at = end;
            Ok(bytes)
        };
        let header = take(20, "the header")?;
        if &header[..8] != MAGIC {
            return Err("not an rvvmm snapshot (bad magic in the header)".into());
        }
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if crc32fast::hash(&header[..16]) != word(&header[16..20]) {
            return Err("the header's checksum does not match (a damaged file)".into());
        }
        let version = word(&header[8..12]);
        if version != VERSION {
            return Err(format!(
                "format version {version}; this rvvmm reads version {VERSION}"
            ));
        }
        let count = word(&header[12..16]);
        if count > 64 {
            return Err(format!("{count} sections is more than a snapshot has"));
        }
        let mut sections = Vec::new();
        for i in 0..count {
            let len = take(1, &format!("section {i}'s name"))?[0] as usize;
            let name = String::from_utf8(take(len, &format!("section {i}'s name"))?.to_vec())
                .map_err(|_| format!("section {i}'s name is not text"))?;
            let size = take(8, &format!("section {name}"))?;
            let size = u64::from_le_bytes(size.try_into().map_err(|_| "bad size")?);
            let crc = word(take(4, &format!("section {name}"))?);
            let size = usize::try_from(size).map_err(|_| format!("section {name} is too large"))?;
            let bytes = take(size, &format!("section {name}"))?;
            if crc32fast::hash(bytes) != crc {
                return Err(format!(
                    "section {name}: checksum does not match (a damaged file)"
                ));
            }
            sections.push((name, bytes.to_vec()));
        }
        if at != data.len() {
            return Err(format!("{} bytes after the last section", data.len() - at));
        }
        Ok(Sections(sections))
    }

    /// Writes the state file into `dir` (made if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(STATE_FILE);
        let mut file = File::create(&path).map_err(io(&path))?;
        file.write_all(&self.encode()).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))
    }

    /// Reads and checks the state file of `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let file = crate::files::open_regular(&path, false).map_err(io(&path))?;
        let mut data = Vec::new();
        file.take(MAX_STATE + 1)
            .read_to_end(&mut data)
            .map_err(io(&path))?;
        if data.len() as u64 > MAX_STATE {
            return Err(SnapshotError::Format {
                path,
                what: "too large for a snapshot's state".into(),
            });
        }
        Sections::decode(&data).map_err(|what| SnapshotError::Format { path, what })
    }
}

/// The interrupt controller in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IrqchipState {
    /// rvvmm's PLIC.
    Plic(crate::devices::plic::PlicState),
    /// KVM's AIA.
    Aia(aia::AiaState),
}

/// Everything of a machine a snapshot holds besides its config and its RAM's bytes.
#[derive(Debug, Clone)]
pub struct SavedMachine {
    /// Each vCPU, in index order.
    pub vcpus: Vec<crate::vcpu::state::VcpuState>,
    /// The interrupt controller.
    pub irqchip: IrqchipState,
    /// The UART.
    pub uart: crate::devices::uart::UartState,
    /// Each virtio transport by device ID, in slot order.
    pub virtio: Vec<(String, crate::devices::virtio::mmio::TransportState)>,
    /// The RAM file.
    pub memory: MemoryInfo,
}

impl SavedMachine {
    /// The sections that hold it (the config section is the caller's).
    pub fn put(&self, sections: &mut Sections) -> Result<()> {
        sections.put("vcpus", &self.vcpus)?;
        sections.put("irqchip", &self.irqchip)?;
        sections.put("uart", &self.uart)?;
        sections.put("virtio", &self.virtio)?;
        sections.put("memory", &self.memory)
    }

    /// Reads it back from checked sections.
    pub fn get(sections: &Sections) -> std::result::Result<Self, String> {
        Ok(SavedMachine {
            vcpus: sections.get("vcpus")?,
            irqchip: sections.get("irqchip")?,
            uart: sections.get("uart")?,
            virtio: sections.get("virtio")?,
            memory: sections.get("memory")?,
        })
    }
}

/// What the `memory` section says of the RAM file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryInfo {
    /// Bytes of guest RAM.
    pub size: u64,
    /// Bytes written (blocks with data).
    pub data_bytes: u64,
}

/// Writes guest RAM to `dir/memory.bin`, skipping all-zero blocks (holes).
pub fn write_memory(memory: &GuestMemoryMmap, dir: &Path) -> Result<MemoryInfo> {
    let path = dir.join(MEMORY_FILE);
    let file = File::create(&path).map_err(io(&path))?;
    let mut size = 0u64;
    let mut data_bytes = 0u64;
    for region in memory.iter() {
        let base = region.start_addr().0 - memory_base(memory);
        let len = region.len() as usize;
        // SAFETY: the region is a live mapping of `len` bytes owned by `memory`, which outlives
        // this loop; the vCPUs are paused and the devices parked, so nothing writes it now
        // (a racing write would at worst be missed, never be unsound for plain bytes).
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr(), len) };
        let mut off = 0;
        while off < len {
            let end = (off + BLOCK).min(len);
            // Coalesce consecutive data blocks into one write.
            let mut run_end = off;
            while run_end < len && !is_zero(&bytes[run_end..(run_end + BLOCK).min(len)]) {
                run_end = (run_end + BLOCK).min(len);
            }
            if run_end > off {
                file.write_all_at(&bytes[off..run_end], base + off as u64)
                    .map_err(io(&path))?;
                data_bytes += (run_end - off) as u64;
                off = run_end;
            } else {
                off = end;
            }
        }
        size += len as u64;
    }
    file.set_len(size).map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    Ok(MemoryInfo { size, data_bytes })
}

fn memory_base(memory: &GuestMemoryMmap) -> u64 {
    memory.iter().map(|r| r.start_addr().0).min().unwrap_or(0)
}

fn is_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits at u64 alignment.
        unsafe { bytes.align_to::<u64>() }
    };
    head.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}

/// Reads `dir/memory.bin` into fresh guest RAM (all zero): only its data extents. Returns the
/// bytes read.
pub fn read_memory(memory: &GuestMemoryMmap, dir: &Path, info: &MemoryInfo) -> Result<u64> {
    let path = dir.join(MEMORY_FILE);
    let file = crate::files::open_regular(&path, false).map_err(io(&path))?;
    let len = file.metadata().map_err(io(&path))?.len();
    let ram: u64 = memory.iter().map(|r| r.len()).sum();
    if len != info.size || len != ram {
        return Err(SnapshotError::Format {
            path,
            what: format!(
                "{len} bytes, but the snapshot's RAM is {} and this VM's {ram} (a truncated or foreign file)",
                info.size
            ),
        });
    }
    let base = memory_base(memory);
    let mut read = 0u64;
    let mut at = 0u64;
    while at < len {
        let Some((start, end)) = next_extent(&file, at, len).map_err(io(&path))? else {
            break;
        };
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(8 << 20);
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, off).map_err(io(&path))?;
            vm_memory::Bytes::write_slice(memory, &buf, GuestAddress(base + off)).map_err(|e| {
                SnapshotError::Format {
                    path: path.clone(),
                    what: format!("cannot write guest RAM at {:#x}: {e}", base + off),
                }
            })?;
            off += n as u64;
            read += n as u64;
        }
        at = end;
    }
    Ok(read)
}

/// The next data extent at or after `at`: [start, end). `None` when only holes remain.
fn next_extent(file: &File, at: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: lseek on an open fd owned by `file`; no memory is passed.
    let start = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // A file system without SEEK_DATA: all of it is data.
            Some(libc::EINVAL) => Ok(Some((at, len))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((start as u64, (end as u64).min(len))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections() -> Sections {
        let mut s = Sections::default();
        s.put("config", &serde_json::json!({"cpus": {"boot_vcpus": 2}}))
            .unwrap();
        s.put("vcpus", &vec![1u32, 2, 3]).unwrap();
        s
    }

    #[test]
    fn sections_round_trip() {
        let s = sections();
        let back = Sections::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.get::<Vec<u32>>("vcpus").unwrap(), [1, 2, 3]);
        assert_eq!(
            back.get::<u32>("uart").unwrap_err(),
            "section uart is missing"
        );
    }

    #[test]
    fn damage_is_refused_naming_where() {
        let good = sections().encode();
        let mut flipped_header = good.clone();
        flipped_header[9] ^= 1;
        assert!(Sections::decode(&flipped_header)
            .unwrap_err()
            .contains("header's checksum"));
        let mut flipped_body = good.clone();
        let last = flipped_body.len() - 2;
        flipped_body[last] ^= 0x40;
        assert_eq!(
            Sections::decode(&flipped_body).unwrap_err(),
            "section vcpus: checksum does not match (a damaged file)"
        );
        let truncated = &good[..good.len() - 3];
        assert_eq!(
            Sections::decode(truncated).unwrap_err(),
            "truncated in section vcpus"
        );
        let mut version = good.clone();
        version[8] = 7;
        let crc = crc32fast::hash(&version[..16]).to_le_bytes();
        version[16..20].copy_from_slice(&crc);
        assert_eq!(
            Sections::decode(&version).unwrap_err(),
            "format version 7; this rvvmm reads version 1"
        );
        assert!(Sections::decode(b"not a snapshot at all")
            .unwrap_err()
            .contains("bad magic"));
        assert!(Sections::decode(b"short")
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn restore_arguments() {
        assert_eq!(
            parse_restore("source_url=file:///s,resume=on").unwrap(),
            (PathBuf::from("/s"), true)
        );
        assert_eq!(
            parse_restore("file:///s").unwrap(),
            (PathBuf::from("/s"), false)
        );
        assert!(parse_restore("resume=on").is_err());
        assert!(parse_restore("source_url=/s").is_err());
        assert!(parse_restore("file:///s,prefault=on").is_err());
    }

    #[test]
    fn urls_name_directories() {
        assert_eq!(
            dir_of_url("file:///tmp/s").unwrap(),
            PathBuf::from("/tmp/s")
        );
        for bad in ["/tmp/s", "file://tmp", "http://x/y", "file:///"] {
            assert!(dir_of_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ram_is_written_sparse_and_read_back() {
        let dir = std::env::temp_dir().join(format!("rvvmm-snap-ram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = 0x8000_0000;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(base), 4 << 20)]).unwrap();
        vm_memory::Bytes::write_slice(&memory, b"hello", GuestAddress(base + 3 * BLOCK as u64 + 7))
            .unwrap();
        vm_memory::Bytes::write_slice(&memory, &[9u8; 100], GuestAddress(base + (4 << 20) - 100))
            .unwrap();
        let info = write_memory(&memory, &dir).unwrap();
        assert_eq!(info.size, 4 << 20);
        assert_eq!(info.data_bytes, 2 * BLOCK as u64, "two blocks hold data");
        let fresh = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(base), 4 << 20)]).unwrap();
        read_memory(&fresh, &dir, &info).unwrap();
        let mut buf = [0u8; 5];
        vm_memory::Bytes::read_slice(&fresh, &mut buf, GuestAddress(base + 3 * BLOCK as u64 + 7))
            .unwrap();
        assert_eq!(&buf, b"hello");
        let mut last = [0u8; 100];
        vm_memory::Bytes::read_slice(&fresh, &mut last, GuestAddress(base + (4 << 20) - 100))
            .unwrap();
        assert_eq!(last, [9u8; 100]);
        // A truncated RAM file is refused.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(MEMORY_FILE))
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let e = read_memory(&fresh, &dir, &info).unwrap_err().to_string();
        assert!(e.contains("a truncated or foreign file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
