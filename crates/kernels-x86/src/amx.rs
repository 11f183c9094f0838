//! # `amx/gemm_32x32c4`: AMX-INT8, 32 x 32 output tile
//!
//! `tdpbusd tmm_c, tmm_a, tmm_b` multiplies a 16 x 64 tile of u8 activations by a
//! 16 x 64 tile of i8 weights (16 k-groups of 16 columns) and adds into 16 x 16 i32
//! accumulators: 16,384 MACs per instruction, exact (products and sums in i32, no
//! saturation), so exactness costs nothing here either.
//!
//! ## Tiles (8 tile registers, every one 16 rows x 64 bytes)
//!
//! ```text
//!                 B0 (tmm6): cols 0..15      B1 (tmm7): cols 16..31
//!                 16 k-groups x 16 cols x 4  (same, next 64 bytes of each k-group)
//! A0 (tmm4):      C00 (tmm0)                 C01 (tmm1)            rows 0..15
//! rows 0..15, 64 bytes of K
//! A1 (tmm5):      C10 (tmm2)                 C11 (tmm3)            rows 16..31
//! rows 16..31
//! ```
//!
//! Per 64 bytes of K: two A loads, two B loads, four `tdpbusd` (65,536 MACs). After the
//! last chunk of K the four accumulators are stored (`tilestored`) to a 32 x 32 i32
//! buffer and the AVX-512 epilogue of `epilogue512` (the one the AVX-512 VNNI
//! kernels use) turns each row into outputs.
//!
//! ## Packed layout: the AVX-512 VNNI layout (`nr = 32`, `kr = 4`), shared
//!
//! A B tile is 16 rows of 64 bytes, row `g` holding k-group `g` of 16 columns, 4 bytes
//! per column: exactly half of one k-group of a `(32, 4)` panel. So the B tiles of a
//! chunk are read straight from the panel, at a row stride of one k-group (128 bytes):
//!
//! ```text
//! panel p, k-group g (128 bytes): [c0 k0..k3] .. [c15 k0..k3] | [c16 k0..k3] .. [c31 k0..k3]
//!                                  \___ row g of B0 (64 B) __/   \___ row g of B1 (64 B) _/
//! chunk c = k-groups 16c .. 16c + 15: B0 at panel + 2048 c, B1 at panel + 2048 c + 64,
//!                                     stride 128
//! ```
//!
//! Layers are packed once: on an AMX CPU the same bytes serve this kernel (M >= 16, its
//! `m_pref`), `avx512vnni/gemm_8x32c4` (2 <= M < 16) and `avx512vnni/gemv_1x32c4`
//! (M = 1).
//!
//! ## Reads: exactly the caller's rows, and the packing
//!
//! A tiles come straight from the caller's rows (`tileloadd` with the row stride) for
//! every whole 64-byte chunk of K of a whole 32-row tile: each tile row reads 64 bytes
//! inside its row. Two cases would read past a row or past the last row, and go through
//! small zero-padded copies made once per call instead:
//!
//! * the **K tail** (`k % 64` bytes) of the rows of whole tiles: `m_whole x 64` bytes;
//! * the **last, partial tile** (`m % 32` rows): its rows, padded to 32 x
//!   `round_up(k, 64)` bytes.
//!
//! B tiles of whole chunks lie inside the panel; the K tail's k-groups of the current
//! panel are copied into a zero-padded 16 x 128-byte buffer (once per panel and call).
//! Zero padding adds nothing to a sum. Outputs: only columns `[n_begin, n_end)` of
//! each row, through the epilogue's store masks.
//!
//! ## Tile state
//!
//! Each call of an entry point configures the tiles (`ldtilecfg`) before its first
//! tile instruction and releases them (`tilerelease`) when it returns, also on
//! unwinding (a drop guard), so every thread of a multi-threaded call runs with its own
//! configuration and no thread keeps a stale one.
//!
//! ## How it is tested without an AMX CPU
//!
//! Two ways, both on any AVX-512 VNNI machine, both through the whole kernel harness
//! and the tile edges:
//!
//! * **The kernel's own machine code, instructions trapped** (`crate::amx_emulation`, tests only):
//!   on a CPU without AMX each tile instruction raises `SIGILL`; a handler decodes it
//!   from its bytes, executes it on a per-thread software tile file written from the
//!   SDM, and resumes. The `asm!` blocks of `Hardware`, their encodings and operand
//!   order, the stride register and the configuration bytes are what runs. With the
//!   `amx-emulation` feature the same emulation runs the library's tests on `amx`
//!   (`crates/qlinear/tests/amx_emulated.rs`: dispatch, Auto, threads, the conformance
//!   file).
//! * **The loop nest on a software model** of the kernel's six tile operations
//!   (`Emulated`, tests only), independent of the instruction bytes.
//!
//! On an AMX CPU, detection's last step is `known_answer` on the hardware, once per
//! process: the kernel's tile operations (a round, `tilezero`, two more rounds) on data
//! with extremes and a row stride that is not 64, against a scalar computation. If the
//! instructions disagree, `amx` is reported unavailable with the first differing value,
//! and Auto keeps to the AVX-512 VNNI kernels: a misread instruction can cost speed,
//! never bits.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, MPreference, StaticEpilogue};

use crate::blocking::Tiles;
use crate::epilogue512::{
    column_masks, store_row, DynamicOut, DynamicPerRowOut, Output, StaticOut, COLUMNS,
};
use crate::isa::kernel_descriptor;

