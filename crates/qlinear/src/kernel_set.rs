//! The set of kernels a layer can call: chosen once when the weight is packed, picked
//! per call by M.
//!
//! Kernels that share a packed layout read the same packed bytes, so a layer packed
//! once can run a GEMV kernel for one-row calls and a GEMM kernel (or, later, a tile
//! kernel such as AMX) for large M without repacking. Each kernel states the row counts
//! it is best at in its `m_pref` ([`qlinear_reference::contract::MPreference`]); the
//! contract's module docs give the rule, restated here with where each step happens.
//!
//! ## Built once (with the packing)
//!
//! The **primary** kernel is the one the backend choice resolves to
//! ([`crate::backend::resolve`]): the packing is made for its layout, its name is the one
//! written to serialized packings, and `kernel_name()` of a layer returns it. The set
//! holds the kernels that
//!
//! 1. are compiled in and supported by this CPU,
//! 2. use the primary's [`PackedLayout`](qlinear_reference::contract::PackedLayout),
//! 3. are allowed by the backend choice ([`Scope`]): under [`Backend::Auto`] (with
//!    `QLINEAR_BACKEND` unset, blank or `auto`) every kernel of any backend with that
//!    layout; under a named backend (also through `QLINEAR_BACKEND`) only that backend's
//!    kernels, for every M; under a single forced kernel (`qlinear bench --kernel`,
//!    tests; [`crate::unstable::pack_for_kernel`]) that kernel alone,
//!
//! ordered by `m_pref.rank`, then registry order (best first).
//!
//! ## Picked per call
//!
//! A call of `m` rows runs the first kernel of that order whose `m_pref` range contains
//! `m`, or the primary when none does. The pick uses the call's total `m`, once, before
//! the driver splits the work over threads: every piece of the call runs the same
//! kernel, and the driver cuts row pieces on that kernel's `mr`. Picking per piece would
//! give the same bits (every kernel is exact on every row range), only a different speed;
//! per call keeps `kernel_name_for(m)` a statement about the whole call.

use std::sync::OnceLock;

use qlinear_reference::contract::KernelDesc;

use crate::backend::{compiled_kernels, Backend, Engine, BACKEND_ENV};

/// Which kernels besides the primary a layer may call (module docs, step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// [`Backend::Auto`] without an override: every supported kernel of the layout.
    Layout,
    /// A named backend: its supported kernels of the layout.
    Backend,
    /// One forced kernel: the primary alone.
    Only,
}

/// The scope a backend choice gives ([`Backend::Auto`] is [`Scope::Layout`] unless
/// `QLINEAR_BACKEND` names a backend).
pub(crate) fn scope_for(backend: Backend) -> Scope {
    if backend == Backend::Auto && !env_overrides_auto() {
        Scope::Layout
    } else {
        Scope::Backend
    }
}

/// Whether `QLINEAR_BACKEND` overrides [`Backend::Auto`], read as
/// [`crate::backend::resolve`] reads it: unset, blank or `auto` is no override; any other
/// value, valid or not, is one (an invalid one is reported by `resolve`).
pub(crate) fn env_overrides_auto() -> bool {
    std::env::var_os(BACKEND_ENV).is_some_and(|v| {
        v.to_str().is_none_or(|s| {
            !s.trim().is_empty() && !matches!(s.parse::<Backend>(), Ok(Backend::Auto))
        })
    })
}

/// Compiled kernels this CPU supports, in registry order (detected once).
fn supported() -> &'static [&'static KernelDesc] {
    static SUPPORTED: OnceLock<Vec<&'static KernelDesc>> = OnceLock::new();
    SUPPORTED.get_or_init(|| compiled_kernels().filter(|k| (k.is_supported)()).collect())
}

/// The kernels one layer may call, in pick order, and its primary kernel.
#[derive(Debug, Clone)]
pub(crate) struct KernelSet {
    primary: Engine,
    /// Pick order: `m_pref.rank`, then registry order. Empty for the reference.
    kernels: Vec<&'static KernelDesc>,
}

impl KernelSet {
    /// The set for `primary` under `scope` (module docs).
    pub(crate) fn new(primary: Engine, scope: Scope) -> Self {
        let Engine::Kernel(p) = primary else {
            return KernelSet {
                primary,
                kernels: Vec::new(),
            };
        };
        let mut kernels: Vec<&'static KernelDesc> = match scope {
            Scope::Only => vec![p],
            Scope::Layout | Scope::Backend => supported()
                .iter()
                .copied()
                .filter(|k| k.layout == p.layout)
                .filter(|k| scope == Scope::Layout || k.isa == p.isa)
                .collect(),
        };
        if !kernels.iter().any(|k| k.name == p.name) {
            // A primary outside the registry (the packer tests' portable descriptors).
            kernels.insert(0, p);
        }
        // Stable: equal ranks keep registry order.
        kernels.sort_by_key(|k| k.m_pref.rank);
        KernelSet { primary, kernels }
    }

    /// The primary kernel (the packing's).
    pub(crate) fn primary(&self) -> Engine {
        self.primary
    }

    /// The engine that runs a call of `m` rows.
    #[inline]
    pub(crate) fn pick(&self, m: usize) -> Engine {
        self.kernels
            .iter()
            .find(|k| k.m_pref.contains(m))
            .map_or(self.primary, |&k| Engine::Kernel(k))
    }

    /// The set's kernels in pick order (empty for the reference).
    pub(crate) fn kernels(&self) -> &[&'static KernelDesc] {
        &self.kernels
    }
}
