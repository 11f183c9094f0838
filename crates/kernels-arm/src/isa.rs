//! The aarch64 half of the ISA table: one [`IsaDesc`] entry per aarch64 ISA in [`TABLE`]
//! (its target-feature list, its runtime detection with the reason, its `qlinear bench`
//! peak probe). Names, ranks and the `Isa` variants come from
//! [`qlinear_reference::for_each_isa!`]; see [`qlinear_reference::isa`].
//!
//! A kernel file's `entry_points!(Isa, ["feature", ...], body)` call writes the list as
//! `#[target_feature]` literals and asserts at compile time that it equals its ISA's
//! entry here; its `is_supported` is the entry's detection. Detection goes through
//! `is_aarch64_feature_detected!`, which reads the kernel's HWCAPs on Linux: a feature
//! appears only when both the CPU has it and the OS enabled it. An SVE / SME entry would
//! add its own `detect` (for SME: also the streaming-mode state) and nothing else.

use qlinear_reference::contract::Isa;
use qlinear_reference::isa::{IsaDesc, PeakProbe};

use crate::peak;

/// The aarch64 ISA table: one entry per aarch64 ISA, best first.
pub(crate) const TABLE: &[IsaDesc] = &[
    IsaDesc {
        isa: Isa::I8mm,
        features: "neon,i8mm",
        detect: || detect_features("neon,i8mm"),
        peak: Some(PeakProbe {
            instruction: "usmmla .4s",
            macs_per_instr: 32,
            run: peak::usmmla,
        }),
    },
    IsaDesc {
        isa: Isa::NeonDot,
        features: "neon,dotprod",
        detect: || detect_features("neon,dotprod"),
        peak: Some(PeakProbe {
            instruction: "sdot .4s",
            macs_per_instr: 16,
            run: peak::sdot,
        }),
    },
    IsaDesc {
        isa: Isa::Neon,
        features: "neon",
        detect: || detect_features("neon"),
        peak: Some(PeakProbe {
            instruction: "smlal/smlal2 .8h",
            macs_per_instr: 8,
            run: peak::smlal,
        }),
    },
];

/// The table entry of `isa`, usable in constants.
///
/// # Panics
/// When `isa` has no aarch64 entry (at compile time when evaluated in a constant).
pub(crate) const fn entry(isa: Isa) -> &'static IsaDesc {
    match IsaDesc::find(TABLE, isa) {
        Some(e) => e,
        None => panic!("no aarch64 ISA table entry for this Isa"),
    }
}

/// `Ok` when this CPU (and OS) has every feature of the comma-separated `features`, else
/// the missing ones.
///
/// # Panics
/// On a feature name [`detected`] does not know (a bug the unit tests catch).
pub(crate) fn detect_features(features: &str) -> Result<(), String> {
    let missing: Vec<&str> = features.split(',').filter(|f| !detected(f)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "CPU lacks {} (or the OS does not report it in HWCAP)",
            missing.join(", ")
        ))
    }
}

/// Runtime detection of one feature of the lists above (std caches it).
pub(crate) fn detected(feature: &str) -> bool {
    match feature {
        "neon" => std::arch::is_aarch64_feature_detected!("neon"),
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        "i8mm" => std::arch::is_aarch64_feature_detected!("i8mm"),
        other => panic!("isa::detect: unknown target feature {other:?}; add it to `detected`"),
    }
}

/// Whether `list` (the `entry_points!` literals) is `joined` split at commas.
pub(crate) const fn same_list(list: &[&str], joined: &str) -> bool {
    let j = joined.as_bytes();
    let mut pos = 0;
    let mut i = 0;
    while i < list.len() {
        let f = list[i].as_bytes();
        if i > 0 {
            if pos >= j.len() || j[pos] != b',' {
                return false;
            }
            pos += 1;
        }
        let mut b = 0;
        while b < f.len() {
            if pos >= j.len() || j[pos] != f[b] {
                return false;
            }
            pos += 1;
            b += 1;
        }
        i += 1;
    }
    pos == j.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aarch64_best_first_and_complete() {
        let arm: Vec<Isa> = Isa::ALL
            .iter()
            .copied()
            .filter(|i| i.arch() == qlinear_reference::isa::Arch::Aarch64)
            .collect();
        let table: Vec<Isa> = TABLE.iter().map(|e| e.isa).collect();
        assert_eq!(table, arm, "one entry per aarch64 Isa, in rank order");
    }

    #[test]
    fn detection_agrees_with_std_and_gives_reasons() {
        use std::arch::is_aarch64_feature_detected as has;
        let expect = |isa: Isa| match isa {
            Isa::I8mm => has!("neon") && has!("i8mm"),
            Isa::NeonDot => has!("neon") && has!("dotprod"),
            Isa::Neon => has!("neon"),
            other => panic!("no independent check for {other}"),
        };
        for e in TABLE {
            for feature in e.features.split(',') {
                detected(feature); // panics on an unmapped name
            }
            match e.available() {
                Ok(()) => assert!(expect(e.isa), "{}", e.isa),
                Err(why) => {
                    assert!(!expect(e.isa), "{}: {why}", e.isa);
                    assert!(why.len() > e.isa.name().len() + 2, "{why}");
                }
            }
        }
    }

    #[test]
    fn same_list_compares_lists() {
        assert!(same_list(&["neon", "dotprod"], "neon,dotprod"));
        assert!(same_list(&["neon"], "neon"));
        assert!(!same_list(&["neon"], "neon,dotprod"));
        assert!(!same_list(&["neon", "dotprod"], "neon"));
        assert!(!same_list(&["neon", "i8mm"], "neon,dotprod"));
        assert!(!same_list(&["neondot"], "neon,dot"));
    }
}