/// Rows of the output tile (two A tiles of 16 rows).
pub const MR: usize = 32;
/// Columns of the output tile (two B tiles of 16 columns).
pub const NR: usize = 32;
/// K values per column in a k-group.
pub const KR: usize = 4;
/// Rows of every tile register as configured.
const TILE_ROWS: usize = 16;
/// Bytes per row of every tile register as configured: 64 bytes of K for A, one
/// k-group of 16 columns for B, 16 i32 for C.
const TILE_BYTES: usize = 64;
/// Bytes of K one A tile row covers (16 k-groups).
const K_CHUNK: usize = TILE_BYTES;
/// Bytes of one k-group of a panel (32 columns x 4).
const K_GROUP_BYTES: usize = NR * KR;
/// MACs of one `tdpbusd` on full 16 x 64 tiles.
pub(crate) const MACS_PER_TDPBUSD: u32 = (TILE_ROWS * TILE_ROWS * TILE_BYTES) as u32;
const _: () = assert!(NR == COLUMNS, "the 512-bit epilogue writes 32 columns");
const _: () = assert!(
    K_CHUNK / KR == TILE_ROWS,
    "a B tile holds one chunk's k-groups"
);
const _: () = assert!(2 * TILE_BYTES == K_GROUP_BYTES, "two B tiles per k-group");

kernel_descriptor! {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    features: crate::isa::AMX,
    name: "amx/gemm_32x32c4",
    isa: Amx,
    mr: MR,
    nr: NR,
    kr: KR,
    // From 16 rows (one A tile filled) up; smaller M goes to the AVX-512 VNNI kernels
    // of the same packing (rank 1 there), forcing `amx` runs it for every M.
    m_pref: MPreference {
        m_min: 16,
        m_max: usize::MAX,
        rank: 0,
    },
}

/// The 64-byte tile configuration `ldtilecfg` reads: palette 1, tiles 0..=7 of 16 rows x
/// 64 bytes (`colsb` per tile at bytes 16 + 2 t, `rows` at byte 48 + t), the others
/// unused (zero).
#[repr(C, align(64))]
pub(crate) struct TileConfig([u8; 64]);

impl TileConfig {
    /// The kernel's configuration.
    pub(crate) const KERNEL: TileConfig = {
        let mut b = [0u8; 64];
        b[0] = 1; // palette 1; byte 1 (start_row) 0
        let mut t = 0;
        while t < 8 {
            b[16 + 2 * t] = TILE_BYTES as u8; // colsb, little-endian u16
            b[48 + t] = TILE_ROWS as u8;
            t += 1;
        }
        TileConfig(b)
    };
}

/// The tile operations of the kernel, on its fixed assignment of the eight tile
/// registers: accumulators `C[i][j]` in tmm`2i + j` (row half `i`, column half `j`), A
/// halves in tmm4 / tmm5, B halves in tmm6 / tmm7. [`Hardware`] executes them; the
/// tests' software model implements the same contract.
pub(crate) trait TileUnit {
    /// `ldtilecfg` with [`TileConfig::KERNEL`].
    ///
    /// # Safety
    /// AMX is available and this thread may use the tile data.
    unsafe fn configure(&mut self);
    /// `tilezero` on the four accumulators.
    ///
    /// # Safety
    /// Configured.
    unsafe fn zero_accumulators(&mut self);
    /// `tileloadd` of A half `half` (0 or 1): 16 rows of 64 bytes at `src + r * stride`.
    ///
    /// # Safety
    /// Configured; those 16 x 64 bytes are readable.
    unsafe fn load_a(&mut self, half: usize, src: *const u8, stride: usize);
    /// `tileloadd` of B half `half` (0 or 1), as [`TileUnit::load_a`].
    ///
    /// # Safety
    /// As [`TileUnit::load_a`].
    unsafe fn load_b(&mut self, half: usize, src: *const u8, stride: usize);
    /// `tdpbusd C[i][j] += A_i . B_j` for row halves `i < row_halves` (1 or 2), both `j`.
    ///
    /// # Safety
    /// Configured; the A and B halves used were loaded.
    unsafe fn multiply(&mut self, row_halves: usize);
    /// `tilestored` of `C[i][j]`: 16 rows of 16 i32 to `dst + r * stride` bytes.
    ///
    /// # Safety
    /// Configured; those 16 x 64 bytes are writable.
    unsafe fn store_accumulator(&mut self, i: usize, j: usize, dst: *mut u8, stride: usize);
    /// `tilerelease`.
    ///
    /// # Safety
    /// AMX is available.
    unsafe fn release(&mut self);
}

/// The AMX hardware: one instruction per operation, through `asm!` (Rust 1.95's AMX
/// intrinsics are unstable; the assembler takes the mnemonics). Tile registers can only
/// be clobbers in `asm!` (class `tmm_reg`), so each register is named in the
/// instruction text and every block declares the tiles it writes as clobbered.
pub(crate) struct Hardware;

