//! The seccomp filter installed on the sandbox's init (and so inherited by the builder).
//!
//! One classic-BPF program, assembled here from a table of about a dozen syscalls:
//!
//! * `EPERM`: `chmod`/`fchmod`/`fchmodat`/`fchmodat2` with `S_ISUID` or `S_ISGID` in the mode
//!   (a build must never produce a setuid/setgid file), and `ioctl(TIOCSTI)`/`ioctl(TIOCLINUX)`
//!   (injecting input into a terminal). Modes and ioctl requests are compared on their low 32
//!   bits only, as the kernel reads them, so high garbage bits cannot smuggle them past.
//! * `ENOTSUP`: every xattr write (`setxattr`, `lsetxattr`, `fsetxattr`, `setxattrat` and the
//!   `removexattr` family): outputs carry no xattrs/ACLs, and tools fall back gracefully.
//! * Foreign architectures: a syscall of another ABI (i386 `int 0x80` on x86_64, arm32 on
//!   aarch64) kills the process. The x32 ABI shares x86_64's audit architecture, so syscall
//!   numbers with the x32 bit (`0x4000_0000`) set fail with `ENOSYS`, as on a kernel built
//!   without x32.
//! * Everything else is allowed.
//!
//! Why assembled by hand rather than with a filter compiler (this used `seccompiler`, which
//! needs one program per return action): installing a filter is the costliest step of the
//! confinement. The kernel converts and JIT-compiles each program, and precomputes which
//! syscalls a program allows whatever their arguments by emulating it once per syscall number
//! and architecture (about 900 runs on x86_64). One program instead of two halves the fixed
//! costs, and dispatching on the syscall number with a binary search (about four comparisons)
//! instead of a linear chain keeps those 900 emulations short. Only instructions the kernel's
//! emulator understands (absolute loads of `nr`/`arch`, `and`, conditional and unconditional
//! jumps, returns) appear before the first argument load, so every syscall outside the table
//! is in the kernel's allow cache and never runs the filter at all.

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Offset of the low 32 bits of argument `i` (all supported architectures are little-endian).
const fn off_arg_low(i: u32) -> u32 {
    16 + 8 * i
}

/// Syscall numbers that newer kernels added and `libc` may not name (identical on all arches).
const SYS_FCHMODAT2: u32 = 452;
const SYS_SETXATTRAT: u32 = 463;
const SYS_REMOVEXATTRAT: u32 = 466;

/// `AUDIT_ARCH_*` of the architecture this helper was built for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(62 | 0x8000_0000 | 0x4000_0000);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(183 | 0x8000_0000 | 0x4000_0000);
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: Option<u32> = Some(243 | 0x8000_0000 | 0x4000_0000);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const AUDIT_ARCH: Option<u32> = None;

/// What the filter does with one syscall of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// EPERM if argument `n` (a mode) has S_ISUID or S_ISGID.
    SetidMode(u32),
    /// EPERM for the terminal-injecting ioctl requests.
    Ioctl,
    /// ENOTSUP, whatever the arguments.
    XattrWrite,
}

/// The table, sorted by syscall number.
fn table() -> Vec<(u32, Rule)> {
    let nr = |n: libc::c_long| n as u32;
    let mut t = vec![
        (nr(libc::SYS_ioctl), Rule::Ioctl),
        (nr(libc::SYS_fchmod), Rule::SetidMode(1)),
        (nr(libc::SYS_fchmodat), Rule::SetidMode(2)),
        (SYS_FCHMODAT2, Rule::SetidMode(2)),
        (nr(libc::SYS_setxattr), Rule::XattrWrite),
        (nr(libc::SYS_lsetxattr), Rule::XattrWrite),
        (nr(libc::SYS_fsetxattr), Rule::XattrWrite),
        (nr(libc::SYS_removexattr), Rule::XattrWrite),
        (nr(libc::SYS_lremovexattr), Rule::XattrWrite),
        (nr(libc::SYS_fremovexattr), Rule::XattrWrite),
        (SYS_SETXATTRAT, Rule::XattrWrite),
        (SYS_REMOVEXATTRAT, Rule::XattrWrite),
    ];
    #[cfg(target_arch = "x86_64")]
    t.push((nr(libc::SYS_chmod), Rule::SetidMode(1)));
    t.sort_by_key(|&(n, _)| n);
    t
}

/// A jump target while assembling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Allow,
    Eperm,
    Enotsup,
    Enosys,
    Kill,
    Rule(Rule),
    /// An instruction index inside the program.
    At(usize),
}

/// An instruction before jump resolution.
#[derive(Debug, Clone, Copy)]
enum Ins {
    /// `A = seccomp_data[off]` (32 bits).
    Load(u32),
    /// `A &= k`.
    And(u32),
    /// `if A <op> k goto t else goto f` (op: `BPF_JEQ`, `BPF_JGE`...).
    Jump { op: u32, k: u32, t: Label, f: Label },
    /// `return k`.
    Ret(u32),
}

