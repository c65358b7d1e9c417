//! The XDP program against an independent model ([`gate_tests::reference`], on `etherparse`):
//! seeded frames, generated and bent, through the loaded program with `BPF_PROG_TEST_RUN`; every
//! verdict and every counter must agree. `GATE_DIFF_FRAMES` and `GATE_DIFF_SEED` set a longer or
//! another run (`cargo xtask fuzz` runs a long one); a failure prints the seed and the frames.
use gate_common::Reason;
use gate_tests::differential::{Differential, Report};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn check(report: &Report, seed: u64) {
    let shown: Vec<String> = report.mismatches.iter().take(12).map(ToString::to_string).collect();
    assert!(
        report.mismatches.is_empty(),
        "seed {seed}: {} mismatches in {} frames, the first:\n{}",
        report.mismatches.len(),
        report.frames,
        shown.join("\n")
    );
    // A generator that stopped reaching a reason would make the comparison hollow.
    for reason in Reason::ALL {
        let seen: u64 = report.by_reason.iter().filter(|((_, r), _)| *r == reason).map(|(_, n)| n).sum();
        let expected_absent = matches!(reason, Reason::PassedUnparseable | Reason::DroppedUnparseable);
        assert!(seen > 0 || expected_absent, "seed {seed}: no frame of reason {reason:?} in {} frames", report.frames);
    }
    eprintln!("seed {seed}: {} frames agree; by (gate, reason): {:?}", report.frames, report.by_reason);
}

/// The seed (`GATE_DIFF_SEED`, fixed by default so the suite is reproducible) and frame count.
fn run_settings() -> (u64, u64) {
    (setting("GATE_DIFF_SEED", 0x5eed_0001), setting("GATE_DIFF_FRAMES", 300_000))
}

#[test]
fn the_program_agrees_with_the_model_unparseable_dropped() {
    let (seed, frames) = run_settings();
    let report = Differential::new(false).run(seed, frames, 50);
    check(&report, seed);
    assert!(report.by_reason.keys().any(|(_, r)| *r == Reason::DroppedUnparseable));
}

/// The same frames with `[xdp] unparseable = "pass"`: half as many, the difference is one branch.
#[test]
fn the_program_agrees_with_the_model_unparseable_passed() {
    let (seed, frames) = run_settings();
    let report = Differential::new(true).run(seed, frames / 2, 50);
    check(&report, seed);
    assert!(report.by_reason.keys().any(|(_, r)| *r == Reason::PassedUnparseable));
}
