//! The seccomp filters installed on the sandbox's init (and so inherited by the builder).
//!
//! Two `seccompiler` filters, because a `seccompiler` filter has a single match action:
//!
//! 1. `EPERM`: `chmod`/`fchmod`/`fchmodat`/`fchmodat2` with `S_ISUID` or `S_ISGID` in the mode
//!    (a build must never produce a setuid/setgid file), and `ioctl(TIOCSTI)`/`ioctl(TIOCLINUX)`
//!    (injecting input into a terminal). The ioctl request is compared on its low 32 bits only,
//!    as the kernel does, so high garbage bits cannot smuggle it past the filter. And every
//!    `io_uring_setup`, `io_uring_enter` and `io_uring_register`, as Docker's default
//!    profile does: io_uring performs operations (`IORING_OP_SETXATTR`, ...) without the
//!    system calls this filter sees. EPERM is what a kernel with `io_uring_disabled` returns,
//!    which programs already fall back from.
//! 2. `ENOTSUP`: every xattr write (`setxattr`, `lsetxattr`, `fsetxattr`, `setxattrat` and the
//!    `removexattr` family): outputs carry no xattrs/ACLs, and tools fall back gracefully.
//!
//! Foreign architectures: each filter starts with `seccompiler`'s architecture check, which
//! kills the process on a syscall of another ABI (i386 `int 0x80` on x86_64, arm32 on aarch64).
//! The x32 ABI shares x86_64's audit architecture, so `seccompiler` cannot tell it apart; the
//! first filter is therefore prefixed with five BPF instructions returning `ENOSYS` for any
//! syscall number with the x32 bit (`0x4000_0000`) set, as on a kernel built without x32.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Syscall numbers that newer kernels added and `libc` may not name (identical on all arches).
const SYS_IO_URING_SETUP: i64 = 425;
const SYS_IO_URING_ENTER: i64 = 426;
const SYS_IO_URING_REGISTER: i64 = 427;
const SYS_FCHMODAT2: i64 = 452;
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;

/// The compiled filters, in installation order.
pub fn filters() -> Result<Vec<BpfProgram>, String> {
    build().map_err(|e| e.to_string())
}

fn build() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let arch: TargetArch = std::env::consts::ARCH.try_into()?;

    let setid = |arg: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let bits = [libc::S_ISUID, libc::S_ISGID];
        bits.iter()
            .map(|&bit| {
                Ok(SeccompRule::new(vec![SeccompCondition::new(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(u64::from(bit)),
                    u64::from(bit),
                )?])?)
            })
            .collect()
    };
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    #[cfg(target_arch = "x86_64")]
    eperm.insert(libc::SYS_chmod, setid(1)?);
    eperm.insert(libc::SYS_fchmod, setid(1)?);
    eperm.insert(libc::SYS_fchmodat, setid(2)?);
    eperm.insert(SYS_FCHMODAT2, setid(2)?);
    let ioctls = [libc::TIOCSTI, libc::TIOCLINUX]
        .iter()
        .map(|&request| {
            Ok(SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(request as u32),
            )?])?)
        })
        .collect::<Result<Vec<_>, seccompiler::Error>>()?;
    eperm.insert(libc::SYS_ioctl, ioctls);
    for nr in [
        SYS_IO_URING_SETUP,
        SYS_IO_URING_ENTER,
        SYS_IO_URING_REGISTER,
    ] {
        // An empty rule list matches every call of the syscall.
        eperm.insert(nr, Vec::new());
    }

    let mut enotsup: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in [
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_fsetxattr,
        libc::SYS_removexattr,
        libc::SYS_lremovexattr,
        libc::SYS_fremovexattr,
        SYS_SETXATTRAT,
        SYS_REMOVEXATTRAT,
    ] {
        // An empty rule list matches every call of the syscall.
        enotsup.insert(nr, Vec::new());
    }

    let compile = |rules, errno: i32| -> Result<BpfProgram, seccompiler::Error> {
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )?
        .try_into()
        .map_err(seccompiler::Error::from)
    };
    let mut first = x32_guard();
    first.extend(compile(eperm, libc::EPERM)?);
    Ok(vec![first, compile(enotsup, libc::ENOTSUP)?])
}

/// Five instructions rejecting x32 syscalls with `ENOSYS`; empty on other architectures.
fn x32_guard() -> BpfProgram {
    #[cfg(target_arch = "x86_64")]
    {
        const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
        const X32_SYSCALL_BIT: u32 = 0x4000_0000;
        let ins = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        vec![
            // A = seccomp_data.arch; not x86_64: skip to seccompiler's arch check (kills).
            ins(ld_abs, 0, 0, 4),
            ins(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                0,
                3,
                AUDIT_ARCH_X86_64,
            ),
            // A = seccomp_data.nr; x32 bit set: fail with ENOSYS, else continue.
            ins(ld_abs, 0, 0, 0),
            ins(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                0,
                1,
                X32_SYSCALL_BIT,
            ),
            ins(
                libc::BPF_RET | libc::BPF_K,
                0,
                0,
                libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            ),
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile() {
        let filters = super::filters().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty() && f.len() < 4096));
    }
}