/// Assembles instructions with symbolic jumps, then resolves them into `sock_filter`s.
#[derive(Debug, Default)]
struct Asm {
    ins: Vec<Ins>,
}

impl Asm {
    fn push(&mut self, i: Ins) -> usize {
        self.ins.push(i);
        self.ins.len() - 1
    }

    /// Binary search over `table` (sorted, non-empty): each leaf compares for equality and
    /// jumps to its rule; a number not in the table falls to `Allow`.
    fn dispatch(&mut self, table: &[(u32, Rule)]) {
        if table.len() <= 2 {
            for &(nr, rule) in table {
                let next = Label::At(self.ins.len() + 1);
                self.push(Ins::Jump {
                    op: libc::BPF_JEQ,
                    k: nr,
                    t: Label::Rule(rule),
                    f: next,
                });
            }
            self.push(Ins::Ret(libc::SECCOMP_RET_ALLOW));
            return;
        }
        let mid = table.len() / 2;
        // `if nr >= table[mid] goto upper`; the lower half follows directly.
        let at = self.push(Ins::Jump {
            op: libc::BPF_JGE,
            k: table[mid].0,
            t: Label::Allow, // patched below
            f: Label::At(0), // patched below
        });
        let lower = self.ins.len();
        self.dispatch(&table[..mid]);
        let upper = self.ins.len();
        self.dispatch(&table[mid..]);
        if let Ins::Jump { t, f, .. } = &mut self.ins[at] {
            *t = Label::At(upper);
            *f = Label::At(lower);
        }
    }

