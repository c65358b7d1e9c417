//! The counting filter in front of the lease maps, as user space keeps it (docs/architecture.md,
//! "Fast paths"): a counter per slot, and bits that the programs read. A lease counts in the
//! slots [`filter_block`] names; a counter goes up before its lease is written and down after it
//! is gone, so it may over-count, never under-count. Every write holds the pin directory's lock
//! ([`crate::GateState`] takes it).
//!
//! The counters are sized by the lease capacity, the bits by the leases held: a counter's bit is
//! in the block its block folds into ([`fold_block`]) at the size [`BitsSize`] says, set while
//! any counter folded there is not zero. A source's bits are then where [`filter_block`] puts
//! them under the bits' own slot mask, and a flood from random sources reads a few KiB of bits,
//! not the 2 MiB a capacity of a million would take. When the leases outgrow the bits or fall far
//! below them, the bits are made again from the counters at another size ([`SizedFilter::refit`]),
//! in an order in which the programs never miss a lease's bit. Both arrays are mapped into this
//! process (`mapped.rs`), so that costs milliseconds, not system calls by the million.
//!
//! Three layouts, told apart by the pinned maps' names: this build's (`LEASE_FILTER_V3`,
//! `LEASE_BITS_V3`), and two older builds' whose programs may still be attached (an upgraded
//! `gatectl` before the daemon's restart), written through system calls as those builds did:
//! bits one per counter (`LEASE_FILTER_V2`, `LEASE_BITS_V2`), and one slot a source
//! (`LEASE_FILTER`, `LEASE_BITS`). Each was renamed so that an older build, which would set bits
//! where none are read, cannot open a newer filter.
use std::time::Duration;

use aya::maps::{Array, MapData};
use gate_common::{
    BitsSize, FILTER_COUNTER_MAX, FILTER_SLOTS_PER_WORD, MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE, MAP_LEASE_BITS_V1,
    MAP_LEASE_BITS_V2, MAP_LEASE_FILTER, MAP_LEASE_FILTER_V1, MAP_LEASE_FILTER_V2, bits_resize, bits_slots_for,
    filter_block, filter_block_v1, filter_count, filter_counter, filter_slot_mask, fold_block, nonzero_counters,
    with_filter_count,
};

use crate::{
    error::StateError,
    mapped::MappedWords,
    pins::PinDir,
    state::{map_err, open_map, optional, typed},
};

/// How a source counts in the pinned filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterLayout {
    /// This build's: [`gate_common::FILTER_HASHES`] slots in one block, the bits sized to the
    /// leases held.
    Sized,
    /// An older build's: the same slots, one bit a counter.
    Block,
    /// An older build's: one slot.
    OneSlot,
}

impl FilterLayout {
    /// The names its maps are pinned under: (counters, bits).
    const fn maps(self) -> (&'static str, &'static str) {
        match self {
            Self::Sized => (MAP_LEASE_FILTER, MAP_LEASE_BITS),
            Self::Block => (MAP_LEASE_FILTER_V2, MAP_LEASE_BITS_V2),
            Self::OneSlot => (MAP_LEASE_FILTER_V1, MAP_LEASE_BITS_V1),
        }
    }
}

/// How long a resize waits between telling the programs the new size and clearing bits only the
/// old size read: a program that read the old size just before finishes its run (microseconds)
/// long before, so it never finds a lease's bit cleared under it.
const RESIZE_GRACE: Duration = Duration::from_millis(2);

/// The counters a source counts in, as (word, byte shift), from the block and slot bits
/// [`filter_block`] (or [`filter_block_v1`]) gives it.
fn counters_in(block: u32, mut bits: u64) -> impl Iterator<Item = (u32, u32)> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            filter_counter(block, bit)
        })
    })
}

/// `count` moved one lease up or down, as a counter does: one at its maximum stays there (it no
/// longer knows how many leases it stands for), one at zero stays there.
const fn moved(count: u8, up: bool) -> u8 {
    match (up, count) {
        (_, FILTER_COUNTER_MAX) | (false, 0) => count,
        (true, c) => c + 1,
        (false, c) => c - 1,
    }
}

