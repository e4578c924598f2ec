//! Guest RAM as the host gives it: the mapping (anonymous memory with transparent huge pages
//! advised, or hugetlb pages; a memfd mapped shared when another process must map it too, as
//! a vhost-user backend does), and the /proc figures of what is resident.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::riscv64::layout::{fdt_addr, RAM_BASE};

/// Errors mapping guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Guest RAM could not be mapped.
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Map {
        /// Bytes asked for.
        size: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// Shared guest RAM (for a vhost-user backend) cannot be made.
    #[error("cannot map {mib} MiB of shared guest RAM (a memfd, for vhost-user backends): {why}")]
    Shared {
        /// RAM size in MiB.
        mib: u64,
        /// Why not.
        why: String,
    },
    /// `--hugepages` cannot be honoured.
    #[error("cannot map {mib} MiB of guest RAM in 2 MiB huge pages: {why}")]
    HugePages {
        /// RAM size in MiB.
        mib: u64,
        /// Why not.
        why: String,
    },
}

/// Size of a huge page for `--hugepages`.
const HUGE_PAGE: u64 = 2 << 20;

/// Maps guest RAM: anonymous memory with transparent huge pages advised, or (`hugepages`)
/// hugetlb 2 MiB pages, reserved at once so that a shortage is an error now, not a SIGBUS in
/// the middle of a guest's run. `shared`: the same, but in a memfd mapped shared, whose fd a
/// vhost-user backend is given to map guest RAM itself.
pub fn guest_memory(
    ram_size: u64,
    hugepages: bool,
    shared: bool,
) -> Result<GuestMemoryMmap, MemoryError> {
    if shared {
        return shared_memory(ram_size, hugepages);
    }
    if !hugepages {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), ram_size as usize)])
            .map_err(|source| MemoryError::Map {
            size: ram_size,
            source,
        })?;
        advise_huge_pages(&memory, ram_size);
        return Ok(memory);
    }
    let huge_err = |why: String| MemoryError::HugePages {
        mib: ram_size >> 20,
        why,
    };
    if !ram_size.is_multiple_of(HUGE_PAGE) {
        return Err(huge_err("--memory is not a multiple of 2 MiB".into()));
    }
    let region = vm_memory::MmapRegion::<()>::build(
        None,
        ram_size as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
    )
    .map_err(|e| {
        huge_err(format!(
            "{e}; reserve {} of them with `echo {} > /proc/sys/vm/nr_hugepages` (as root)",
            ram_size / HUGE_PAGE,
            ram_size / HUGE_PAGE
        ))
    })?;
    let region = vm_memory::GuestRegionMmap::new(region, GuestAddress(RAM_BASE))
        .ok_or_else(|| huge_err("the RAM range overflows".into()))?;
    GuestMemoryMmap::from_regions(vec![region]).map_err(|e| huge_err(e.to_string()))
}