impl TileUnit for Hardware {
    #[inline(always)]
    unsafe fn configure(&mut self) {
        let cfg = &TileConfig::KERNEL;
        // SAFETY: AMX is available (caller); `cfg` is 64 readable bytes.
        unsafe {
            core::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, preserves_flags, readonly));
        }
    }

    #[inline(always)]
    unsafe fn zero_accumulators(&mut self) {
        // SAFETY: configured (caller); tilezero touches tile registers only.
        unsafe {
            core::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                out("tmm0") _,
                out("tmm1") _,
                out("tmm2") _,
                out("tmm3") _,
                options(nomem, nostack, preserves_flags)
            );
        }
    }

    #[inline(always)]
    unsafe fn load_a(&mut self, half: usize, src: *const u8, stride: usize) {
        // SAFETY: configured; 16 rows of 64 bytes at `src + r * stride` are readable
        // (caller).
        unsafe {
            if half == 0 {
                core::arch::asm!("tileloadd tmm4, [{} + {}*1]", in(reg) src, in(reg) stride, out("tmm4") _, options(nostack, preserves_flags, readonly));
            } else {
                core::arch::asm!("tileloadd tmm5, [{} + {}*1]", in(reg) src, in(reg) stride, out("tmm5") _, options(nostack, preserves_flags, readonly));
            }
        }
    }

    #[inline(always)]
    unsafe fn load_b(&mut self, half: usize, src: *const u8, stride: usize) {
        // SAFETY: as `load_a`.
        unsafe {
            if half == 0 {
                core::arch::asm!("tileloadd tmm6, [{} + {}*1]", in(reg) src, in(reg) stride, out("tmm6") _, options(nostack, preserves_flags, readonly));
            } else {
                core::arch::asm!("tileloadd tmm7, [{} + {}*1]", in(reg) src, in(reg) stride, out("tmm7") _, options(nostack, preserves_flags, readonly));
            }
        }
    }

    #[inline(always)]
    unsafe fn multiply(&mut self, row_halves: usize) {
        // SAFETY: configured, A and B halves loaded (caller); tile registers only.
        // tdpbusd dst, src1 (u8: A), src2 (i8: B).
        unsafe {
            core::arch::asm!(
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                out("tmm0") _,
                out("tmm1") _,
                options(nomem, nostack, preserves_flags)
            );
            if row_halves == 2 {
                core::arch::asm!(
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    out("tmm2") _,
                    out("tmm3") _,
                    options(nomem, nostack, preserves_flags)
                );
            }
        }
    }

    #[inline(always)]
    unsafe fn store_accumulator(&mut self, i: usize, j: usize, dst: *mut u8, stride: usize) {
        // SAFETY: configured; 16 rows of 64 bytes at `dst + r * stride` are writable
        // (caller).
        unsafe {
            match (i, j) {
                (0, 0) => {
                    core::arch::asm!("tilestored [{} + {}*1], tmm0", in(reg) dst, in(reg) stride, options(nostack, preserves_flags))
                }
                (0, _) => {
                    core::arch::asm!("tilestored [{} + {}*1], tmm1", in(reg) dst, in(reg) stride, options(nostack, preserves_flags))
                }
                (_, 0) => {
                    core::arch::asm!("tilestored [{} + {}*1], tmm2", in(reg) dst, in(reg) stride, options(nostack, preserves_flags))
                }
                _ => {
                    core::arch::asm!("tilestored [{} + {}*1], tmm3", in(reg) dst, in(reg) stride, options(nostack, preserves_flags))
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn release(&mut self) {
        // SAFETY: AMX is available (caller); tilerelease returns the tile state to init.
        unsafe {
            core::arch::asm!("tilerelease", out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nomem, nostack, preserves_flags))
        }
    }
}

/// Stores the accumulators of row halves `i < row_halves` into `c`: `C[i][j]` to rows
/// `16 i ..` and columns `16 j ..`.
///
/// # Safety
/// As [`TileUnit::store_accumulator`]: `unit` is configured.
#[inline(always)]
unsafe fn store_accumulators<U: TileUnit>(
    unit: &mut U,
    row_halves: usize,
    c: &mut [[i32; NR]; MR],
) {
    for i in 0..row_halves {
        for j in 0..2 {
            // From the whole buffer: the store writes 16 of its rows.
            let first = (TILE_ROWS * i * NR + 16 * j) * 4;
            // SAFETY: 16 rows of 64 bytes from row 16 i, column 16 j, at a row stride of
            // NR i32, lie inside `c` (i < 2, j < 2); configured (caller).
            unsafe {
                let dst = c.as_mut_ptr().cast::<u8>().add(first);
                unit.store_accumulator(i, j, dst, NR * 4);
            }
        }
    }
}

/// Releases the tiles when dropped: on return and on unwinding alike.
struct Configured<'a, U: TileUnit>(&'a mut U);

impl<'a, U: TileUnit> Configured<'a, U> {
    /// # Safety
    /// As [`TileUnit::configure`].
    #[inline(always)]
    unsafe fn new(unit: &'a mut U) -> Self {
        // SAFETY: forwarded.
        unsafe { unit.configure() };
        Configured(unit)
    }
}

impl<U: TileUnit> Drop for Configured<'_, U> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `new` configured the tiles, so AMX is available.
        unsafe { self.0.release() }
    }
}

/// Static entry point (see [`qlinear_reference::contract::GemmU8Fn`]).
///
/// # Safety
/// The amx table entry's detection succeeded on this CPU (AMX-INT8, the AVX-512
/// features, the tile permission); `args`, the packing and `epi` satisfy the contract of
/// [`qlinear_reference::contract::GemmU8Fn`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe { drive(&mut Hardware, args, &StaticOut::new(epi)) }
}

/// Dynamic entry point (see [`qlinear_reference::contract::GemmF32Fn`]).
///
/// # Safety
/// As for [`gemm_u8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled in this function.
    unsafe {
        if epi.is_per_row() {
            drive(&mut Hardware, args, &DynamicPerRowOut(epi))
        } else {
            drive(&mut Hardware, args, &DynamicOut(epi))
        }
    }
}

/// The zero-padded copies a call reads instead of the caller's rows (module docs).
struct Padded {
    /// The K tail (`k % 64` bytes, zero padded to 64) of each row of the whole tiles.
    k_tail: Vec<u8>,
    /// The rows of the last, partial tile, zero padded to 32 rows of `k64` bytes.
    last_tile: Vec<u8>,
    /// `round_up(k, 64)`: the row stride of `last_tile`.
    k64: usize,
}

