//! # AMX instructions executed in software on CPUs without AMX (tests only)
//!
//! On a CPU without AMX every tile instruction raises #UD, which Linux delivers as
//! `SIGILL`. [`install`](crate::amx_emulation::install) puts a `SIGILL` handler in place that decodes the faulting
//! instruction from its bytes, executes it on a per-thread software tile file, steps the
//! instruction pointer past it and resumes. So the AMX kernel's real machine code (the
//! `asm!` blocks of `amx::Hardware`, their encodings, register choices, addressing with
//! the row stride in the index register, the configuration bytes `ldtilecfg` reads) runs
//! unchanged through the real entry points, on any x86-64 Linux machine with the AVX-512
//! its epilogue needs. Only the instructions' semantics come from here, written from the
//! Intel SDM's definitions (and independently of the kernel's own test model,
//! `amx::Emulated`, which works on the kernel's operations rather than instruction
//! bytes).
//!
//! What it checks that the software model cannot:
//!
//! * each instruction's encoding: operand order of `tdpbusd` (destination in ModRM.reg,
//!   u8 source in ModRM.rm, i8 source in VEX.vvvv), which register holds the stride;
//! * the configuration bytes against the SDM's layout and #GP rules (palette 1, reserved
//!   bytes zero, at most 16 rows of 64 bytes, unused tiles zero);
//! * #UD rules: tile instructions before `ldtilecfg` or after `tilerelease`, shapes that
//!   do not agree, a `tdpbusd` whose three tiles are not distinct.
//!
//! A violated rule is reported on standard error and the process aborts, as the
//! hardware's fault would end it. An instruction that is not one of the six below is not
//! emulated: the handler restores the default action and returns, so the instruction
//! faults again and the process dies as it would have without the handler.
//!
//! Emulated: `ldtilecfg m512`, `tilerelease`, `tilezero`, `tileloadd`, `tilestored`,
//! `tdpbusd`. Tile state is per thread (a `const`-initialised thread local without a
//! destructor, safe to touch from a signal handler), as the hardware's is.
//!
//! This module is compiled for the crate's own tests and, for other crates' tests, with
//! the `amx-emulation` feature; never in a normal build. Installing it changes nothing
//! else: only [`enable_backend`](crate::amx_emulation::enable_backend) (called by `crates/qlinear/tests/amx_emulated.rs`, its
//! own process) makes detection report `amx` available.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Tile registers of palette 1.
const TILES: usize = 8;
/// Most rows of a tile (palette 1).
const MAX_ROWS: usize = 16;
/// Most bytes of a tile row (palette 1).
const MAX_COLSB: usize = 64;

/// The per-thread tile file: the configuration `ldtilecfg` loaded and the tile data.
struct TileFile {
    /// 0: tiles not configured (INIT state); 1: palette 1 loaded.
    palette: u8,
    rows: [u8; TILES],
    colsb: [u16; TILES],
    data: [[[u8; MAX_COLSB]; MAX_ROWS]; TILES],
}

impl TileFile {
    const INIT: TileFile = TileFile {
        palette: 0,
        rows: [0; TILES],
        colsb: [0; TILES],
        data: [[[0; MAX_COLSB]; MAX_ROWS]; TILES],
    };
}

thread_local! {
    static TILE_FILE: UnsafeCell<TileFile> = const { UnsafeCell::new(TileFile::INIT) };
    /// `tdpbusd`s executed on this thread (tests running at the same time cannot add
    /// to it, as they can to [`MULTIPLIES`]).
    static THREAD_MULTIPLIES: Cell<usize> = const { Cell::new(0) };
}

/// Instructions the handler executed, in this process (all threads).
static EXECUTED: AtomicUsize = AtomicUsize::new(0);
/// `tdpbusd`s among them.
static MULTIPLIES: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Set by [`enable_backend`]: AMX detection then reports the backend available.
static BACKEND_ENABLED: AtomicBool = AtomicBool::new(false);

/// Tile instructions executed in software so far in this process.
pub fn executed_instructions() -> usize {
    EXECUTED.load(Ordering::Relaxed)
}

/// `tdpbusd` instructions executed in software so far in this process.
pub fn executed_multiplies() -> usize {
    MULTIPLIES.load(Ordering::Relaxed)
}

