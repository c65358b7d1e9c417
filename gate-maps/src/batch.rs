//! The kernel's batched hash-map operations (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`, Linux 5.6), which aya 0.14 does not wrap. One call moves thousands of
//! entries where aya's iterator makes two calls an entry, so reading a million leases costs a
//! few hundred system calls instead of two million (docs/benchmarks.md, "Leases at 1,000,000").
use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use aya::{Pod, maps::MapData};

// bpf(2) commands (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries a batch read asks for at once; the kernel asks for more room (`ENOSPC`) only when one
/// hash bucket alone holds more.
pub const READ_CHUNK: usize = 4096;

/// `union bpf_attr`'s `batch` member; the kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs one batch command; on failure, the error and how many entries the kernel had processed.
#[expect(unsafe_code, reason = "aya has no batch calls; the kernel interface needs bpf(2)")]
fn bpf(command: libc::c_long, attr: &mut BatchAttr) -> Result<(), io::Error> {
    // SAFETY: bpf(2) reads and writes `attr` (of the size passed) and the buffers it points at,
    // which every caller sizes for `attr.count` entries of the map's key and value sizes
    // (checked against the map when the `BatchMap` was made).
    let ret = unsafe { libc::syscall(libc::SYS_bpf, command, std::ptr::from_mut(attr), size_of::<BatchAttr>()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn address<T>(slice: &[T]) -> u64 {
    slice.as_ptr() as u64
}

/// A hash map opened for batched operations, its key and value types checked against the map's.
pub struct BatchMap<K, V> {
    fd: OwnedFd,
    _types: PhantomData<(K, V)>,
}

/// Why a map cannot be used for batches.
#[derive(Debug, thiserror::Error)]
pub enum BatchMapError {
    #[error("duplicate the map's descriptor: {0}")]
    Dup(io::Error),
    #[error("read the map's info: {0}")]
    Info(String),
    #[error("key/value sizes {found:?} where {expected:?} were expected")]
    Layout { found: (u32, u32), expected: (usize, usize) },
}

impl<K: Pod, V: Pod> BatchMap<K, V> {
    /// Takes its own descriptor of `data`, after checking the map's key and value sizes.
    ///
    /// # Errors
    /// The sizes differ from `K` and `V`, or the descriptor cannot be duplicated.
    pub fn new(data: &MapData) -> Result<Self, BatchMapError> {
        let info = data.info().map_err(|e| BatchMapError::Info(e.to_string()))?;
        let found = (info.key_size(), info.value_size());
        let expected = (size_of::<K>(), size_of::<V>());
        if (found.0 as usize, found.1 as usize) != expected {
            return Err(BatchMapError::Layout { found, expected });
        }
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(BatchMapError::Dup)?;
        Ok(Self { fd, _types: PhantomData })
    }

    fn attr(&self, count: usize) -> BatchAttr {
        let count = u32::try_from(count).expect("batches are far smaller than 2^32 entries");
        BatchAttr { count, map_fd: self.fd.as_raw_fd() as u32, ..BatchAttr::default() }
    }

    /// Reads every entry, a chunk at a time. Entries written or removed while it reads may be
    /// seen or not; every entry present throughout is seen exactly once (the kernel walks the
    /// buckets in order, so deleting what it already returned is safe).
    ///
    /// # Errors
    /// The descriptor cannot be duplicated for the reader.
    pub fn reader(&self) -> io::Result<Reader<K, V>> {
        Ok(Reader { fd: self.fd.try_clone()?, cursor: None, done: false, chunk: READ_CHUNK, _types: PhantomData })
    }

    /// Writes `keys[i]` = `values[i]` with `flags` (`BPF_ANY` = 0). On failure, how many were
    /// written (the first ones, in order) and why the next was refused.
    ///
    /// # Errors
    /// `(written, error)`: the kernel refused `keys[written]`.
    pub fn update(&self, keys: &[K], values: &[V], flags: u64) -> Result<(), (usize, io::Error)> {
        assert_eq!(keys.len(), values.len(), "one value per key");
        if keys.is_empty() {
            return Ok(());
        }
        let mut attr = self.attr(keys.len());
        attr.keys = address(keys);
        attr.values = address(values);
        attr.elem_flags = flags;
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map_err(|e| (attr.count as usize, e))
    }

    /// Deletes `keys`; a key that is not there is skipped. Returns, per key, whether it was there.
    ///
    /// # Errors
    /// The kernel refused a delete for another reason than "not there".
    pub fn delete(&self, keys: &[K]) -> io::Result<Vec<bool>> {
        let mut deleted = vec![true; keys.len()];
        let mut start = 0;
        while start < keys.len() {
            let rest = &keys[start..];
            let mut attr = self.attr(rest.len());
            attr.keys = address(rest);
            match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
                Ok(()) => break,
                // The kernel stops at the first key it cannot delete and says how many it did.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let missing = start + attr.count as usize;
                    deleted[missing] = false;
                    start = missing + 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// Chunks of a hash map's entries, as [`BatchMap::reader`] reads them.
pub struct Reader<K, V> {
    fd: OwnedFd,
    /// The kernel's position (a bucket index); `None` before the first read.
    cursor: Option<u32>,
    done: bool,
    chunk: usize,
    _types: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> Iterator for Reader<K, V> {
    type Item = io::Result<Vec<(K, V)>>;

    #[expect(unsafe_code, reason = "the kernel fills the buffers: their length is what it says it wrote")]
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let mut keys: Vec<K> = Vec::with_capacity(self.chunk);
            let mut values: Vec<V> = Vec::with_capacity(self.chunk);
            let mut out = 0_u32;
            let mut attr = BatchAttr {
                in_batch: self.cursor.as_ref().map_or(0, |c| std::ptr::from_ref(c) as u64),
                out_batch: std::ptr::from_mut(&mut out) as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: u32::try_from(self.chunk).unwrap_or(u32::MAX),
                map_fd: self.fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
                Ok(()) => self.cursor = Some(out),
                // The end of the map (with the last entries, if any, in this answer).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.done = true,
                // One bucket holds more than a chunk: ask again with more room.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 => {
                    self.chunk *= 2;
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let filled = (attr.count as usize).min(self.chunk);
            // SAFETY: the kernel wrote `filled` keys and values into the buffers (sized for
            // `chunk`), and K and V are plain data whose sizes match the map's.
            unsafe {
                keys.set_len(filled);
                values.set_len(filled);
            }
            if filled > 0 {
                return Some(Ok(keys.into_iter().zip(values).collect()));
            }
        }
        None
    }
}