impl Padded {
    /// Copies what the call needs from `args`' rows.
    ///
    /// # Safety
    /// `args.a` holds `args.m` rows of `args.k` readable bytes at `args.a_stride`.
    unsafe fn new<T>(args: &GemmArgs<T>, m_whole: usize) -> Self {
        let (k, m) = (args.k, args.m);
        let tail = k % K_CHUNK;
        let k64 = k.div_ceil(K_CHUNK) * K_CHUNK;
        let row = |i: usize| {
            // SAFETY: i < m, and row i has k readable bytes (caller).
            unsafe { core::slice::from_raw_parts(args.a.add(i * args.a_stride), k) }
        };
        let mut k_tail = Vec::new();
        if tail != 0 {
            k_tail = vec![0u8; m_whole * K_CHUNK];
            for (i, dst) in k_tail.chunks_exact_mut(K_CHUNK).enumerate() {
                dst[..tail].copy_from_slice(&row(i)[k - tail..]);
            }
        }
        let mut last_tile = Vec::new();
        if m > m_whole {
            last_tile = vec![0u8; MR * k64];
            for (r, dst) in last_tile
                .chunks_exact_mut(k64)
                .take(m - m_whole)
                .enumerate()
            {
                dst[..k].copy_from_slice(row(m_whole + r));
            }
        }
        Padded {
            k_tail,
            last_tile,
            k64,
        }
    }
}

/// The loop nest (see [`crate::blocking`]) with 32 x 32 tiles on `unit`.
///
/// # Safety
/// AVX-512 enabled; `unit` may configure the tiles on this CPU; kernel contract on
/// `args` / epilogue.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn drive<U: TileUnit, O: Output>(unit: &mut U, args: &GemmArgs<O::T>, o: &O) {
    let (m, k) = (args.m, args.k);
    if m == 0 || args.n_begin >= args.n_end {
        return;
    }
    let whole_chunks = k / K_CHUNK;
    let tail_groups = k.div_ceil(KR) - whole_chunks * TILE_ROWS;
    let panel_bytes = k.div_ceil(KR) * KR * NR;
    let m_whole = m / MR * MR;
    // SAFETY: the caller's rows are readable (contract).
    let padded = unsafe { Padded::new(args, m_whole) };
    // The K tail's k-groups of one panel, zero padded to a whole B tile pair.
    let mut b_tail = [0u8; TILE_ROWS * K_GROUP_BYTES];
    let mut b_tail_panel = usize::MAX;
    // The four accumulators of a tile, stored for the epilogue: row r at c[r].
    let mut c = [[0i32; NR]; MR];
    // SAFETY: the caller's contract lets this thread use the tiles.
    let tiles = unsafe { Configured::new(unit) };
    for t in Tiles::new(m, k, args.n_begin, args.n_end, MR, NR) {
        // SAFETY: `Tiles` yields tiles inside the call's rows and columns; every tile
        // load below reads either whole 64-byte chunks inside the caller's rows (whole
        // tiles), the padded copies, the panel's whole chunks or `b_tail`; the stores
        // write `c`; the epilogue writes the tile's valid output columns.
        unsafe {
            let panel = args.packed.add(t.panel * panel_bytes);
            if tail_groups > 0 && b_tail_panel != t.panel {
                let src = panel.add(whole_chunks * TILE_ROWS * K_GROUP_BYTES);
                let len = tail_groups * K_GROUP_BYTES;
                b_tail[..len].copy_from_slice(core::slice::from_raw_parts(src, len));
                b_tail_panel = t.panel;
            }
            let row_halves = if t.rows > TILE_ROWS { 2 } else { 1 };
            let u = &mut *tiles.0;
            u.zero_accumulators();
            // A source for chunk `ch`: (first row, row stride).
            let (a0, a_stride, tail_a): (*const u8, usize, *const u8) = if t.rows == MR {
                (
                    args.a.add(t.row * args.a_stride),
                    args.a_stride,
                    padded.k_tail.as_ptr().wrapping_add(t.row * K_CHUNK),
                )
            } else {
                debug_assert_eq!(t.row, m_whole, "only the last tile is partial");
                let p = padded.last_tile.as_ptr();
                (p, padded.k64, p.wrapping_add(whole_chunks * K_CHUNK))
            };
            let tail_stride = if t.rows == MR { K_CHUNK } else { padded.k64 };
            for ch in 0..whole_chunks {
                u.load_a(0, a0.add(ch * K_CHUNK), a_stride);
                if row_halves == 2 {
                    u.load_a(1, a0.add(TILE_ROWS * a_stride + ch * K_CHUNK), a_stride);
                }
                let b = panel.add(ch * TILE_ROWS * K_GROUP_BYTES);
                u.load_b(0, b, K_GROUP_BYTES);
                u.load_b(1, b.add(TILE_BYTES), K_GROUP_BYTES);
                u.multiply(row_halves);
            }
            if tail_groups > 0 {
                u.load_a(0, tail_a, tail_stride);
                if row_halves == 2 {
                    u.load_a(1, tail_a.add(TILE_ROWS * tail_stride), tail_stride);
                }
                u.load_b(0, b_tail.as_ptr(), K_GROUP_BYTES);
                u.load_b(1, b_tail.as_ptr().add(TILE_BYTES), K_GROUP_BYTES);
                u.multiply(row_halves);
            }
            store_accumulators(u, row_halves, &mut c);
            let masks = column_masks(t.nc);
            let cols = o.columns(t.n0);
            for (r, row) in c.iter().enumerate().take(t.rows) {
                let acc = [
                    _mm512_loadu_si512(row.as_ptr().cast()),
                    _mm512_loadu_si512(row.as_ptr().add(16).cast()),
                ];
                store_row(o, args, &cols, acc, t.row + r, t.n0, masks);
            }
        }
    }
    drop(tiles);
}

/// The known answer of [`known_answer`]: 32 rows of A (u8, at a row stride of 80
/// bytes whose last 16 bytes are junk, so a load that ignores the stride reads them),
/// one chunk of B (16 k-groups of a 32-column panel, i8, stride 128), and the four
/// accumulators after `tilezero` and two `tdpbusd` rounds (so accumulation counts; a
/// round before `tilezero` leaves values it must clear), computed here in scalar code
/// from the instruction's definition.
struct KnownAnswer {
    a: [u8; MR * 80],
    b: [u8; TILE_ROWS * K_GROUP_BYTES],
}