/// `tdpbusd` instructions executed in software so far on the calling thread: what a
/// test that calls the kernel on its own thread counts, whatever other tests run.
pub fn executed_multiplies_on_this_thread() -> usize {
    THREAD_MULTIPLIES.with(Cell::get)
}

/// Whether the calling thread's emulated tiles are configured (`ldtilecfg` executed and
/// no `tilerelease` since): after a kernel call returns they must not be.
pub fn tiles_configured_on_this_thread() -> bool {
    // SAFETY: the handler, the only writer, runs on this thread only when one of its
    // tile instructions faults, never during this read.
    TILE_FILE.with(|file| unsafe { (*file.get()).palette != 0 })
}

/// Whether [`install`] succeeded in this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// [`install`]s the handler and makes AMX detection report the `amx` backend available
/// (after its known-answer self-test, run on the emulated instructions), so the
/// library's dispatch, Auto included, runs the AMX kernel. For a test binary of its own:
/// it changes what every later layer of the process runs.
pub fn enable_backend() -> Result<(), String> {
    install()?;
    BACKEND_ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// Whether [`enable_backend`] succeeded in this process.
#[cfg(feature = "amx-emulation")]
pub(crate) fn backend_enabled() -> bool {
    BACKEND_ENABLED.load(Ordering::Acquire)
}

/// Installs the `SIGILL` handler, once per process. Detection is unchanged: the AMX
/// kernel runs where a test calls it directly.
///
/// Refuses on a CPU that has AMX-TILE (there the instructions run on the hardware, and a
/// fault would mean something else) and on a CPU without the AVX-512 features the AMX
/// kernel's epilogue needs (it would fault on those, which are not emulated).
pub fn install() -> Result<(), String> {
    static ONCE: Once = Once::new();
    if cfg!(miri) {
        return Err("not under Miri (no signals, no cpuid)".into());
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    if edx & (1 << 24) != 0 {
        return Err("this CPU has AMX: its tile instructions run on the hardware".into());
    }
    crate::isa::detect_features(crate::isa::AMX, crate::isa::XCR0_AVX512, "AVX-512")?;
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid "no flags, empty mask" value; the
        // handler has the three-argument signature SA_SIGINFO requires and only touches
        // this thread's tile file, the faulting thread's registers and the memory the
        // emulated instruction names.
        let r = unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = on_sigill as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGILL, &action, core::ptr::null_mut())
        };
        if r == 0 {
            INSTALLED.store(true, Ordering::Release);
        } else {
            result = Err(format!(
                "sigaction(SIGILL) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    });
    if result.is_ok() && !installed() {
        return Err("an earlier installation failed".into());
    }
    result
}

/// A memory operand: `base + index * scale + disp`, or `rip_next + disp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Memory {
    base: Option<u8>,
    index: Option<u8>,
    scale: u8,
    disp: i32,
    rip_relative: bool,
}

/// One decoded tile instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    LoadConfig(Memory),
    Release,
    Zero(u8),
    Load {
        tile: u8,
        mem: Memory,
    },
    Store {
        tile: u8,
        mem: Memory,
    },
    /// `tdpbusd dst, a (u8), b (i8)`.
    DotUnsignedSigned {
        dst: u8,
        a: u8,
        b: u8,
    },
}

/// Decodes the instruction at the start of `bytes` (its bytes, at least as many as its
/// encoding says: see [`instruction_bytes`]): the operation and its length, or `None`
/// for anything else (also for too few bytes).
fn decode(bytes: &[u8]) -> Option<(Op, usize)> {
    // VEX, three-byte form: C4, [R X B mmmmm] (R, X, B inverted), [W vvvv L pp]
    // (vvvv inverted), opcode, ModRM.
    let [0xC4, b1, b2, opcode, modrm, ..] = *bytes else {
        return None;
    };
    let (r, x, b) = ((!b1 >> 7) & 1, (!b1 >> 6) & 1, (!b1 >> 5) & 1);
    let map = b1 & 0x1F;
    let (w, vvvv, l, pp) = (b2 >> 7, (!b2 >> 3) & 0xF, (b2 >> 2) & 1, b2 & 3);
    if map != 2 || w != 0 || l != 0 {
        return None;
    }
    let md = modrm >> 6;
    let reg = ((modrm >> 3) & 7) | (r << 3);
    let rm = (modrm & 7) | (b << 3);
    let tile = |t: u8| (t < TILES as u8).then_some(t);
    let memory = || -> Option<(Memory, usize)> {
        if md == 3 {
            return None;
        }
        let mut len = 5;
        let mut mem = Memory {
            base: None,
            index: None,
            scale: 1,
            disp: 0,
            rip_relative: false,
        };
        let mut disp32 = md == 2;
        if modrm & 7 == 4 {
            let sib = *bytes.get(5)?;
            len += 1;
            mem.scale = 1 << (sib >> 6);
            let index = ((sib >> 3) & 7) | (x << 3);
            mem.index = (index != 4).then_some(index);
            if sib & 7 == 5 && md == 0 {
                disp32 = true;
            } else {
                mem.base = Some((sib & 7) | (b << 3));
            }
        } else if modrm & 7 == 5 && md == 0 {
            mem.rip_relative = true;
            disp32 = true;
        } else {
            mem.base = Some(rm);
        }
        if md == 1 {
            mem.disp = *bytes.get(len)? as i8 as i32;
            len += 1;
        } else if disp32 {
            mem.disp = i32::from_le_bytes(bytes.get(len..len + 4)?.try_into().ok()?);
            len += 4;
        }
        Some((mem, len))
    };
    match (opcode, pp) {
        // ldtilecfg m512 (NP, ModRM.reg 0), tilerelease (NP, ModRM C0).
        (0x49, 0) if vvvv == 0 => {
            if modrm == 0xC0 {
                Some((Op::Release, 5))
            } else if reg == 0 {
                let (mem, len) = memory()?;
                Some((Op::LoadConfig(mem), len))
            } else {
                None
            }
        }
        // tilezero tmm (F2, register form, ModRM.rm 0).
        (0x49, 3) if vvvv == 0 && md == 3 && modrm & 7 == 0 => Some((Op::Zero(tile(reg)?), 5)),
        // tileloadd tmm, [base + index] (F2) and tilestored [base + index], tmm (F3):
        // the SIB form is required.
        (0x4B, 3 | 2) if vvvv == 0 && modrm & 7 == 4 => {
            let (mem, len) = memory()?;
            let t = tile(reg)?;
            let op = if pp == 3 {
                Op::Load { tile: t, mem }
            } else {
                Op::Store { tile: t, mem }
            };
            Some((op, len))
        }
        // tdpbusd tmm_dst (reg), tmm_a (rm), tmm_b (vvvv) (66).
        (0x5E, 1) if md == 3 => Some((
            Op::DotUnsignedSigned {
                dst: tile(reg)?,
                a: tile(rm)?,
                b: tile(vvvv)?,
            },
            5,
        )),
        _ => None,
    }
}

/// The bytes of the faulting instruction at `p` when it is a three-byte-VEX instruction
/// of map 0F38 (every tile instruction is one), read no further than the instruction
/// goes (ModRM, SIB and displacement as ModRM and SIB say); `None` otherwise, after
/// reading at most the instruction's first four bytes.
///
/// # Safety
/// `p` is the address of an instruction the CPU decoded (its bytes are mapped).
unsafe fn instruction_bytes<'a>(p: *const u8) -> Option<&'a [u8]> {
    // SAFETY: each read stays inside the instruction, as the caller guarantees and the
    // encoding rules below establish (map 0F38 instructions always have ModRM).
    unsafe {
        if *p != 0xC4 || *p.add(1) & 0x1F != 2 {
            return None;
        }
        let modrm = *p.add(4);
        let (md, rm) = (modrm >> 6, modrm & 7);
        let mut len = 5;
        if md != 3 {
            if rm == 4 {
                len += 1;
                if md == 0 && *p.add(5) & 7 == 5 {
                    len += 4;
                }
            } else if md == 0 && rm == 5 {
                len += 4;
            }
            len += match md {
                1 => 1,
                2 => 4,
                _ => 0,
            };
        }
        Some(core::slice::from_raw_parts(p, len))
    }
}

/// The general registers of the interrupted thread, by x86 register number.
struct Registers<'a>(&'a [libc::greg_t]);