/// The pinned filter, open.
pub(crate) enum LeaseFilter {
    Sized(SizedFilter),
    Older(OlderFilter),
}

impl LeaseFilter {
    /// This build's filter if it is pinned, else an older build's.
    pub(crate) fn open(pins: &PinDir) -> Result<Self, StateError> {
        match SizedFilter::open(pins)? {
            Some(filter) => Ok(Self::Sized(filter)),
            None => OlderFilter::open(pins).map(Self::Older),
        }
    }

    pub(crate) const fn layout(&self) -> FilterLayout {
        match self {
            Self::Sized(_) => FilterLayout::Sized,
            Self::Older(older) => older.layout,
        }
    }

    /// The counters a source of [`gate_common::lease_hash`] `hash` counts in: (word, byte shift).
    pub(crate) fn counters_of(&self, hash: u64) -> impl Iterator<Item = (u32, u32)> + use<> {
        let (block, bits) = match self {
            Self::Sized(sized) => filter_block(hash, sized.mask),
            Self::Older(older) => older.block_of(hash),
        };
        counters_in(block, bits)
    }

    /// Moves the counters of the sources of `hashes` (one per lease) up or down by one, and
    /// their bits; in this build's layout, then the bits' size if the leases now want another.
    pub(crate) fn count(&mut self, hashes: &[u64], up: bool) -> Result<(), StateError> {
        match self {
            Self::Sized(sized) => sized.count(hashes, up),
            Self::Older(older) => older.count(hashes, up),
        }
    }

    /// An empty tally of this filter's counters, for [`Self::recount`].
    pub(crate) fn tally(&self) -> Tally {
        let mask = match self {
            Self::Sized(sized) => sized.mask,
            Self::Older(older) => older.mask,
        };
        Tally { words: vec![0; (mask as usize + 1) / FILTER_SLOTS_PER_WORD as usize], leases: 0 }
    }

    /// Writes the exact count of every counter `tally` counted, and the bits; in this build's
    /// layout, at the size its leases want. Counters no lease counts in are left as they are (too
    /// high at worst), so a program reading the filter meanwhile never sees a lease's counter
    /// fall.
    pub(crate) fn recount(&mut self, tally: &Tally) -> Result<(), StateError> {
        match self {
            Self::Sized(sized) => sized.recount(tally),
            Self::Older(older) => older.recount(&tally.counted().collect::<Vec<_>>()),
        }
    }

    /// The size this build's bits are read at; `None` in an older build's layout.
    pub(crate) fn bits_size(&self) -> Result<Option<BitsSize>, StateError> {
        match self {
            Self::Sized(sized) => sized.read_size().map(Some),
            Self::Older(_) => Ok(None),
        }
    }
}

/// Every counter's exact count, tallied from the leases in this process's memory in the
/// counters' own layout (16 MiB at a capacity of 1,000,000, pages touched only where a lease
/// counts): no map of counters, no list of hashes.
pub(crate) struct Tally {
    words: Vec<u64>,
    leases: usize,
}

impl Tally {
    /// Counts a lease whose source counts in `counters` ([`LeaseFilter::counters_of`]).
    pub(crate) fn add(&mut self, counters: impl Iterator<Item = (u32, u32)>) {
        self.leases += 1;
        for (word, shift) in counters {
            if let Some(value) = self.words.get_mut(word as usize) {
                *value = with_filter_count(*value, shift, moved(filter_count(*value, shift), true));
            }
        }
    }

    /// The leases counted.
    pub(crate) const fn leases(&self) -> usize {
        self.leases
    }

    /// The counter words some lease counts in, ascending: (index, value).
    fn counted(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0_u32..).zip(self.words.iter().copied()).filter(|&(_, value)| value != 0)
    }
}