/// Guest RAM in a memfd (`MFD_HUGETLB` with `hugepages`), mapped shared. vm-memory maps a
/// file it is given but makes no memfd, hence the memfd_create here.
fn shared_memory(ram_size: u64, hugepages: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let err = |why: String| MemoryError::Shared {
        mib: ram_size >> 20,
        why,
    };
    if hugepages && !ram_size.is_multiple_of(HUGE_PAGE) {
        return Err(MemoryError::HugePages {
            mib: ram_size >> 20,
            why: "--memory is not a multiple of 2 MiB".into(),
        });
    }
    let flags = libc::MFD_CLOEXEC | if hugepages { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: memfd_create with a NUL-terminated name; the fd it returns is owned below.
    let fd = unsafe { libc::memfd_create(c"rvvmm-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(err(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd was just returned by memfd_create and nothing else owns it.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(ram_size)
        .map_err(|e| err(format!("cannot size the memfd: {e}")))?;
    // Without MAP_NORESERVE: hugetlb pages are reserved at mmap, so a shortage fails here.
    let region = vm_memory::MmapRegion::<()>::build(
        Some(vm_memory::FileOffset::new(file, 0)),
        ram_size as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )
    .map_err(|e| {
        if hugepages {
            err(format!(
                "{e}; reserve {} huge pages with `echo {} > /proc/sys/vm/nr_hugepages` (as root)",
                ram_size / HUGE_PAGE,
                ram_size / HUGE_PAGE
            ))
        } else {
            err(e.to_string())
        }
    })?;
    let region = vm_memory::GuestRegionMmap::new(region, GuestAddress(RAM_BASE))
        .ok_or_else(|| err("the RAM range overflows".into()))?;
    let memory = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| err(e.to_string()))?;
    if !hugepages {
        advise_huge_pages(&memory, ram_size);
    }
    Ok(memory)
}

/// Asks for transparent huge pages on guest RAM (as Cloud Hypervisor's `thp=on`): a guest
/// touching fresh memory then takes one host fault per 2 MiB instead of per 4 KiB. But not for
/// the 2 MiB block that holds the dtb: rvvmm writes a few KiB there at every boot, and a huge
/// page would have the host clear 2 MiB for them first (about 1 ms of startup in the lab).
/// Only hints: without THP, nothing changes.
fn advise_huge_pages(memory: &GuestMemoryMmap, ram_size: u64) {
    advise(memory, RAM_BASE, ram_size, libc::MADV_HUGEPAGE);
    let dtb_block = fdt_addr(ram_size) & !(HUGE_PAGE - 1);
    advise(memory, dtb_block, HUGE_PAGE, libc::MADV_NOHUGEPAGE);
}

/// madvise(`advice`) on guest RAM `[gpa, gpa + len)` (ignored where it is not RAM).
fn advise(memory: &GuestMemoryMmap, gpa: u64, len: u64, advice: libc::c_int) {
    use vm_memory::GuestMemoryBackend;
    let Ok(slice) = memory.get_slice(GuestAddress(gpa), len as usize) else {
        return;
    };
    // SAFETY: the range lies inside guest RAM's mapping (get_slice checked it), which rvvmm
    // owns; these advices change no contents.
    let rc = unsafe { libc::madvise(slice.ptr_guard_mut().as_ptr().cast(), len as usize, advice) };
    if rc != 0 {
        log::debug!(
            "madvise({advice}) on guest RAM failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// This process's resident set size, from /proc/self/status (0 if unreadable).
pub fn vm_rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A "Name:   N kB" field of /proc/self/status (0 if unreadable).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(kib)
        })
        .unwrap_or(0)
}

/// The number in a /proc "   1234 kB" value.
fn kib(value: &str) -> Option<u64> {
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resident KiB of guest RAM (`ram_size` bytes from its host address), from /proc/self/smaps
/// (0 if not found).
pub fn guest_resident_kib(memory: &GuestMemoryMmap, ram_size: u64) -> u64 {
    use vm_memory::GuestMemoryBackend;
    let Ok(base) = memory.get_host_address(GuestAddress(RAM_BASE)) else {
        return 0;
    };
    let (start, end) = (base as u64, base as u64 + ram_size);
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    // Guest RAM may span several mappings (madvise splits it): add up those inside it.
    let mut in_guest = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    in_guest = a >= start && b <= end;
                    continue;
                }
            }
        }
        if in_guest {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += kib(v).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn resident_guest_ram_is_counted_across_split_mappings() {
        let size = 16u64 << 20;
        let memory = guest_memory(size, false, false).unwrap();
        // advise_huge_pages split the mapping (the dtb block has its own advice).
        memory
            .write_slice(&vec![1u8; 1 << 20], GuestAddress(RAM_BASE))
            .unwrap();
        memory
            .write_slice(&[1u8; 4096], GuestAddress(fdt_addr(size)))
            .unwrap();
        let kib = guest_resident_kib(&memory, size);
        assert!((1028..=size >> 10).contains(&kib), "{kib} KiB");
    }

    #[test]
    fn hugepages_need_a_multiple_of_2_mib() {
        let err = guest_memory((2 << 20) + 4096, true, false).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 2 MiB"), "{err}");
    }
}