impl Registers<'_> {
    /// `gregs` index of x86 register `n` (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp,
    /// 6 rsi, 7 rdi, 8..15 r8..r15).
    fn get(&self, n: u8) -> u64 {
        const SLOT: [libc::c_int; 16] = [
            libc::REG_RAX,
            libc::REG_RCX,
            libc::REG_RDX,
            libc::REG_RBX,
            libc::REG_RSP,
            libc::REG_RBP,
            libc::REG_RSI,
            libc::REG_RDI,
            libc::REG_R8,
            libc::REG_R9,
            libc::REG_R10,
            libc::REG_R11,
            libc::REG_R12,
            libc::REG_R13,
            libc::REG_R14,
            libc::REG_R15,
        ];
        self.0[SLOT[n as usize] as usize] as u64
    }

    /// The operand's address and, for the tile loads and stores, the row stride (the
    /// index register times the scale).
    fn address(&self, mem: Memory, next_rip: u64) -> (u64, u64) {
        let base = match (mem.rip_relative, mem.base) {
            (true, _) => next_rip,
            (false, Some(b)) => self.get(b),
            (false, None) => 0,
        };
        let stride = mem
            .index
            .map_or(0, |i| self.get(i).wrapping_mul(mem.scale as u64));
        (base.wrapping_add(mem.disp as i64 as u64), stride)
    }
}