/// This build's filter: the counters and the bits mapped into this process, the bits sized.
pub(crate) struct SizedFilter {
    size: Array<MapData, BitsSize>,
    /// The two arrays, mapped at their first write: a `gatectl` that only reads leases or
    /// counters never maps them (18 MiB of page tables at a capacity of a million).
    arrays: Arrays,
    /// Words of the bits.
    bits_words: u32,
    /// The counters' slot mask.
    mask: u32,
}

/// The filter's two arrays, opened and mapped once needed.
enum Arrays {
    Opened(Box<Opened>),
    Mapped(Mapped),
}

struct Opened {
    counters: MapData,
    counter_words: u32,
    bits: MapData,
    pins: PinDir,
}

struct Mapped {
    counters: MappedWords,
    bits: MappedWords,
}

impl SizedFilter {
    /// `None` if this build's bits are not pinned (an older build's filter is).
    fn open(pins: &PinDir) -> Result<Option<Self>, StateError> {
        // The bits first: their absence is what tells an older build's filter.
        let (bits, bits_words) = match open_map(pins, MAP_LEASE_BITS) {
            Ok(found) => found,
            Err(StateError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other),
        };
        let (counters, counter_words) = open_map(pins, MAP_LEASE_FILTER)?;
        let (size, _) = typed(pins, MAP_LEASE_BITS_SIZE)?;
        let arrays = Arrays::Opened(Box::new(Opened { counters, counter_words, bits, pins: pins.clone() }));
        Ok(Some(Self { size, arrays, bits_words, mask: filter_slot_mask(counter_words) }))
    }

