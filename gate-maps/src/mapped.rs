//! A BPF array of `u64`s created with `BPF_F_MMAPABLE`, mapped into this process: user space
//! reads and writes its words as memory, where a system call a word would cost ~1 µs. The filter
//! keeps its counters and bits in two such arrays (`filter.rs`), so that making the bits again
//! at another size reads 16 MiB of counters in milliseconds, under the pin directory's lock,
//! instead of a third of a second of batched system calls.
//!
//! Every process that writes the array holds the pin directory's lock; the programs only read
//! it. Words are read and written whole (aligned 8-byte atomics), so a program never sees a torn
//! word.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

/// The words of a mapped array.
pub(crate) struct MappedWords {
    words: NonNull<AtomicU64>,
    len: usize,
    /// The length of the mapping, whole pages.
    bytes: usize,
}

// SAFETY: the mapping belongs to this value alone and is shared only as atomics, which any
// thread may read and write; the kernel keeps the map alive while it is mapped.
#[expect(unsafe_code, reason = "a raw pointer into a mapping the kernel keeps alive is Send")]
unsafe impl Send for MappedWords {}

impl MappedWords {
    /// Maps the array `data`, of `entries` `u64` words.
    ///
    /// # Errors
    /// The kernel refuses the mapping (an array made without `BPF_F_MMAPABLE`).
    #[expect(unsafe_code, reason = "mmap(2) is how the kernel shares a BPF_F_MMAPABLE array's memory")]
    pub(crate) fn new(data: &MapData, entries: u32) -> io::Result<Self> {
        let len = entries as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (len * size_of::<u64>()).div_ceil(page).max(1) * page;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a new shared mapping of the map's own memory (the kernel checks the length
        // against the array); nothing else in this process points there.
        let address = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let words = NonNull::new(address.cast::<AtomicU64>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { words, len, bytes })
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.len, "word {index} of an array of {}", self.len);
        // SAFETY: in bounds (checked above) of a page-aligned mapping of `len` words, which
        // lives as long as `self`; the kernel's memory for the array, shared as atomics.
        #[expect(unsafe_code, reason = "the mapped array's memory, viewed as the atomics it is used as")]
        unsafe {
            self.words.add(index).as_ref()
        }
    }

    /// Word `index`.
    pub(crate) fn get(&self, index: usize) -> u64 {
        self.word(index).load(Ordering::Relaxed)
    }

    /// Sets word `index` to `value`.
    pub(crate) fn set(&self, index: usize, value: u64) {
        self.word(index).store(value, Ordering::Relaxed);
    }

    /// Sets word `index` to `value` if it is not that already.
    pub(crate) fn update(&self, index: usize, value: u64) {
        if self.get(index) != value {
            self.set(index, value);
        }
    }

    /// Makes every write so far visible to the programs before whatever this thread does next
    /// (writing a lease or the bits' size with a system call).
    pub(crate) fn publish() {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

impl Drop for MappedWords {
    #[expect(unsafe_code, reason = "munmap(2) of the mapping `new` made")]
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, of that length; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.words.as_ptr().cast(), self.bytes);
        }
    }
}