/// Writes `what` to standard error and aborts, as the hardware's fault would end the
/// process. Only async-signal-safe calls.
fn fault(what: &str) -> ! {
    let prefix = b"qlinear amx emulation: ";
    // SAFETY: write(2) and abort(3) are async-signal-safe; the buffers are valid.
    unsafe {
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, what.as_ptr().cast(), what.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::abort()
    }
}

impl TileFile {
    fn configured(&self) {
        if self.palette == 0 {
            fault("#UD: tile instruction before ldtilecfg (or after tilerelease)");
        }
    }

    fn shape(&self, t: u8) -> (usize, usize) {
        (
            self.rows[t as usize] as usize,
            self.colsb[t as usize] as usize,
        )
    }

    /// `ldtilecfg` of the 64 bytes `cfg` (SDM: palette 0 releases; otherwise #GP on an
    /// unsupported palette, non-zero reserved bytes, a tile over 16 rows x 64 bytes, or a
    /// tile past palette 1's eight configured).
    fn load_config(&mut self, cfg: &[u8; 64]) {
        if cfg[0] == 0 {
            *self = TileFile::INIT;
            return;
        }
        if cfg[0] != 1 {
            fault("#GP: ldtilecfg palette other than 0 or 1");
        }
        if cfg[1] != 0 {
            fault("ldtilecfg with start_row != 0 (a restart; not emulated)");
        }
        if cfg[2..16].iter().any(|&b| b != 0) {
            fault("#GP: ldtilecfg reserved bytes 2..16 not zero");
        }
        for t in 0..16 {
            let colsb = u16::from_le_bytes([cfg[16 + 2 * t], cfg[17 + 2 * t]]);
            let rows = cfg[48 + t];
            if t >= TILES {
                if colsb != 0 || rows != 0 {
                    fault("#GP: ldtilecfg configures a tile past palette 1's eight");
                }
                continue;
            }
            if rows as usize > MAX_ROWS || colsb as usize > MAX_COLSB {
                fault("#GP: ldtilecfg tile larger than 16 rows x 64 bytes");
            }
            if (rows == 0) != (colsb == 0) {
                fault("#GP: ldtilecfg tile with rows or colsb zero but not both");
            }
            self.rows[t] = rows;
            self.colsb[t] = colsb;
        }
        self.palette = 1;
        self.data = [[[0; MAX_COLSB]; MAX_ROWS]; TILES];
    }

    /// # Safety
    /// The tile's rows at `addr + r * stride` are readable (the kernel's contract).
    unsafe fn load(&mut self, t: u8, addr: u64, stride: u64) {
        self.configured();
        let (rows, colsb) = self.shape(t);
        if rows == 0 {
            fault("#UD: tileloadd into an unconfigured tile");
        }
        let tile = &mut self.data[t as usize];
        *tile = [[0; MAX_COLSB]; MAX_ROWS];
        for (r, row) in tile.iter_mut().enumerate().take(rows) {
            let src = addr.wrapping_add(stride.wrapping_mul(r as u64)) as *const u8;
            // SAFETY: the caller's contract.
            let bytes = unsafe { core::slice::from_raw_parts(src, colsb) };
            row[..colsb].copy_from_slice(bytes);
        }
    }