    /// The mapped arrays, and the size's map beside them.
    fn parts(&mut self) -> Result<(&Mapped, &mut Array<MapData, BitsSize>), StateError> {
        if let Arrays::Opened(opened) = &self.arrays {
            let Opened { counters, counter_words, bits, pins } = opened.as_ref();
            let map = |data: &MapData, words: u32, name: &'static str| {
                MappedWords::new(data, words).map_err(|e| StateError::Incompatible {
                    path: pins.map(name),
                    map: name,
                    reason: format!("cannot be mapped: {e}"),
                })
            };
            let counters = map(counters, *counter_words, MAP_LEASE_FILTER)?;
            let bits = map(bits, self.bits_words, MAP_LEASE_BITS)?;
            self.arrays = Arrays::Mapped(Mapped { counters, bits });
        }
        let Arrays::Mapped(mapped) = &self.arrays else { unreachable!("mapped above") };
        Ok((mapped, &mut self.size))
    }

    fn read_size(&self) -> Result<BitsSize, StateError> {
        self.size.get(&0, 0).map_err(map_err(MAP_LEASE_BITS_SIZE, "lookup"))
    }

    /// The most slots the bits can be read at: one bit a counter, as the loader makes them;
    /// fewer if the pinned bits are smaller.
    fn largest(&self) -> u64 {
        (u64::from(self.mask) + 1).min(u64::from(self.bits_words) * 64)
    }

    fn count(&mut self, hashes: &[u64], up: bool) -> Result<(), StateError> {
        let mut size = self.read_size()?;
        let leases = hashes.len() as u64;
        size.leases = if up { size.leases.saturating_add(leases) } else { size.leases.saturating_sub(leases) };
        let (mask, largest) = (self.mask, self.largest());
        let (mapped, size_map) = self.parts()?;
        for &hash in hashes {
            let (block, bits) = filter_block(hash, mask);
            for (word, shift) in counters_in(block, bits) {
                let before = mapped.counters.get(word as usize);
                let after = with_filter_count(before, shift, moved(filter_count(before, shift), up));
                mapped.counters.set(word as usize, after);
                if (filter_count(before, shift) == 0) != (filter_count(after, shift) == 0) && size.slot_mask != 0 {
                    mapped.set_bit(word, shift, size.slot_mask, up);
                }
            }
        }
        let slots = u64::from(size.slot_mask) + 1;
        let resized = if size.slot_mask == 0 {
            // Never sized (a filter made and not yet rebuilt): make the bits from the counters.
            Some(bits_slots_for(size.leases, largest))
        } else {
            bits_resize(size.leases, slots, largest)
        };
        match resized {
            Some(slots) => self.refit(size, slots),
            None => write_size(size_map, size),
        }
    }

    /// Makes the bits again from the counters, read at `slots` slots, and says so in the size
    /// (`size` as it stands, its lease count kept). The programs never miss a set bit: growing,
    /// the new upper blocks are written before the size, and the lower ones (which still hold
    /// everything that folds into the upper ones) cleared of those a while after it; shrinking,
    /// the lower blocks take what folds into them before the size, and the blocks no longer
    /// read are cleared a while after it.
    fn refit(&mut self, mut size: BitsSize, slots: u64) -> Result<(), StateError> {
        let slot_mask = u32::try_from(slots - 1).expect("bits no larger than the counters");
        let blocks = usize::try_from(slots / 64).expect("blocks fit in memory");
        let (mapped, size_map) = self.parts()?;
        let (counters, bits) = (&mapped.counters, &mapped.bits);
        let mut wanted = vec![0_u64; blocks];
        for word in 0..counters.len() {
            let value = counters.get(word);
            // Most words are empty when the bits shrink: skip them without looking closer.
            if value != 0 {
                let block = fold_block((word / FILTER_SLOTS_PER_WORD as usize) as u32, slot_mask) as usize;
                wanted[block] |= u64::from(nonzero_counters(value)) << ((word % FILTER_SLOTS_PER_WORD as usize) * 8);
            }
        }
        // Blocks the programs read now; all of them if the bits were never sized.
        let read_now = if size.slot_mask == 0 { bits.len() } else { (size.slot_mask as usize + 1) / 64 };
        let write = |range: std::ops::Range<usize>| {
            for block in range {
                bits.update(block, wanted.get(block).copied().unwrap_or(0));
            }
        };
        let resized = size.slot_mask != slot_mask;
        size.slot_mask = slot_mask;
        if blocks > read_now {
            write(read_now..blocks);
            write_size(size_map, size)?;
            std::thread::sleep(RESIZE_GRACE);
            write(0..read_now);
        } else {
            write(0..blocks);
            write_size(size_map, size)?;
            if resized {
                std::thread::sleep(RESIZE_GRACE);
            }
            write(blocks..read_now.min(bits.len()));
        }
        MappedWords::publish();
        Ok(())
    }

    fn recount(&mut self, tally: &Tally) -> Result<(), StateError> {
        let (mapped, _) = self.parts()?;
        for (word, value) in tally.counted() {
            mapped.counters.update(word as usize, value);
        }
        let mut size = self.read_size()?;
        size.leases = tally.leases() as u64;
        let slots = bits_slots_for(size.leases, self.largest());
        self.refit(size, slots)
    }
}

impl Mapped {
    /// Sets or clears the bit of the counter at (`word`, `shift`) in the bits read at
    /// `slot_mask`: cleared only when no other counter folded into it is above zero.
    fn set_bit(&self, word: u32, shift: u32, slot_mask: u32, set: bool) {
        let block = word / FILTER_SLOTS_PER_WORD;
        let folded = fold_block(block, slot_mask) as usize;
        let bit = 1_u64 << ((word % FILTER_SLOTS_PER_WORD) * 8 + shift / 8);
        let current = self.bits.get(folded);
        if set {
            self.bits.update(folded, current | bit);
            return;
        }
        // The counters folded into the same bit: the same word and shift in every block that
        // folds there (one block for every `slot_mask + 1` slots of the counters).
        let stride = (slot_mask as usize + 1) / 64 * FILTER_SLOTS_PER_WORD as usize;
        let first = folded * FILTER_SLOTS_PER_WORD as usize + (word % FILTER_SLOTS_PER_WORD) as usize;
        let taken =
            (first..self.counters.len()).step_by(stride).any(|w| filter_count(self.counters.get(w), shift) != 0);
        if !taken {
            self.bits.update(folded, current & !bit);
        }
    }
}