impl KnownAnswer {
    const A_STRIDE: usize = 80;

    fn new() -> Self {
        let mut a = [0xEEu8; MR * 80];
        let mut b = [0u8; TILE_ROWS * K_GROUP_BYTES];
        // Extremes mixed in (255 x -128 per product), and values that tell u8 from i8
        // and one operand from the other.
        for r in 0..MR {
            for k in 0..K_CHUNK {
                a[r * Self::A_STRIDE + k] = match (r * 7 + k * 3) % 5 {
                    0 => 255,
                    1 => 128,
                    2 => 0,
                    _ => (r * 31 + k * 17) as u8,
                };
            }
        }
        for (i, x) in b.iter_mut().enumerate() {
            *x = match i % 7 {
                0 => 0x80, // -128
                1 => 0x7F,
                2 => 0xFF, // -1
                _ => (i * 29 + 3) as u8,
            };
        }
        KnownAnswer { a, b }
    }

    /// `C[r][c]` after `rounds` `tdpbusd`s of the same tiles.
    fn expected(&self, r: usize, c: usize, rounds: i32) -> i32 {
        let mut sum = 0i32;
        for k in 0..K_CHUNK {
            let x = self.a[r * Self::A_STRIDE + k] as i32;
            let w = self.b[(k / KR) * K_GROUP_BYTES + c * KR + k % KR] as i8 as i32;
            sum += x * w;
        }
        sum * rounds
    }
}

/// Runs the kernel's tile operations on `unit` once on [`KnownAnswer`]'s data and
/// compares every accumulator with the scalar answer: `Err` names the first that
/// differs.
///
/// # Safety
/// As [`TileUnit::configure`]: `unit` may use the tiles on this thread.
pub(crate) unsafe fn known_answer<U: TileUnit>(unit: &mut U) -> Result<(), String> {
    let data = KnownAnswer::new();
    let mut c = [[0i32; NR]; MR];
    // SAFETY: every load reads 16 rows of 64 bytes inside `data` (A: rows r * 80 .. +64
    // of 32 rows; B: k-group rows of 128 bytes, halves at 0 and 64); the stores write 16
    // rows of 64 bytes inside `c` (row stride 128); the guard releases the tiles.
    unsafe {
        let tiles = Configured::new(unit);
        let u = &mut *tiles.0;
        // One round before `tilezero`, as the kernel accumulates a tile after the one
        // before it: `ldtilecfg` zeroes the tiles, so without this round a `tilezero`
        // that leaves the accumulators as they are would pass.
        for round in 0..3 {
            if round == 1 {
                u.zero_accumulators();
            }
            u.load_a(0, data.a.as_ptr(), KnownAnswer::A_STRIDE);
            u.load_a(
                1,
                data.a.as_ptr().add(TILE_ROWS * KnownAnswer::A_STRIDE),
                KnownAnswer::A_STRIDE,
            );
            u.load_b(0, data.b.as_ptr(), K_GROUP_BYTES);
            u.load_b(1, data.b.as_ptr().add(TILE_BYTES), K_GROUP_BYTES);
            u.multiply(2);
        }
        store_accumulators(u, 2, &mut c);
    }
    for (r, row) in c.iter().enumerate() {
        for (col, &got) in row.iter().enumerate() {
            let want = data.expected(r, col, 2);
            if got != want {
                return Err(format!(
                    "the tile instructions' self-test failed: C[{r}][{col}] = {got}, \
                     expected {want}"
                ));
            }
        }
    }
    Ok(())
}

/// [`known_answer`] on the hardware, once per process: detection runs it after every
/// other check passed, and reports `amx` unavailable (with the reason) if it fails, so
/// an instruction that does not behave as this crate reads the SDM can never produce
/// an output.
pub(crate) fn hardware_known_answer() -> Result<(), String> {
    use std::sync::OnceLock;
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: called by AMX detection after the CPU, OS and permission checks
            // passed (or with the tile instructions emulated).
            unsafe { known_answer(&mut Hardware) }
        })
        .clone()
}

/// A software model of the tile instructions the kernel uses, for tests on machines
/// without AMX: the eight tile registers as 16 x 64-byte arrays, `tileloadd` /
/// `tilestored` reading and writing exactly the 16 rows of 64 bytes the hardware would,
/// and `tdpbusd`'s arithmetic (u8 x i8 products, four per i32 lane, wrapping sums).
/// Every operation checks that the tiles are configured, as the hardware raises #UD.
#[cfg(test)]
pub(crate) struct Emulated {
    tiles: [[[u8; TILE_BYTES]; TILE_ROWS]; 8],
    configured: bool,
    /// Operations counted, to prove the model ran.
    pub(crate) multiplies: usize,
}

#[cfg(test)]
impl Emulated {
    pub(crate) fn new() -> Self {
        Emulated {
            tiles: [[[0; TILE_BYTES]; TILE_ROWS]; 8],
            configured: false,
            multiplies: 0,
        }
    }

    fn load(&mut self, t: usize, src: *const u8, stride: usize) {
        assert!(self.configured, "tileloadd before ldtilecfg");
        for (r, row) in self.tiles[t].iter_mut().enumerate() {
            // SAFETY: the caller of `load_a` / `load_b` guarantees these bytes.
            let bytes = unsafe { core::slice::from_raw_parts(src.add(r * stride), TILE_BYTES) };
            row.copy_from_slice(bytes);
        }
    }