    /// # Safety
    /// The tile's rows at `addr + r * stride` are writable (the kernel's contract).
    unsafe fn store(&self, t: u8, addr: u64, stride: u64) {
        self.configured();
        let (rows, colsb) = self.shape(t);
        if rows == 0 {
            fault("#UD: tilestored of an unconfigured tile");
        }
        for (r, row) in self.data[t as usize].iter().enumerate().take(rows) {
            let dst = addr.wrapping_add(stride.wrapping_mul(r as u64)) as *mut u8;
            // SAFETY: the caller's contract.
            unsafe { core::ptr::copy_nonoverlapping(row.as_ptr(), dst, colsb) };
        }
    }

    /// `tdpbusd` (SDM): for every row m of dst and i32 element n,
    /// `dst[m][n] += sum over k < a.colsb / 4, j < 4 of u8(a[m][4k + j]) * i8(b[k][4n + j])`,
    /// wrapping; #UD unless the three tiles are distinct and the shapes agree.
    fn dot_unsigned_signed(&mut self, dst: u8, a: u8, b: u8) {
        self.configured();
        if dst == a || dst == b || a == b {
            fault("#UD: tdpbusd with tiles that are not distinct");
        }
        let ((d_rows, d_colsb), (a_rows, a_colsb), (b_rows, b_colsb)) =
            (self.shape(dst), self.shape(a), self.shape(b));
        if d_rows == 0 || a_rows == 0 || b_rows == 0 {
            fault("#UD: tdpbusd on an unconfigured tile");
        }
        if a_colsb != 4 * b_rows || d_colsb != b_colsb || d_rows != a_rows || d_colsb % 4 != 0 {
            fault("#UD: tdpbusd shapes do not agree");
        }
        let (ta, tb) = (self.data[a as usize], self.data[b as usize]);
        let td = &mut self.data[dst as usize];
        for m in 0..d_rows {
            for n in 0..d_colsb / 4 {
                let at = 4 * n;
                let mut acc = i32::from_le_bytes(td[m][at..at + 4].try_into().unwrap());
                for k in 0..a_colsb / 4 {
                    for j in 0..4 {
                        let x = ta[m][4 * k + j] as i32;
                        let w = tb[k][at + j] as i8 as i32;
                        acc = acc.wrapping_add(x * w);
                    }
                }
                td[m][at..at + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
}

/// The `SIGILL` handler.
extern "C" fn on_sigill(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes the interrupted thread's ucontext for SA_SIGINFO
    // handlers; nothing else refers to it while the handler runs.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as u64;
    // SAFETY: `info` is the kernel's siginfo for this signal.
    let from_the_cpu = unsafe { (*info).si_code } > 0;
    // Only a fault of the instruction at `rip` (not a SIGILL sent by a process), and
    // only its own bytes are read: the CPU decoded them, so they are mapped.
    let decoded = if from_the_cpu {
        // SAFETY: the instruction's bytes, as far as `instruction_bytes` reads them.
        unsafe { instruction_bytes(rip as *const u8) }.and_then(decode)
    } else {
        None
    };
    let Some((op, len)) = decoded else {
        // Not ours: the default action, and the signal again (a fault repeats itself
        // when the handler returns; a sent signal is raised anew).
        // SAFETY: resetting SIGILL to its default action and raising it.
        unsafe {
            libc::signal(libc::SIGILL, libc::SIG_DFL);
            if !from_the_cpu {
                libc::raise(libc::SIGILL);
            }
        }
        return;
    };
    let next = rip + len as u64;
    let regs = Registers(gregs);
    TILE_FILE.with(|file| {
        // SAFETY: only this handler touches the thread's tile file, and it does not
        // re-enter itself (no tile instruction runs inside it).
        let file = unsafe { &mut *file.get() };
        match op {
            Op::LoadConfig(mem) => {
                let (addr, _) = regs.address(mem, next);
                // SAFETY: `ldtilecfg` reads 64 bytes at its operand; the kernel passes
                // a 64-byte configuration.
                let cfg = unsafe { &*(addr as *const [u8; 64]) };
                file.load_config(cfg);
            }
            Op::Release => *file = TileFile::INIT,
            Op::Zero(t) => {
                file.configured();
                file.data[t as usize] = [[0; MAX_COLSB]; MAX_ROWS];
            }
            Op::Load { tile, mem } => {
                let (addr, stride) = regs.address(mem, next);
                // SAFETY: the kernel's contract, as on the hardware.
                unsafe { file.load(tile, addr, stride) }
            }
            Op::Store { tile, mem } => {
                let (addr, stride) = regs.address(mem, next);
                // SAFETY: the kernel's contract, as on the hardware.
                unsafe { file.store(tile, addr, stride) }
            }
            Op::DotUnsignedSigned { dst, a, b } => {
                file.dot_unsigned_signed(dst, a, b);
                MULTIPLIES.fetch_add(1, Ordering::Relaxed);
                THREAD_MULTIPLIES.with(|n| n.set(n.get() + 1));
            }
        }
    });
    EXECUTED.fetch_add(1, Ordering::Relaxed);
    gregs[libc::REG_RIP as usize] = next as libc::greg_t;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(16, 0x90);
        v
    }

    /// Encodings as the assembler emits them (objdump of GNU as output), decoded.
    #[test]
    fn decodes_the_assemblers_encodings() {
        let reg = |base: u8, index: u8| Memory {
            base: Some(base),
            index: Some(index),
            scale: 1,
            disp: 0,
            rip_relative: false,
        };
        // ldtilecfg [rsi]
        let cfg = Memory {
            index: None,
            ..reg(6, 0)
        };
        assert_eq!(
            decode(&pad(&[0xC4, 0xE2, 0x78, 0x49, 0x06])),
            Some((Op::LoadConfig(cfg), 5))
        );
        // tilerelease; tilezero tmm0
        assert_eq!(
            decode(&pad(&[0xC4, 0xE2, 0x78, 0x49, 0xC0])),
            Some((Op::Release, 5))
        );
        assert_eq!(
            decode(&pad(&[0xC4, 0xE2, 0x7B, 0x49, 0xC0])),
            Some((Op::Zero(0), 5))
        );
        // tileloadd tmm4, [rdx + rax*1]
        assert_eq!(
            decode(&pad(&[0xC4, 0xE2, 0x7B, 0x4B, 0x24, 0x02])),
            Some((
                Op::Load {
                    tile: 4,
                    mem: reg(2, 0)
                },
                6
            ))
        );
        // tdpbusd tmm0, tmm4, tmm6
        assert_eq!(
            decode(&pad(&[0xC4, 0xE2, 0x49, 0x5E, 0xC4])),
            Some((Op::DotUnsignedSigned { dst: 0, a: 4, b: 6 }, 5))
        );
        // tilestored [r8 + rax*1 + 0x40], tmm0
        assert_eq!(
            decode(&pad(&[0xC4, 0xC2, 0x7A, 0x4B, 0x44, 0x00, 0x40])),
            Some((
                Op::Store {
                    tile: 0,
                    mem: Memory {
                        disp: 0x40,
                        ..reg(8, 0)
                    }
                },
                7
            ))
        );
        // Not tile instructions: vpxord zmm1, zmm1, zmm1 (EVEX); tdpbssd (F2) is not
        // emulated; a VEX map-1 instruction.
        assert_eq!(decode(&pad(&[0x62, 0xF1, 0x75, 0x48, 0xEF, 0xC9])), None);
        assert_eq!(decode(&pad(&[0xC4, 0xE2, 0x4B, 0x5E, 0xC4])), None);
        assert_eq!(decode(&pad(&[0xC4, 0xE1, 0x78, 0x49, 0xC0])), None);
    }

    /// The addressing forms the register allocator may produce, and the special cases
    /// of ModRM / SIB, as GNU as encodes them (objdump shown), decoded.
    #[test]
    fn decodes_every_addressing_form() {
        let mem = |base: Option<u8>, index: Option<u8>, scale: u8, disp: i32| Memory {
            base,
            index,
            scale,
            disp,
            rip_relative: false,
        };
        let load = |tile, mem| Op::Load { tile, mem };
        let cases: &[(&[u8], Op, usize)] = &[
            // tileloadd tmm3,[r13+r12*1+0x0]: r13 as base needs mod 01; X and B set.
            (
                &[0xC4, 0x82, 0x7B, 0x4B, 0x5C, 0x25, 0x00],
                load(3, mem(Some(13), Some(12), 1, 0)),
                7,
            ),
            // tileloadd tmm3,[rbp+rcx*1+0x100]: disp32.
            (
                &[0xC4, 0xE2, 0x7B, 0x4B, 0x9C, 0x0D, 0x00, 0x01, 0x00, 0x00],
                load(3, mem(Some(5), Some(1), 1, 0x100)),
                10,
            ),
            // tileloadd tmm1,[rsp+rax*1]
            (
                &[0xC4, 0xE2, 0x7B, 0x4B, 0x0C, 0x04],
                load(1, mem(Some(4), Some(0), 1, 0)),
                6,
            ),
            // tileloadd tmm0,[rsp]: SIB index 100 without X is no index (stride 0).
            (
                &[0xC4, 0xE2, 0x7B, 0x4B, 0x04, 0x24],
                load(0, mem(Some(4), None, 1, 0)),
                6,
            ),
            // tileloadd tmm4,[rsp+r12*1]: index 100 with X is r12.
            (
                &[0xC4, 0xA2, 0x7B, 0x4B, 0x24, 0x24],
                load(4, mem(Some(4), Some(12), 1, 0)),
                6,
            ),
            // tileloadd tmm2,[r12+r13*4], [r12+r13*8+0x12345678]
            (
                &[0xC4, 0x82, 0x7B, 0x4B, 0x14, 0xAC],
                load(2, mem(Some(12), Some(13), 4, 0)),
                6,
            ),
            (
                &[0xC4, 0x82, 0x7B, 0x4B, 0x94, 0xEC, 0x78, 0x56, 0x34, 0x12],
                load(2, mem(Some(12), Some(13), 8, 0x1234_5678)),
                10,
            ),
            // tileloadd tmm5,[r11*2+0x40]: SIB base 101 with mod 00 is disp32, no base;
            // the same with VEX.B set (not r13: still no base).
            (
                &[0xC4, 0xA2, 0x7B, 0x4B, 0x2C, 0x5D, 0x40, 0x00, 0x00, 0x00],
                load(5, mem(None, Some(11), 2, 0x40)),
                10,
            ),
            (
                &[0xC4, 0x82, 0x7B, 0x4B, 0x2C, 0x5D, 0x40, 0x00, 0x00, 0x00],
                load(5, mem(None, Some(11), 2, 0x40)),
                10,
            ),
            // tileloadd tmm4,ds:0x10 (B set, no index, no base).
            (
                &[0xC4, 0xC2, 0x7B, 0x4B, 0x24, 0x25, 0x10, 0x00, 0x00, 0x00],
                load(4, mem(None, None, 1, 0x10)),
                10,
            ),
            // tilestored [r9+r15*1-0x8],tmm7: disp8 sign-extended.
            (
                &[0xC4, 0x82, 0x7A, 0x4B, 0x7C, 0x39, 0xF8],
                Op::Store {
                    tile: 7,
                    mem: mem(Some(9), Some(15), 1, -8),
                },
                7,
            ),
            // tilestored [rbx+rsi*2],tmm6
            (
                &[0xC4, 0xE2, 0x7A, 0x4B, 0x34, 0x73],
                Op::Store {
                    tile: 6,
                    mem: mem(Some(3), Some(6), 2, 0),
                },
                6,
            ),
            // ldtilecfg [rip+0x4e]; the same with VEX.B set is still RIP-relative.
            (
                &[0xC4, 0xE2, 0x78, 0x49, 0x05, 0x4E, 0x00, 0x00, 0x00],
                Op::LoadConfig(Memory {
                    rip_relative: true,
                    ..mem(None, None, 1, 0x4E)
                }),
                9,
            ),
            (
                &[0xC4, 0xC2, 0x78, 0x49, 0x05, 0x10, 0x00, 0x00, 0x00],
                Op::LoadConfig(Memory {
                    rip_relative: true,
                    ..mem(None, None, 1, 0x10)
                }),
                9,
            ),
            // ldtilecfg [r12] (SIB), [r13+0x0] (mod 01), [rsp] (SIB)
            (
                &[0xC4, 0xC2, 0x78, 0x49, 0x04, 0x24],
                Op::LoadConfig(mem(Some(12), None, 1, 0)),
                6,
            ),
            (
                &[0xC4, 0xC2, 0x78, 0x49, 0x45, 0x00],
                Op::LoadConfig(mem(Some(13), None, 1, 0)),
                6,
            ),
            (
                &[0xC4, 0xE2, 0x78, 0x49, 0x04, 0x24],
                Op::LoadConfig(mem(Some(4), None, 1, 0)),
                6,
            ),
            // tdpbusd tmm7,tmm0,tmm3 and tmm1,tmm7,tmm2: dst reg, u8 rm, i8 vvvv.
            (
                &[0xC4, 0xE2, 0x61, 0x5E, 0xF8],
                Op::DotUnsignedSigned { dst: 7, a: 0, b: 3 },
                5,
            ),
            (
                &[0xC4, 0xE2, 0x69, 0x5E, 0xCF],
                Op::DotUnsignedSigned { dst: 1, a: 7, b: 2 },
                5,
            ),
            // tilezero tmm7
            (&[0xC4, 0xE2, 0x7B, 0x49, 0xF8], Op::Zero(7), 5),
        ];
        for (bytes, op, len) in cases {
            assert_eq!(decode(&pad(bytes)), Some((*op, *len)), "{bytes:02x?}");
            // The handler's path: exactly the instruction's bytes are read, and they
            // decode alone (a byte fewer does not).
            // SAFETY: `bytes` holds the whole instruction.
            let exact = unsafe { instruction_bytes(bytes.as_ptr()) }.expect("a 0F38 VEX3");
            assert_eq!(exact.len(), *len, "{bytes:02x?}");
            assert_eq!(decode(exact), Some((*op, *len)), "{bytes:02x?}");
            assert_eq!(decode(&exact[..len - 1]), None, "{bytes:02x?}");
        }
        // Other instructions are rejected from their first bytes: vpxord (EVEX), a VEX
        // map-1 instruction (vzeroupper, four bytes, no ModRM).
        // SAFETY: each array holds at least the bytes read before the rejection.
        unsafe {
            assert!(instruction_bytes([0x62u8, 0xF1, 0x75, 0x48].as_ptr()).is_none());
            assert!(instruction_bytes([0xC4u8, 0xE1, 0x78, 0x77].as_ptr()).is_none());
        }
        // Not emulated: tileloadd without SIB ([rax]); tdpbuud (NP), tdpbsud (F3);
        // tdpbusd with a tile register above 7 (VEX.R set); W1.
        for bytes in [
            &[0xC4, 0xE2, 0x7B, 0x4B, 0x00][..],
            &[0xC4, 0xE2, 0x48, 0x5E, 0xC4],
            &[0xC4, 0xE2, 0x4A, 0x5E, 0xC4],
            &[0xC4, 0x62, 0x49, 0x5E, 0xC4],
            &[0xC4, 0xE2, 0xC9, 0x5E, 0xC4],
        ] {
            assert_eq!(decode(&pad(bytes)), None, "{bytes:02x?}");
        }
    }

    /// `tdpbusd` of the tile file against the definition written another way, on
    /// tiles narrower than 64 bytes (shapes the kernel does not use).
    #[test]
    fn dot_follows_the_definition_on_narrow_tiles() {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        // dst 3 rows x 8 bytes (2 i32), a 3 rows x 12 bytes (3 k-groups), b 3 x 8.
        for (t, rows, colsb) in [(0, 3u8, 8u16), (1, 3, 12), (2, 3, 8)] {
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb.to_le_bytes());
            cfg[48 + t] = rows;
        }
        let mut file = TileFile::INIT;
        file.load_config(&cfg);
        let mut rng = qlinear_reference::testkit::Rng::new(5);
        for t in 0..3 {
            for row in &mut file.data[t] {
                row.copy_from_slice(&rng.bytes(64));
            }
        }
        let before = file.data;
        file.dot_unsigned_signed(0, 1, 2);
        for m in 0..3 {
            for n in 0..2 {
                let c = |d: &[[u8; 64]; 16]| {
                    i32::from_le_bytes(d[m][4 * n..4 * n + 4].try_into().unwrap())
                };
                let mut want = c(&before[0]);
                for k in 0..12 {
                    let x = before[1][m][k] as i32;
                    let w = before[2][k / 4][4 * n + k % 4] as i8 as i32;
                    want = want.wrapping_add(x * w);
                }
                assert_eq!(c(&file.data[0]), want, "C[{m}][{n}]");
            }
        }
    }
}