/// Publishes the writes to the mapped arrays, then the size the programs read the bits at.
fn write_size(map: &mut Array<MapData, BitsSize>, size: BitsSize) -> Result<(), StateError> {
    MappedWords::publish();
    map.set(0, size, 0).map_err(map_err(MAP_LEASE_BITS_SIZE, "update"))
}

/// An older build's filter, written as that build wrote it: a system call a word.
pub(crate) struct OlderFilter {
    layout: FilterLayout,
    counters: Array<MapData, u64>,
    /// `None` only for a filter from before the programs read bits.
    bits: Option<Array<MapData, u64>>,
    mask: u32,
}

impl OlderFilter {
    fn open(pins: &PinDir) -> Result<Self, StateError> {
        let (layout, (counters, words)) = match typed(pins, MAP_LEASE_FILTER_V2) {
            Ok(found) => (FilterLayout::Block, found),
            Err(StateError::NotFound { .. }) => (FilterLayout::OneSlot, typed(pins, MAP_LEASE_FILTER_V1)?),
            Err(other) => return Err(other),
        };
        let (_, bits_name) = layout.maps();
        let bits = match layout {
            // Made by that build's loader with the counters.
            FilterLayout::Block | FilterLayout::Sized => Some(typed(pins, bits_name)?.0),
            FilterLayout::OneSlot => optional(typed(pins, bits_name))?,
        };
        Ok(Self { layout, counters, bits, mask: filter_slot_mask(words) })
    }

    fn block_of(&self, hash: u64) -> (u32, u64) {
        match self.layout {
            FilterLayout::OneSlot => filter_block_v1(hash, self.mask),
            FilterLayout::Block | FilterLayout::Sized => filter_block(hash, self.mask),
        }
    }

    /// [`LeaseFilter::count`], reading and writing each word once.
    fn count(&mut self, hashes: &[u64], up: bool) -> Result<(), StateError> {
        let mut slots: Vec<(u32, u32)> = hashes
            .iter()
            .flat_map(|&hash| {
                let (block, bits) = self.block_of(hash);
                counters_in(block, bits)
            })
            .collect();
        slots.sort_unstable();
        // Counter words whose bits change, in ascending order: written together below.
        let mut flipped = Vec::new();
        let name = self.layout.maps().0;
        for same_word in slots.chunk_by(|a, b| a.0 == b.0) {
            let word = same_word[0].0;
            let current = self.counters.get(&word, 0).map_err(map_err(name, "lookup"))?;
            let mut next = current;
            for &(_, shift) in same_word {
                next = with_filter_count(next, shift, moved(filter_count(next, shift), up));
            }
            if next != current {
                self.counters.set(word, next, 0).map_err(map_err(name, "update"))?;
            }
            if nonzero_counters(next) != nonzero_counters(current) {
                flipped.push((word, next));
            }
        }
        // Up before the leases are written, down after they are gone: as the counters.
        self.set_bits(&flipped)
    }

    fn recount(&mut self, counters: &[(u32, u64)]) -> Result<(), StateError> {
        for &(word, value) in counters {
            self.counters.set(word, value, 0).map_err(map_err(self.layout.maps().0, "update"))?;
        }
        self.set_bits(counters)
    }