    fn dot(&mut self, c: usize, a: usize, b: usize) {
        let (ta, tb) = (self.tiles[a], self.tiles[b]);
        let tc = &mut self.tiles[c];
        for (m, c_row) in tc.iter_mut().enumerate() {
            for n in 0..TILE_BYTES / 4 {
                let mut acc = i32::from_le_bytes(c_row[4 * n..4 * n + 4].try_into().unwrap());
                for (g, b_row) in tb.iter().enumerate() {
                    for q in 0..4 {
                        let x = ta[m][4 * g + q] as i32;
                        let w = b_row[4 * n + q] as i8 as i32;
                        acc = acc.wrapping_add(x * w);
                    }
                }
                c_row[4 * n..4 * n + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
impl TileUnit for Emulated {
    unsafe fn configure(&mut self) {
        let cfg = &TileConfig::KERNEL.0;
        assert_eq!(cfg[0], 1, "palette 1");
        for t in 0..8 {
            assert_eq!(
                u16::from_le_bytes([cfg[16 + 2 * t], cfg[17 + 2 * t]]) as usize,
                TILE_BYTES
            );
            assert_eq!(cfg[48 + t] as usize, TILE_ROWS);
        }
        self.configured = true;
    }

    unsafe fn zero_accumulators(&mut self) {
        assert!(self.configured, "tilezero before ldtilecfg");
        for t in &mut self.tiles[..4] {
            *t = [[0; TILE_BYTES]; TILE_ROWS];
        }
    }

    unsafe fn load_a(&mut self, half: usize, src: *const u8, stride: usize) {
        self.load(4 + half, src, stride);
    }

    unsafe fn load_b(&mut self, half: usize, src: *const u8, stride: usize) {
        self.load(6 + half, src, stride);
    }

    unsafe fn multiply(&mut self, row_halves: usize) {
        assert!(self.configured, "tdpbusd before ldtilecfg");
        for i in 0..row_halves {
            for j in 0..2 {
                self.dot(2 * i + j, 4 + i, 6 + j);
                self.multiplies += 1;
            }
        }
    }

    unsafe fn store_accumulator(&mut self, i: usize, j: usize, dst: *mut u8, stride: usize) {
        assert!(self.configured, "tilestored before ldtilecfg");
        for (r, row) in self.tiles[2 * i + j].iter().enumerate() {
            // SAFETY: the caller guarantees these bytes are writable.
            unsafe {
                core::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(r * stride), TILE_BYTES)
            };
        }
    }

    unsafe fn release(&mut self) {
        assert!(self.configured, "tilerelease without a configuration");
        self.configured = false;
    }
}

#[cfg(test)]
mod tests {
    // Test code: telling the person running the tests about a skipped kernel is the point.
    #![allow(clippy::print_stderr)]

    use super::*;
    use crate::testing::{check_kernel, check_shape};
    use qlinear_reference::contract::{Isa, KernelDesc};
    use qlinear_reference::testkit::Rng;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `tdpbusd`s the software model executed, across the tests' calls.
    static MODEL_MULTIPLIES: AtomicUsize = AtomicUsize::new(0);

    /// Runs `drive` on a fresh software model and counts its multiplies.
    ///
    /// # Safety
    /// AVX-512 VNNI available; kernel contract on `args` / epilogue.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn on_model<O: Output>(args: &GemmArgs<O::T>, o: &O) {
        let mut unit = Emulated::new();
        // SAFETY: forwarded; the model needs no hardware.
        unsafe { drive(&mut unit, args, o) };
        assert!(!unit.configured, "the tiles were not released");
        MODEL_MULTIPLIES.fetch_add(unit.multiplies, Ordering::Relaxed);
    }

    /// # Safety
    /// As [`gemm_u8`], with AVX-512 VNNI instead of AMX.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn model_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
        // SAFETY: forwarded.
        unsafe { on_model(args, &StaticOut::new(epi)) }
    }

    /// # Safety
    /// As [`gemm_f32`], with AVX-512 VNNI instead of AMX.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn model_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
        // SAFETY: forwarded.
        unsafe {
            if epi.is_per_row() {
                on_model(args, &DynamicPerRowOut(epi))
            } else {
                on_model(args, &DynamicOut(epi))
            }
        }
    }

    /// The kernel with the software model in place of the tile instructions: the same
    /// loop nest, copies, epilogue and descriptor, supported wherever AVX-512 VNNI is.
    fn on_software_tiles() -> KernelDesc {
        fn avx512() -> bool {
            crate::isa::entry(Isa::Avx512Vnni).available().is_ok()
        }
        KernelDesc {
            name: "amx/gemm_32x32c4 on software tiles",
            gemm_u8: model_u8,
            gemm_f32: model_f32,
            is_supported: avx512,
            ..KERNEL
        }
    }

    #[test]
    fn tile_configuration_bytes() {
        let b = &TileConfig::KERNEL.0;
        assert_eq!(b[0], 1, "palette 1");
        assert_eq!(b[1], 0, "start_row 0");
        assert!(b[2..16].iter().all(|&x| x == 0), "reserved bytes");
        for t in 0..16 {
            let colsb = u16::from_le_bytes([b[16 + 2 * t], b[17 + 2 * t]]);
            let rows = b[48 + t];
            let used = t < 8;
            assert_eq!(colsb, if used { 64 } else { 0 }, "tile {t} colsb");
            assert_eq!(rows, if used { 16 } else { 0 }, "tile {t} rows");
        }
        assert_eq!(core::mem::align_of::<TileConfig>(), 64);
    }

    /// The model's `tdpbusd` against the instruction's definition written another way:
    /// C[m][n] += sum over k of A[m][k] * B[k / 4][4 n + k % 4].
    #[test]
    fn model_tdpbusd_follows_the_definition() {
        let mut rng = Rng::new(77);
        let a = rng.bytes(16 * 64);
        let b = rng.bytes(16 * 64);
        let c0: Vec<u8> = rng.bytes(16 * 64);
        let mut unit = Emulated::new();
        // SAFETY: the model touches only these buffers.
        unsafe {
            unit.configure();
            unit.load_a(0, a.as_ptr(), 64);
            unit.load_b(0, b.as_ptr(), 64);
            unit.load_b(1, b.as_ptr(), 64);
            unit.load(0, c0.as_ptr(), 64);
            unit.multiply(1);
            let mut out = vec![0u8; 16 * 64];
            unit.store_accumulator(0, 0, out.as_mut_ptr(), 64);
            unit.release();
            for m in 0..16 {
                for n in 0..16 {
                    let at = |buf: &[u8]| {
                        i32::from_le_bytes(
                            buf[m * 64 + 4 * n..m * 64 + 4 * n + 4].try_into().unwrap(),
                        )
                    };
                    let mut want = at(&c0);
                    for k in 0..64 {
                        let x = a[m * 64 + k] as i32;
                        let w = b[(k / 4) * 64 + 4 * n + k % 4] as i8 as i32;
                        want = want.wrapping_add(x * w);
                    }
                    assert_eq!(at(&out), want, "C[{m}][{n}]");
                }
            }
        }
    }

    /// The whole kernel harness (the edge catalogue of a 32 x 32 tile: every partial M
    /// up to 65, K around the k-group and the 64-byte chunk, N around 32, extreme values,
    /// column ranges, per-row dynamic input, edge scales) on the software tiles.
    #[test]
    fn software_tiles_pass_the_kernel_harness() {
        let before = MODEL_MULTIPLIES.load(Ordering::Relaxed);
        let desc = on_software_tiles();
        check_kernel(&desc);
        if (desc.is_supported)() {
            assert!(
                MODEL_MULTIPLIES.load(Ordering::Relaxed) > before,
                "the model never ran"
            );
        }
    }

    /// The edges of the tile instructions' geometry: M from 1 to 40 and past 100 (the
    /// 16-row halves, the partial last tile), K at 1, 3, 4, 63, 64, 65 and at the
    /// 33,025 limit with worst-case values (the 64-byte chunk and its tail), N at 1, 15,
    /// 16, 17, 31, 33 (the 16-column B halves, a second panel). Every case's input rows
    /// end exactly at the end of their buffer, so a read past a row would leave it.
    #[test]
    fn software_tiles_at_the_tile_edges() {
        let desc = on_software_tiles();
        if !(desc.is_supported)() {
            eprintln!("SKIP {}: AVX-512 VNNI is not available", desc.name);
            return;
        }
        let mut rng = Rng::new(0xA3);
        for (m, k, n) in tile_edge_shapes() {
            check_shape(&desc, &mut rng, m, k, n);
        }
    }

    /// The edges of the tile instructions' geometry (see
    /// `software_tiles_at_the_tile_edges`), as (M, K, N).
    fn tile_edge_shapes() -> Vec<(usize, usize, usize)> {
        let ns = [1, 15, 16, 17, 31, 33];
        let ks = [1, 3, 4, 63, 64, 65];
        let ms = (1..=40).chain([100, 129]);
        let mut shapes: Vec<_> = ms
            .enumerate()
            .map(|(i, m)| (m, ks[i % ks.len()], ns[i % ns.len()]))
            .collect();
        shapes.extend(ks.iter().flat_map(|&k| ns.iter().map(move |&n| (33, k, n))));
        shapes.extend([1, 16, 17, 32, 33].map(|m| (m, qlinear_reference::K_LIMIT, 33)));
        shapes
    }

    /// A unit that breaks one thing about the instructions.
    struct Faulty {
        model: Emulated,
        /// 0: loads ignore the row stride; 1: the second row half is not multiplied;
        /// 2: B is read as unsigned (A's bytes reinterpreted as i8 instead); 3:
        /// `tilezero` leaves the accumulators as they are.
        fault: u8,
    }

    impl TileUnit for Faulty {
        unsafe fn configure(&mut self) {
            // SAFETY: the model needs no hardware.
            unsafe { self.model.configure() }
        }
        unsafe fn zero_accumulators(&mut self) {
            if self.fault != 3 {
                // SAFETY: as above.
                unsafe { self.model.zero_accumulators() }
            }
        }
        unsafe fn load_a(&mut self, half: usize, src: *const u8, stride: usize) {
            let stride = if self.fault == 0 { TILE_BYTES } else { stride };
            // SAFETY: the known answer's A has 32 rows of at least 64 bytes.
            unsafe { self.model.load_a(half, src, stride) }
        }
        unsafe fn load_b(&mut self, half: usize, src: *const u8, stride: usize) {
            // SAFETY: as above.
            unsafe { self.model.load_b(half, src, stride) };
            if self.fault == 2 {
                for row in &mut self.model.tiles[6 + half] {
                    for x in row.iter_mut() {
                        *x = (*x as i8).unsigned_abs();
                    }
                }
            }
        }
        unsafe fn multiply(&mut self, row_halves: usize) {
            let halves = if self.fault == 1 { 1 } else { row_halves };
            // SAFETY: as above.
            unsafe { self.model.multiply(halves) }
        }
        unsafe fn store_accumulator(&mut self, i: usize, j: usize, dst: *mut u8, stride: usize) {
            // SAFETY: as above.
            unsafe { self.model.store_accumulator(i, j, dst, stride) }
        }
        unsafe fn release(&mut self) {
            // SAFETY: as above.
            unsafe { self.model.release() }
        }
    }

    /// The self-test detection runs on AMX CPUs passes on the model and catches a unit
    /// that ignores the stride, drops a row half, reads B unsigned, or does not zero the
    /// accumulators.
    #[test]
    fn known_answer_passes_the_model_and_catches_faults() {
        // SAFETY: the model needs no hardware.
        unsafe {
            let mut model = Emulated::new();
            assert_eq!(known_answer(&mut model), Ok(()));
            assert!(!model.configured, "the tiles were not released");
            for fault in 0..4 {
                let mut unit = Faulty {
                    model: Emulated::new(),
                    fault,
                };
                let r = known_answer(&mut unit);
                assert!(r.is_err(), "fault {fault} went unnoticed");
            }
        }
    }

    /// The self-test on the kernel's own instructions, trapped.
    #[cfg(target_os = "linux")]
    #[test]
    fn known_answer_on_trapped_instructions() {
        if let Err(why) = on_trapped_instructions() {
            return eprintln!("SKIP amx on trapped instructions: {why}");
        }
        let before = on_this_thread();
        // SAFETY: the tile instructions are emulated (installed above).
        assert_eq!(unsafe { known_answer(&mut Hardware) }, Ok(()));
        // Three rounds of four.
        assert_eq!(on_this_thread(), before + 12);
        assert_released();
    }

    /// `tdpbusd`s trapped on the calling thread so far.
    #[cfg(target_os = "linux")]
    fn on_this_thread() -> usize {
        crate::amx_emulation::executed_multiplies_on_this_thread()
    }

    /// The kernel released this thread's tiles when it returned.
    #[cfg(target_os = "linux")]
    fn assert_released() {
        assert!(
            !crate::amx_emulation::tiles_configured_on_this_thread(),
            "the tiles are still configured: no tilerelease"
        );
    }

    /// The kernel itself (the registered entry points, `Hardware`'s `asm!` blocks) with
    /// its tile instructions trapped and executed in software
    /// (`crate::amx_emulation`, tests only), where the CPU lacks AMX but has the AVX-512 of the
    /// epilogue. `None`, with the reason, elsewhere.
    #[cfg(target_os = "linux")]
    fn on_trapped_instructions() -> Result<KernelDesc, String> {
        crate::amx_emulation::install()?;
        fn installed() -> bool {
            crate::amx_emulation::installed()
        }
        Ok(KernelDesc {
            name: "amx/gemm_32x32c4 on trapped instructions",
            is_supported: installed,
            ..KERNEL
        })
    }

    /// The kernel harness on the kernel's own machine code, tile instructions trapped.
    #[cfg(target_os = "linux")]
    #[test]
    fn trapped_instructions_pass_the_kernel_harness() {
        let desc = match on_trapped_instructions() {
            Ok(desc) => desc,
            Err(why) => return eprintln!("SKIP amx on trapped instructions: {why}"),
        };
        let before = on_this_thread();
        check_kernel(&desc);
        assert!(
            on_this_thread() > before,
            "no tdpbusd was trapped: the kernel's instructions did not run"
        );
        assert_released();
    }

    /// The tile edges of `software_tiles_at_the_tile_edges` on the kernel's own machine
    /// code, tile instructions trapped.
    #[cfg(target_os = "linux")]
    #[test]
    fn trapped_instructions_at_the_tile_edges() {
        let desc = match on_trapped_instructions() {
            Ok(desc) => desc,
            Err(why) => return eprintln!("SKIP amx on trapped instructions: {why}"),
        };
        let mut rng = Rng::new(0xA5);
        for (m, k, n) in tile_edge_shapes() {
            let before = on_this_thread();
            check_shape(&desc, &mut rng, m, k, n);
            assert!(on_this_thread() > before, "m={m} k={k} n={n}: no tdpbusd");
            assert_released();
        }
    }

    /// Seven threads calling the kernel at once: each configures and releases its own
    /// tiles (the emulated tile file is per thread, as the hardware's), and every
    /// thread's outputs are exact.
    #[cfg(target_os = "linux")]
    #[test]
    fn trapped_instructions_on_seven_threads() {
        let desc = match on_trapped_instructions() {
            Ok(desc) => desc,
            Err(why) => return eprintln!("SKIP amx on trapped instructions: {why}"),
        };
        std::thread::scope(|s| {
            for t in 0..7u64 {
                let desc = &desc;
                s.spawn(move || {
                    let mut rng = Rng::new(0xB0 + t);
                    for i in 0..6 {
                        let m = 16 + 7 * t as usize + i;
                        check_shape(desc, &mut rng, m, 64 * i + 13, 17 + 5 * i);
                    }
                    assert!(on_this_thread() > 0, "thread {t}: no tdpbusd");
                    assert_released();
                });
            }
        });
    }

    /// The bench's `peak amx` probe loop on the trapped instructions: it runs to the
    /// end (configured, released) and does the MACs it reports.
    #[cfg(target_os = "linux")]
    #[test]
    fn peak_probe_on_trapped_instructions() {
        if let Err(why) = on_trapped_instructions() {
            return eprintln!("SKIP amx on trapped instructions: {why}");
        }
        let before = crate::amx_emulation::executed_multiplies();
        // SAFETY: the tile instructions are emulated (installed above); AVX-512 is
        // present (the installation checked).
        let macs = unsafe { crate::peak::tdpbusd(3) };
        assert_eq!(macs, (3 * 4 * MACS_PER_TDPBUSD) as f64);
        assert!(crate::amx_emulation::executed_multiplies() >= before + 12);
    }

    /// The kernel on the hardware, at the same edges, where the CPU runs it.
    #[test]
    fn hardware_tiles_at_the_tile_edges() {
        if !(KERNEL.is_supported)() {
            eprintln!("SKIP {}: not available here", KERNEL.name);
            return;
        }
        let mut rng = Rng::new(0xA4);
        for m in [1, 15, 16, 17, 31, 32, 33, 40, 100] {
            for (k, n) in [(1, 1), (63, 15), (64, 16), (65, 17), (200, 33)] {
                check_shape(&KERNEL, &mut rng, m, k, n);
            }
        }
        check_shape(&KERNEL, &mut rng, 33, qlinear_reference::K_LIMIT, 31);
    }
}
