//! The trace switch and its events (`gatectl trace`): [`Tracer::start`] turns the switch on for
//! one source, [`Tracer::events`] drains what XDP wrote since, and dropping the tracer turns it
//! off. The switch carries a deadline the tracer pushes forward ([`Tracer::keep_alive`]), so a
//! tracer killed without dropping stops costing the program anything within [`TRACE_LEASE`].
use std::{net::IpAddr, time::Duration};

use aya::maps::{Array, MapData, RingBuf};
use gate_common::{FAMILY_V4, FAMILY_V6, MAP_TRACE, MAP_TRACE_EVENTS, TraceEvent, TraceFilter, v4_words, v6_words};

use crate::{PinDir, StateError, clock, lease_address, state::open_typed};

/// How far ahead each keep-alive sets the switch's deadline.
pub const TRACE_LEASE: Duration = Duration::from_secs(3);

/// Why a trace could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("another trace runs (gatectl, pid {pid}); one at a time")]
    Busy { pid: u32 },
    #[error("the gate at {path} predates tracing: restart gate-daemon with this version to trace")]
    Unsupported { path: std::path::PathBuf },
}

/// A running trace of one source.
pub struct Tracer {
    switch: Array<MapData, TraceFilter>,
    events: RingBuf<MapData>,
    filter: TraceFilter,
}

impl Tracer {
    /// Turns the switch on for `source` (an IPv4-mapped IPv6 address is its IPv4 host, as the
    /// program judges it). Refused while another live tracer holds it; a switch left by a tracer
    /// that died is taken over.
    ///
    /// # Errors
    /// No gate, a gate of an older build, another trace, or the kernel refused.
    pub fn start(pins: &PinDir, source: IpAddr) -> Result<Self, TraceError> {
        let unsupported = |e: StateError| match e {
            StateError::NotFound { .. } if pins.map(crate::common::MAP_GATES).exists() => {
                TraceError::Unsupported { path: pins.root().to_owned() }
            }
            other => TraceError::State(other),
        };
        let switch: Array<MapData, TraceFilter> = open_typed(pins, MAP_TRACE).map_err(unsupported)?;
        let events: RingBuf<MapData> = open_typed(pins, MAP_TRACE_EVENTS).map_err(unsupported)?;
        let current = switch.get(&0, 0).map_err(map_err("lookup"))?;
        let now = clock::now_ns();
        let alive = current.pid != 0
            && current.until_ns > now
            && std::path::Path::new(&format!("/proc/{}", current.pid)).exists();
        if alive {
            return Err(TraceError::Busy { pid: current.pid });
        }
        let (family, words) = match lease_address(source) {
            IpAddr::V4(v4) => (FAMILY_V4, v4_words(v4.octets())),
            IpAddr::V6(v6) => (FAMILY_V6, v6_words(v6.octets())),
        };
        let filter = TraceFilter { pid: std::process::id(), family, words, until_ns: 0 };
        let mut tracer = Self { switch, events, filter };
        // Events of an earlier trace still in the buffer are not this one's.
        while tracer.events.next().is_some() {}
        tracer.keep_alive()?;
        Ok(tracer)
    }

    /// Pushes the switch's deadline [`TRACE_LEASE`] ahead.
    ///
    /// # Errors
    /// The kernel refused the write.
    pub fn keep_alive(&mut self) -> Result<(), TraceError> {
        self.filter.until_ns = clock::now_ns().saturating_add(clock::nanos(TRACE_LEASE));
        self.switch.set(0, self.filter, 0).map_err(map_err("update"))?;
        Ok(())
    }

    /// The events written since the last call, oldest first.
    pub fn events(&mut self) -> Vec<TraceEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.extend(event_of(&item));
        }
        out
    }
}

/// A [`TraceEvent`] from the bytes the program wrote (its `repr(C)` layout, native byte order).
fn event_of(bytes: &[u8]) -> Option<TraceEvent> {
    let bytes: &[u8; size_of::<TraceEvent>()] = bytes.get(..size_of::<TraceEvent>())?.try_into().ok()?;
    let u32_at = |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut at_ns = [0; 8];
    at_ns.copy_from_slice(&bytes[..8]);
    Some(TraceEvent {
        at_ns: u64::from_ne_bytes(at_ns),
        ifindex: u32_at(8),
        gate: u32_at(12),
        reason: u32_at(16),
        protocol: bytes[20],
        _pad: 0,
        port: [bytes[22], bytes[23]],
    })
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.switch.set(0, TraceFilter::default(), 0);
    }
}

fn map_err(operation: &'static str) -> impl Fn(aya::maps::MapError) -> TraceError {
    move |source| TraceError::State(StateError::Map { map: MAP_TRACE, operation, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_at_the_programs_offsets() {
        assert_eq!(size_of::<TraceEvent>(), 24);
        assert_eq!(
            [
                core::mem::offset_of!(TraceEvent, ifindex),
                core::mem::offset_of!(TraceEvent, gate),
                core::mem::offset_of!(TraceEvent, reason),
                core::mem::offset_of!(TraceEvent, protocol),
                core::mem::offset_of!(TraceEvent, port),
            ],
            [8, 12, 16, 20, 22]
        );
        let mut bytes = [0_u8; 24];
        bytes[..8].copy_from_slice(&7_u64.to_ne_bytes());
        bytes[8..12].copy_from_slice(&3_u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&1_u32.to_ne_bytes());
        bytes[16..20].copy_from_slice(&2_u32.to_ne_bytes());
        bytes[20] = 17;
        bytes[22..24].copy_from_slice(&1194_u16.to_be_bytes());
        let event = event_of(&bytes).unwrap();
        assert_eq!((event.at_ns, event.ifindex, event.gate, event.reason, event.protocol), (7, 3, 1, 2, 17));
        assert_eq!(u16::from_be_bytes(event.port), 1194);
        assert_eq!(event_of(&bytes[..23]), None, "a short record is not an event");
    }
}
