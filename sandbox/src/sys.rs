//! Thin, checked wrappers over the raw system calls the helper makes.
//!
//! Every function returns `io::Error::last_os_error()` on failure and never panics. Paths are
//! `&CStr` prepared in advance so the sequence does no formatting on its success path.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

/// Converts a `-1` return into the current `errno`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a `-1` return of `syscall(2)` into the current `errno`.
pub fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reads everything from `fd` until its end, refusing more than `max` bytes (the spec
/// arrives on a pipe or socket of unknown length). Retries on `EINTR`.
pub fn read_all(fd: libc::c_int, max: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let spare = buf.capacity() - buf.len();
        // SAFETY: the destination is the vector's spare capacity, writable for `spare` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(buf.len()).cast(), spare) };
        match n {
            0 => break,
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: read(2) initialised `n` more bytes.
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
        if buf.len() > max {
            return Err(io::Error::other(format!(
                "the spec is larger than {max} bytes"
            )));
        }
    }
    Ok(buf)
}

/// `mount(2)` with optional source, filesystem type and data.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let ret = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    cvt(ret).map(drop)
}

/// `mkdir(2)`; an existing entry is not an error (the caller's next step checks its type).
pub fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    match cvt(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map(drop),
    }
}

/// Creates an empty regular file to bind a file onto; an existing entry is not an error.
pub fn mkfile(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call; S_IFREG needs no device number.
    match cvt(unsafe { libc::mknod(path.as_ptr(), libc::S_IFREG | 0o644, 0) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map(drop),
    }
}

/// `symlink(2)`: creates `path` pointing to `to`.
pub fn symlink(to: &CStr, path: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    cvt(unsafe { libc::symlink(to.as_ptr(), path.as_ptr()) }).map(drop)
}

/// `open(2)` returning an owned descriptor (`O_CLOEXEC` is always added).
pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the mode argument is ignored without O_CREAT.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)` relative to the directory `dir` (`O_CLOEXEC` is always added).
pub fn openat(dir: &OwnedFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is open, `path` is NUL-terminated; the mode is ignored without O_CREAT.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o644,
        )
    })?;
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat(2)` on any descriptor, including `O_PATH` ones.
pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `libc::stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open, "" with AT_EMPTY_PATH names it, `st` is a valid out pointer.
    let ret = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    cvt(ret).map(|_| st)
}

/// Reads the text of the symbolic link `fd` was opened on (`O_PATH | O_NOFOLLOW`).
pub fn readlink_fd(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for `buf.len()` bytes; "" names the link itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = cvt_long(n as libc::c_long)? as usize;
    buf.truncate(n);
    Ok(buf)
}

/// Writes all of `data` to the file at `path` (used for `/proc/self/{uid,gid}_map`).
pub fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    let fd = open(path, libc::O_WRONLY)?;
    // SAFETY: `data` is readable for `data.len()` bytes; `fd` is open.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    let n = cvt_long(n as libc::c_long)? as usize;
    if n != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// Writes all of `data` to `fd`, retrying short writes and EINTR.
pub fn write_all(fd: &impl AsRawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is readable for its length; a bad descriptor is reported as an error.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        match cvt_long(n as libc::c_long) {
            Ok(n) => data = &data[n as usize..],
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `prctl(2)` with one argument.
pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used by the helper take integer arguments only.
    cvt(unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
    .map(drop)
}

/// Writes a whole message to stderr in one `write(2)` (no locks, no buffering).
pub fn write_stderr(msg: &[u8]) {
    // SAFETY: `msg` is readable for its length; a failed write to stderr is ignored as there
    // is nowhere else to report it.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

/// `/proc/self/fd/N` for `fd`, formatted without allocating (pid 1 avoids touching new heap
/// pages, each a copy-on-write fault after the clone).
pub fn proc_self_fd(fd: &OwnedFd) -> ProcFdPath {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    let mut buf = [0u8; 32];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.as_raw_fd().unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[PREFIX.len() + i] = *d;
    }
    ProcFdPath(buf)
}

/// A NUL-terminated `/proc/self/fd/N` in a fixed buffer (see [`proc_self_fd`]).
#[derive(Debug)]
pub struct ProcFdPath([u8; 32]);

impl ProcFdPath {
    pub fn as_c_str(&self) -> &CStr {
        // The buffer is zero-filled past the digits: 14 + at most 10 bytes, so a NUL follows.
        CStr::from_bytes_until_nul(&self.0).unwrap_or(c"")
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

    #[test]
    fn proc_self_fd_paths() {
        for n in [0, 7, 10, 123, i32::MAX] {
            // SAFETY: the descriptor is never used; `into_raw_fd` releases it unclosed.
            let fd = unsafe { OwnedFd::from_raw_fd(n) };
            let path = super::proc_self_fd(&fd);
            assert_eq!(
                path.as_c_str().to_str().unwrap(),
                format!("/proc/self/fd/{n}")
            );
            let _ = fd.into_raw_fd();
        }
    }

    #[test]
    fn read_all_reads_to_the_end_and_refuses_more_than_max() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (reader, writer) = std::io::pipe().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let feeder = std::thread::spawn(move || {
            let mut writer = writer;
            writer.write_all(&sent).unwrap();
        });
        let read = super::read_all(reader.as_raw_fd(), data.len()).unwrap();
        feeder.join().unwrap();
        assert_eq!(read, data);
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"0123456789").unwrap();
        drop(writer);
        let err = super::read_all(reader.as_raw_fd(), 9).unwrap_err();
        assert_eq!(err.to_string(), "the spec is larger than 9 bytes");
    }
}