    /// Resolves labels: rule bodies and shared returns are appended after the code.
    fn finish(mut self) -> Result<Vec<libc::sock_filter>, String> {
        let mut targets: Vec<(Label, usize)> = Vec::new();
        let rules = [
            Rule::SetidMode(1),
            Rule::SetidMode(2),
            Rule::Ioctl,
            Rule::XattrWrite,
        ];
        for rule in rules {
            let at = self.ins.len();
            targets.push((Label::Rule(rule), at));
            match rule {
                Rule::SetidMode(arg) => {
                    self.push(Ins::Load(off_arg_low(arg)));
                    self.push(Ins::And(libc::S_ISUID | libc::S_ISGID));
                    self.push(Ins::Jump {
                        op: libc::BPF_JEQ,
                        k: 0,
                        t: Label::Allow,
                        f: Label::Eperm,
                    });
                }
                Rule::Ioctl => {
                    self.push(Ins::Load(off_arg_low(1)));
                    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
                        let next = Label::At(self.ins.len() + 1);
                        self.push(Ins::Jump {
                            op: libc::BPF_JEQ,
                            k: request as u32,
                            t: Label::Eperm,
                            f: next,
                        });
                    }
                    self.push(Ins::Ret(libc::SECCOMP_RET_ALLOW));
                }
                // Jumps straight to the shared ENOTSUP return (registered below).
                Rule::XattrWrite => {
                    targets.pop();
                }
            }
        }
        for (label, ret) in [
            (Label::Allow, libc::SECCOMP_RET_ALLOW),
            (Label::Eperm, errno(libc::EPERM)),
            (Label::Enotsup, errno(libc::ENOTSUP)),
            (Label::Enosys, errno(libc::ENOSYS)),
            (Label::Kill, libc::SECCOMP_RET_KILL_PROCESS),
        ] {
            targets.push((label, self.ins.len()));
            if label == Label::Enotsup {
                targets.push((Label::Rule(Rule::XattrWrite), self.ins.len()));
            }
            self.push(Ins::Ret(ret));
        }
        let resolve = |from: usize, label: Label| -> Result<u8, String> {
            let to = match label {
                Label::At(i) => i,
                other => targets
                    .iter()
                    .find(|(l, _)| *l == other)
                    .map(|&(_, i)| i)
                    .ok_or_else(|| format!("no target for {other:?}"))?,
            };
            // Classic BPF jumps go forward only, by at most 255 instructions.
            to.checked_sub(from + 1)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or_else(|| format!("jump from {from} to {to} out of range"))
        };
        let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        self.ins
            .iter()
            .enumerate()
            .map(|(i, ins)| {
                Ok(match *ins {
                    Ins::Load(off) => sock_filter(ld, 0, 0, off),
                    Ins::And(k) => sock_filter(
                        (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
                        0,
                        0,
                        k,
                    ),
                    Ins::Jump { op, k, t, f } => sock_filter(
                        (libc::BPF_JMP | op | libc::BPF_K) as u16,
                        resolve(i, t)?,
                        resolve(i, f)?,
                        k,
                    ),
                    Ins::Ret(k) => sock_filter((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, k),
                })
            })
            .collect()
    }
}

fn errno(e: libc::c_int) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

fn sock_filter(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program, ready for [`install`].
pub fn filter() -> Result<Vec<libc::sock_filter>, String> {
    let arch = AUDIT_ARCH.ok_or_else(|| {
        format!(
            "no seccomp filter for architecture `{}`",
            std::env::consts::ARCH
        )
    })?;
    let mut asm = Asm::default();
    asm.push(Ins::Load(OFF_ARCH));
    asm.push(Ins::Jump {
        op: libc::BPF_JEQ,
        k: arch,
        t: Label::At(2),
        f: Label::Kill,
    });
    asm.push(Ins::Load(OFF_NR));
    if cfg!(target_arch = "x86_64") {
        asm.push(Ins::Jump {
            op: libc::BPF_JGE,
            k: 0x4000_0000,
            t: Label::Enosys,
            f: Label::At(4),
        });
    }
    asm.dispatch(&table());
    asm.finish()
}

/// Installs `program` on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
pub fn install(program: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `program`, valid for `len` instructions; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    crate::sys::cvt_long(ret).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the filter must decide, written independently of its layout.
    fn expected(arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        if Some(arch) != AUDIT_ARCH {
            return libc::SECCOMP_RET_KILL_PROCESS;
        }
        if cfg!(target_arch = "x86_64") && nr >= 0x4000_0000 {
            return errno(libc::ENOSYS);
        }
        let low = |i: usize| args[i] as u32;
        let setid = |i: usize| low(i) & (libc::S_ISUID | libc::S_ISGID) != 0;
        let n = nr as libc::c_long;
        #[cfg(target_arch = "x86_64")]
        if n == libc::SYS_chmod && setid(1) {
            return errno(libc::EPERM);
        }
        if (n == libc::SYS_fchmod && setid(1))
            || ((n == libc::SYS_fchmodat || nr == SYS_FCHMODAT2) && setid(2))
            || (n == libc::SYS_ioctl
                && (low(1) == libc::TIOCSTI as u32 || low(1) == libc::TIOCLINUX as u32))
        {
            return errno(libc::EPERM);
        }
        if [
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_removexattr,
            libc::SYS_lremovexattr,
            libc::SYS_fremovexattr,
        ]
        .contains(&n)
            || nr == SYS_SETXATTRAT
            || nr == SYS_REMOVEXATTRAT
        {
            return errno(libc::ENOTSUP);
        }
        libc::SECCOMP_RET_ALLOW
    }

    /// A classic-BPF interpreter for the instructions the filter uses. Returns the action and
    /// the number of instructions run; panics on anything the kernel's checker would refuse.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let i = prog[pc];
            steps += 1;
            let code = u32::from(i.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let k = i.k as usize;
                    assert!(k.is_multiple_of(4) && k + 4 <= data.len());
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => {
                    acc &= i.k;
                    pc += 1;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return (i.k, steps),
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        x if x == libc::BPF_JEQ => acc == i.k,
                        x if x == libc::BPF_JGE => acc >= i.k,
                        other => panic!("unexpected jump {other:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
                other => panic!("unexpected instruction {other:#x}"),
            }
            assert!(pc < prog.len(), "fell off the program");
        }
    }

    #[test]
    fn filter_decides_as_specified() {
        let prog = filter().unwrap();
        assert!(prog.len() < 100);
        let arch = AUDIT_ARCH.unwrap();
        let modes: [u64; 7] = [
            0o755,
            0o4755,
            0o2755,
            0o6000,
            0o1777,
            0x1_0000_4755,
            1 << 63,
        ];
        let requests = [
            libc::TIOCSTI,
            libc::TIOCLINUX,
            0x1_0000_0000 | libc::TIOCSTI,
            libc::TIOCGWINSZ,
        ];
        let in_table: Vec<u32> = table().iter().map(|&(n, _)| n).collect();
        let mut worst_plain = 0;
        for nr in (0..600).chain([0x4000_0000, 0x4000_005a, 0xffff_ffff]) {
            for &arg1 in modes.iter().chain(&requests) {
                for &arg2 in &modes {
                    let args = [3, arg1, arg2, 0, 0, 0];
                    for a in [arch, 0x4000_0003 /* i386 */, 0] {
                        let (got, steps) = run(&prog, a, nr, args);
                        assert_eq!(got, expected(a, nr, args), "arch {a:#x} nr {nr} {args:?}");
                        if a == arch && !in_table.contains(&nr) {
                            worst_plain = worst_plain.max(steps);
                        }
                    }
                }
            }
        }
        // The kernel's allow-cache emulation stays short: arch, nr, x32 and a binary search.
        assert!(
            worst_plain <= 10,
            "an allowed syscall takes {worst_plain} instructions"
        );
    }
}