    /// Writes the bits bytes of the counter words `words` (word index, value), in ascending order
    /// of index: one bit a counter.
    fn set_bits(&mut self, words: &[(u32, u64)]) -> Result<(), StateError> {
        let Some(bits) = self.bits.as_mut() else { return Ok(()) };
        let name = self.layout.maps().1;
        for same_bits_word in words.chunk_by(|a, b| a.0 / 8 == b.0 / 8) {
            let index = same_bits_word[0].0 / 8;
            let current = bits.get(&index, 0).map_err(map_err(name, "lookup"))?;
            let mut next = current.to_le_bytes();
            for &(word, value) in same_bits_word {
                next[(word % 8) as usize] = nonzero_counters(value);
            }
            let next = u64::from_le_bytes(next);
            if next != current {
                bits.set(index, next, 0).map_err(map_err(name, "update"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gate_common::{
        FAMILY_V4, FILTER_COUNTER_MAX, filter_block, filter_block_v1, filter_count, lease_hash, v4_words,
    };

    use super::{FILTER_SLOTS_PER_WORD, Tally};

    #[test]
    fn a_tally_counts_each_counter_in_any_order_and_stops_at_the_top() {
        let mut tally = Tally { words: vec![0; 2 * FILTER_SLOTS_PER_WORD as usize], leases: 0 };
        // Word 2: 300 leases in byte 3; word 7: three in byte 0, one in byte 5; word 9: one in
        // byte 7; and a counter past the words, which counts nothing.
        for _ in 0..300 {
            tally.add([(2, 24)].into_iter());
        }
        tally.add([(9, 56), (7, 0)].into_iter());
        tally.add([(7, 0), (7, 40)].into_iter());
        tally.add([(7, 0), (99, 0)].into_iter());
        assert_eq!(tally.leases(), 303);
        let counted: Vec<(u32, u64)> = tally.counted().collect();
        assert_eq!(counted.iter().map(|&(word, _)| word).collect::<Vec<_>>(), [2, 7, 9]);
        let count = |word: u32, shift: u32| {
            counted.iter().find(|&&(w, _)| w == word).map(|&(_, value)| filter_count(value, shift))
        };
        assert_eq!(count(2, 24), Some(FILTER_COUNTER_MAX), "a counter stops at its maximum");
        assert_eq!(count(2, 0), Some(0));
        assert_eq!((count(7, 0), count(7, 40), count(7, 8)), (Some(3), Some(1), Some(0)));
        assert_eq!(count(9, 56), Some(1));
    }

    /// Of `strangers` sources, how many find every slot [`filter_block`] (or the one-slot layout's)
    /// names taken once `leases` consecutive IPv4 addresses (a VPN pool) count in 2^`slots_log2`
    /// slots: the share that pays the lease lookup.
    fn taken_share(leases: u32, slots_log2: u32, block_layout: bool) -> f64 {
        let mask = (1_u32 << slots_log2) - 1;
        let place = |addr: u32| {
            let hash = lease_hash(1, FAMILY_V4, &v4_words(addr.to_be_bytes()));
            if block_layout { filter_block(hash, mask) } else { filter_block_v1(hash, mask) }
        };
        let mut words = vec![0_u64; 1 << (slots_log2 - 6)];
        for addr in 0x0A00_0001..0x0A00_0001 + leases {
            let (block, bits) = place(addr);
            words[block as usize] |= bits;
        }
        // Strangers spread over 100.64.0.0/10, as a spoofed flood's.
        let strangers = 1_000_000_u32;
        let taken = (0..strangers)
            .map(|i| 0x6440_0000 | (i.wrapping_mul(2_654_435_761) & 0x3F_FFFF))
            .filter(|&addr| {
                let (block, bits) = place(addr);
                words[block as usize] & bits == bits
            })
            .count();
        taken as f64 / f64::from(strangers)
    }

    #[test]
    fn few_strangers_find_their_slots_taken_at_one_lease_for_sixteen_slots() {
        let block = taken_share(1 << 20, 24, true);
        let one_slot = taken_share(1 << 20, 24, false);
        assert!(block < 0.015, "three slots a block: {:.2}% of strangers pass the filter", block * 100.0);
        assert!(block * 5.0 < one_slot, "three slots a block ({block}) against one slot ({one_slot})");
    }

    #[test]
    fn a_full_filter_of_both_families_still_turns_most_strangers_away() {
        // Both lease maps full: one lease for eight slots.
        let block = taken_share(1 << 21, 24, true);
        assert!(block < 0.06, "{:.2}% of strangers pass the filter", block * 100.0);
    }
}
