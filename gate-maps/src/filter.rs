//! The counting filter in front of the lease maps, as user space keeps it (docs/architecture.md,
//! "Fast paths"): a counter per slot, a bit per counter that the programs read. A lease counts
//! in the slots [`filter_block`] names; a counter goes up before its lease is written and down
//! after it is gone, so it may over-count, never under-count. Every write holds the pin
//! directory's lock ([`crate::GateState`] takes it).
//!
//! Two layouts, told apart by the pinned maps' names: this build's (`LEASE_FILTER_V2`, three
//! slots a source) and an older build's (`LEASE_FILTER`, one slot a source), which is kept as it
//! is read while its program is still attached (an upgraded `gatectl` before the daemon's
//! restart). The maps were renamed so that an older build, which would count one slot where
//! three are read, cannot open this build's filter.
use std::collections::BTreeMap;

use aya::maps::{Array, MapData};
use gate_common::{
    FILTER_COUNTER_MAX, MAP_LEASE_BITS, MAP_LEASE_BITS_V1, MAP_LEASE_FILTER, MAP_LEASE_FILTER_V1, filter_block,
    filter_block_v1, filter_count, filter_counter, filter_slot_mask, nonzero_counters, with_filter_count,
};

use crate::{
    error::StateError,
    pins::PinDir,
    state::{map_err, optional, typed},
};

/// How a source counts in the pinned filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterLayout {
    /// This build's: [`gate_common::FILTER_HASHES`] slots in one block.
    Block,
    /// An older build's: one slot.
    OneSlot,
}

impl FilterLayout {
    /// The names its maps are pinned under: (counters, bits).
    const fn maps(self) -> (&'static str, &'static str) {
        match self {
            Self::Block => (MAP_LEASE_FILTER, MAP_LEASE_BITS),
            Self::OneSlot => (MAP_LEASE_FILTER_V1, MAP_LEASE_BITS_V1),
        }
    }
}

/// The pinned filter, open.
pub(crate) struct LeaseFilter {
    layout: FilterLayout,
    counters: Array<MapData, u64>,
    /// `None` only for an older build's filter from before the programs read bits.
    bits: Option<Array<MapData, u64>>,
    mask: u32,
}

impl LeaseFilter {
    /// This build's filter if it is pinned, else an older build's.
    pub(crate) fn open(pins: &PinDir) -> Result<Self, StateError> {
        let (layout, (counters, words)) = match typed(pins, MAP_LEASE_FILTER) {
            Ok(found) => (FilterLayout::Block, found),
            Err(StateError::NotFound { .. }) => (FilterLayout::OneSlot, typed(pins, MAP_LEASE_FILTER_V1)?),
            Err(other) => return Err(other),
        };
        let (_, bits_name) = layout.maps();
        let bits = match layout {
            // Made by the loader with the counters.
            FilterLayout::Block => Some(typed(pins, bits_name)?.0),
            FilterLayout::OneSlot => optional(typed(pins, bits_name))?,
        };
        Ok(Self { layout, counters, bits, mask: filter_slot_mask(words) })
    }

    pub(crate) const fn layout(&self) -> FilterLayout {
        self.layout
    }

    /// The counters a source of [`gate_common::lease_hash`] `hash` counts in: (word, byte shift).
    pub(crate) fn counters_of(&self, hash: u64) -> impl Iterator<Item = (u32, u32)> + use<> {
        let (block, mut bits) = match self.layout {
            FilterLayout::Block => filter_block(hash, self.mask),
            FilterLayout::OneSlot => filter_block_v1(hash, self.mask),
        };
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                filter_counter(block, bit)
            })
        })
    }

    /// Moves the counters of the sources of `hashes` up or down by one, reading and writing each
    /// word once; a counter at its maximum stays there (it no longer knows how many leases it
    /// stands for), and one at zero stays there.
    pub(crate) fn count(&mut self, hashes: &[u64], up: bool) -> Result<(), StateError> {
        let mut slots: Vec<(u32, u32)> = hashes.iter().flat_map(|&hash| self.counters_of(hash)).collect();
        slots.sort_unstable();
        // Counter words whose bits change, in ascending order: written together below.
        let mut flipped = Vec::new();
        for same_word in slots.chunk_by(|a, b| a.0 == b.0) {
            let word = same_word[0].0;
            let current = self.counters.get(&word, 0).map_err(map_err(self.layout.maps().0, "lookup"))?;
            let mut next = current;
            for &(_, shift) in same_word {
                let count = match (up, filter_count(next, shift)) {
                    (_, FILTER_COUNTER_MAX) | (false, 0) => continue,
                    (true, c) => c + 1,
                    (false, c) => c - 1,
                };
                next = with_filter_count(next, shift, count);
            }
            if next != current {
                self.counters.set(word, next, 0).map_err(map_err(self.layout.maps().0, "update"))?;
            }
            if nonzero_counters(next) != nonzero_counters(current) {
                flipped.push((word, next));
            }
        }
        // Up before the leases are written, down after they are gone: as the counters. One read
        // and one write per bits word, however many of its eight counter words changed.
        self.set_bits(&flipped)
    }

    /// Writes the exact count of every counter the sources of `hashes` (one per lease) count in,
    /// and its bit. Counters no lease counts in are left as they are (too high at worst), so a
    /// program reading the filter meanwhile never sees a lease's counter fall.
    pub(crate) fn recount(&mut self, hashes: &[u64]) -> Result<(), StateError> {
        let mut words: BTreeMap<u32, u64> = BTreeMap::new();
        for &hash in hashes {
            for (word, shift) in self.counters_of(hash) {
                let value = words.entry(word).or_default();
                let count = filter_count(*value, shift);
                if count < FILTER_COUNTER_MAX {
                    *value = with_filter_count(*value, shift, count + 1);
                }
            }
        }
        for (&word, &value) in &words {
            self.counters.set(word, value, 0).map_err(map_err(self.layout.maps().0, "update"))?;
        }
        let words: Vec<(u32, u64)> = words.into_iter().collect();
        self.set_bits(&words)
    }

    /// Writes the bits bytes of the counter words `words` (word index, value), in ascending order
    /// of index.
    fn set_bits(&mut self, words: &[(u32, u64)]) -> Result<(), StateError> {
        let Some(bits) = self.bits.as_mut() else { return Ok(()) };
        for same_bits_word in words.chunk_by(|a, b| a.0 / 8 == b.0 / 8) {
            let index = same_bits_word[0].0 / 8;
            let current = bits.get(&index, 0).map_err(map_err(self.layout.maps().1, "lookup"))?;
            let mut next = current.to_le_bytes();
            for &(word, value) in same_bits_word {
                next[(word % 8) as usize] = nonzero_counters(value);
            }
            let next = u64::from_le_bytes(next);
            if next != current {
                bits.set(index, next, 0).map_err(map_err(self.layout.maps().1, "update"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gate_common::{FAMILY_V4, filter_block, filter_block_v1, lease_hash, v4_words};

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
