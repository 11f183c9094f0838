//! The ISA table is the single source of truth: `Backend` (names, `FromStr`,
//! `PREFERENCE`), the API's selection, the kernel registry, `cpu_info` and the
//! unavailability reasons all agree with it.

use qlinear::unstable::{compiled_kernels, isa_entry, isa_table};
use qlinear::{available_backends, cpu_info, Backend, Error, Isa};

#[test]
fn every_isa_name_round_trips_through_backend_from_str() {
    for &isa in Isa::ALL {
        let b: Backend = isa.name().parse().expect("an ISA name is a backend name");
        assert_eq!(b, Backend::from_isa(isa));
        assert_eq!(b.isa(), Some(isa));
        assert_eq!(b.name(), isa.name());
        assert_eq!(b.to_string(), isa.to_string());
        let upper: Backend = isa.name().to_ascii_uppercase().parse().unwrap();
        assert_eq!(upper, b);
    }
    for b in [Backend::Auto, Backend::Reference] {
        assert_eq!(b.isa(), None);
        assert_eq!(b.name().parse::<Backend>().unwrap(), b);
    }
}

#[test]
fn ranks_are_distinct_and_are_preference_order() {
    let ranks: Vec<usize> = Isa::ALL.iter().map(|i| i.rank()).collect();
    assert_eq!(ranks, (0..Isa::ALL.len()).collect::<Vec<_>>());
    assert_eq!(Backend::PREFERENCE.len(), Isa::ALL.len() + 1);
    assert_eq!(Backend::PREFERENCE.last(), Some(&Backend::Reference));
    for (rank, b) in Backend::PREFERENCE[..Isa::ALL.len()].iter().enumerate() {
        assert_eq!(b.isa().map(|i| i.rank()), Some(rank), "{b}");
    }
    // The order Auto uses: AMX (when available) first, then the order it has always used.
    let names: Vec<&str> = Backend::PREFERENCE.iter().map(|b| b.name()).collect();
    assert_eq!(
        names,
        [
            "amx",
            "avx512vnni",
            "avxvnni",
            "avx2",
            "i8mm",
            "neondot",
            "neon",
            "reference"
        ]
    );
}

#[test]
fn table_entries_are_this_architectures_isas_best_first() {
    let here: Vec<Isa> = isa_table().map(|e| e.isa).collect();
    let expect: Vec<Isa> = Isa::ALL
        .iter()
        .copied()
        .filter(|i| Some(i.arch()) == qlinear_reference::isa::Arch::current())
        .collect();
    assert_eq!(here, expect);
    for e in isa_table() {
        assert!(!e.features.is_empty() && !e.features.contains(' '));
        assert!(e.peak.is_some(), "{}: no peak probe", e.isa);
    }
}

#[test]
fn every_kernel_has_a_table_entry_whose_detection_agrees() {
    let mut n = 0;
    for k in compiled_kernels() {
        let entry = isa_entry(k.isa).unwrap_or_else(|| panic!("{}: no table entry", k.name));
        assert_eq!((entry.detect)().is_ok(), (k.is_supported)(), "{}", k.name);
        assert!(k.name.starts_with(&format!("{}/", k.isa)), "{}", k.name);
        n += 1;
    }
    assert_eq!(n > 0, isa_table().next().is_some());
    // Every entry has a kernel.
    for e in isa_table() {
        assert!(compiled_kernels().any(|k| k.isa == e.isa), "{}", e.isa);
    }
}

#[test]
fn availability_agrees_with_selection_and_gives_reasons() {
    let here = available_backends();
    for b in Backend::PREFERENCE {
        match b.availability() {
            Ok(()) => assert!(here.contains(&b), "{b}"),
            Err(why) => {
                assert!(!here.contains(&b), "{b}");
                let prefix = format!("{b}: ");
                assert!(
                    why.starts_with(&prefix) && why.len() > prefix.len() + 3,
                    "{b}: reason {why:?}"
                );
                assert!(matches!(
                    qlinear::unstable::resolve(b),
                    Err(Error::BackendUnavailable(s)) if s == b.name()
                ));
            }
        }
    }
    assert_eq!(Backend::Auto.availability(), Ok(()));
}

#[test]
fn error_texts_list_the_table() {
    let e = "sse9".parse::<Backend>().unwrap_err().to_string();
    for &isa in Isa::ALL {
        assert!(e.contains(isa.name()), "{e}");
    }
    assert!(e.contains("reference") && e.contains("auto"), "{e}");
}

#[test]
fn cpu_info_features_come_from_the_table() {
    let info = cpu_info();
    let mut want: Vec<&str> = Vec::new();
    for e in isa_table() {
        for f in e.features.split(',') {
            if !want.contains(&f) {
                want.push(f);
            }
        }
    }
    let got: Vec<&str> = info.features.iter().map(|&(f, _)| f).collect();
    assert_eq!(got, want);
    // An ISA available here has each of its features detected.
    for e in isa_table().filter(|e| e.available().is_ok()) {
        for f in e.features.split(',') {
            assert!(info.features.contains(&(f, true)), "{}: {f}", e.isa);
        }
    }
}
