//! Every call into libc that needs `unsafe`, each behind a safe function with its SAFETY note.
//! The rest of the crate denies `unsafe_code` (see `lib.rs`).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Creates a fresh directory from `template` (ending in `XXXXXX`) with mode 0700, atomically
/// and under a unique name (`mkdtemp`).
pub(crate) fn make_private_dir(template: &Path) -> io::Result<PathBuf> {
    let c = CString::new(template.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut raw = c.into_bytes_with_nul();
    // SAFETY: `raw` is a NUL-terminated, writable buffer that outlives the call; mkdtemp
    // rewrites only the trailing XXXXXX in place.
    let p = unsafe { libc::mkdtemp(raw.as_mut_ptr().cast::<libc::c_char>()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    raw.pop();
    Ok(PathBuf::from(OsStr::from_bytes(&raw)))
}

/// The effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real group id.
#[cfg(test)]
pub(crate) fn group_id() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The parent's process id (1 or a subreaper's once the parent died).
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// The signals the plugin waits for on a thread of its own.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

/// Ignores SIGINT and blocks SIGTERM in the calling thread (and so in every thread started
/// later). Call before any thread exists.
pub(crate) fn ignore_sigint_and_block_sigterm() -> SignalSet {
    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset, which initializes it;
    // the set lives across all calls; signal/pthread_sigmask get valid arguments.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        SignalSet(set)
    }
}

impl SignalSet {
    /// Blocks until a signal of the set arrives; whether it was SIGTERM.
    pub fn wait_for_sigterm(&self) -> bool {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set was initialized by `ignore_sigint_and_block_sigterm`; `sig` is a
        // valid out-pointer.
        let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
        rc == 0 && sig == libc::SIGTERM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_unique_and_0700() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir();
        let a = make_private_dir(&base.join("azkv-sys-XXXXXX")).unwrap();
        let b = make_private_dir(&base.join("azkv-sys-XXXXXX")).unwrap();
        assert_ne!(a, b);
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
        assert!(make_private_dir(&base.join("no-such-dir-azkv/x-XXXXXX")).is_err());
    }
}
