//! This server's identifier: `key_identifier_value`, or a UUID kept in `key_identifier_file`.
//!
//! The file is trusted only when it looks like one this plugin (or its operator) wrote: it is
//! opened without following a symbolic link, and must be a regular file owned by the effective
//! uid, not writable by group or others, and at most 1 KiB. Anything else fails Configure with
//! the path and the reason, rather than adopting an id another user could have planted.
//!
//! A missing file is created without ever replacing one: the id goes to a temp file (mode 0600,
//! fsync) that is then hard-linked to the final name, which fails if the name exists. Two
//! processes starting at once on one path therefore end with one id (the loser reads the
//! winner's), and a crash never leaves a half-written id that would orphan every key.
//! Surrounding whitespace (a trailing newline from an editor) is accepted on read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::PluginError;

/// Largest accepted server id file: a UUID and some whitespace need far less.
const MAX_FILE_SIZE: u64 = 1024;

/// Rounds of read-then-create: the second read finds the file a racing process linked.
const ATTEMPTS: usize = 3;

/// Reads the server id from `path`, creating the file with a new UUIDv4 when it does not exist.
/// Returns the canonical lowercase UUID and whether it was newly created.
pub(crate) fn load_or_create(path: &Path) -> Result<(String, bool), PluginError> {
    for _ in 0..ATTEMPTS {
        if let Some(id) = read_existing(path)? {
            return Ok((id, false));
        }
        let id = crate::random::uuid_v4("a server id")?
            .hyphenated()
            .to_string();
        match create_new(path, id.as_bytes()) {
            Ok(()) => return Ok((id, true)),
            // Another process created it first: use its id (read on the next round).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(PluginError::internal(format!(
                    "failed to persist server ID on path: {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Err(read_error(
        path,
        "the file was created and removed again repeatedly while starting",
    ))
}

fn read_error(path: &Path, reason: impl std::fmt::Display) -> PluginError {
    path_error("read", path, reason)
}

/// `failed to <what> server ID from path: <path>: <reason>`.
fn path_error(what: &str, path: &Path, reason: impl std::fmt::Display) -> PluginError {
    let path = path.display();
    PluginError::internal(format!(
        "failed to {what} server ID from path: {path}: {reason}"
    ))
}

/// The id in `path`, or `None` when the file does not exist.
fn read_existing(path: &Path) -> Result<Option<String>, PluginError> {
    // O_NOFOLLOW: a symbolic link is refused, not followed. O_NONBLOCK: opening a FIFO must
    // not wait for a writer (it is refused below); it changes nothing for a regular file.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(read_error(
                path,
                "it is a symbolic link; point key_identifier_file at the file itself",
            ))
        }
        Err(e) => return Err(read_error(path, e)),
    };
    let bytes = read_checked(path, file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| path_error("parse", path, "content is not UTF-8 text"))?;
    let id = uuid::Uuid::parse_str(text.trim()).map_err(|e| path_error("parse", path, e))?;
    Ok(Some(id.hyphenated().to_string()))
}

/// The content of the opened file, once its type, owner, mode and size pass.
fn read_checked(path: &Path, mut file: File) -> Result<Vec<u8>, PluginError> {
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(read_error(
            path,
            format!("it is {what}, not a regular file"),
        ));
    }
    let (uid, euid, mode) = (
        meta.uid(),
        crate::sys::effective_uid(),
        meta.mode() & 0o7777,
    );
    if uid != euid {
        return Err(read_error(
            path,
            format!("it is owned by uid {uid}, not by the plugin's effective uid {euid}"),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(read_error(
            path,
            format!("it is writable by group or others (mode {mode:04o}); restrict it to 0600"),
        ));
    }
    let too_big = |len: u64| {
        read_error(
            path,
            format!("it is {len} bytes long; a server id file holds at most {MAX_FILE_SIZE}"),
        )
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_big(meta.len()));
    }
    // Read one byte past the limit, in case the file grew after the check.
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(path, e))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Creates `path` holding `content`, failing with `AlreadyExists` if the name exists: the
/// content is written and synced under a temp name first, then hard-linked into place, so the
/// final name never shows a partial id and an existing file is never replaced.
fn create_new(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("directory {} does not exist", dir.display()),
        ));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        crate::random::uuid_v4("a temporary file name")?.simple()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        // link(2) never replaces an existing name, unlike rename(2).
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        // Make the new name durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("azkv-sid-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a file with mode 0600 whatever the umask.
    fn write_private(p: &std::path::Path, content: &str) {
        std::fs::write(p, content).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn creates_a_private_file_once() {
        let d = temp_dir();
        let p = d.join("server_id");
        let (id, created) = load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), id);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(again, id);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }

    /// No /dev/urandom in the container: an Internal error saying so, no file, no panic.
    #[test]
    fn without_randomness_fails_with_a_clear_error() {
        let d = temp_dir();
        let p = d.join("server_id");
        let _g = crate::random::testing::fail_on_this_thread();
        let e = load_or_create(&p).unwrap_err();
        assert_eq!(e.code, crate::error::Code::Internal);
        assert!(
            e.message
                .starts_with("failed to get random bytes for a server id: ")
                && e.message.ends_with("is /dev/urandom available?"),
            "{}",
            e.message
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }

    #[test]
    fn trims_whitespace_and_canonicalizes() {
        let d = temp_dir();
        let p = d.join("id");
        write_private(&p, "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE\n");
        assert_eq!(
            load_or_create(&p).unwrap().0,
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
    }

    #[test]
    fn clear_errors() {
        let d = temp_dir();
        let p = d.join("id");
        write_private(&p, "not-a-uuid");
        let e = load_or_create(&p).unwrap_err();
        assert!(
            e.message.starts_with("failed to parse server ID from path"),
            "{e}"
        );
        let missing_dir = d.join("nope").join("id");
        let e = load_or_create(&missing_dir).unwrap_err();
        assert!(
            e.message.starts_with("failed to persist server ID on path"),
            "{e}"
        );
        assert!(e.message.contains("does not exist"), "{e}");
        let e = load_or_create(&d).unwrap_err(); // a directory
        assert!(
            e.message.starts_with("failed to read server ID from path"),
            "{e}"
        );
    }

    #[test]
    fn racing_starts_on_one_path_agree_on_one_id() {
        // Several processes (here threads) configured with one fresh path at once: every one
        // must end with the same id, and exactly one of them created it.
        for _ in 0..20 {
            let d = temp_dir();
            let p = d.join("server_id");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (p, barrier) = (p.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        load_or_create(&p).unwrap()
                    })
                })
                .collect();
            let results: Vec<(String, bool)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            let on_disk = std::fs::read_to_string(&p).unwrap();
            for (id, _) in &results {
                assert_eq!(id, &on_disk, "{results:?}");
            }
            assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
            // No temp files left behind.
            assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// Asserts that `path` is refused with a read error naming it and `reason`.
    fn assert_refused(path: &std::path::Path, reason: &str) {
        let e = load_or_create(path).unwrap_err();
        assert!(
            e.message.starts_with("failed to read server ID from path"),
            "{e}"
        );
        assert!(
            e.message.contains(&path.display().to_string()),
            "{e} does not name the path"
        );
        assert!(e.message.contains(reason), "{e} does not say {reason:?}");
    }

    #[test]
    fn untrustworthy_files_are_refused_with_the_reason() {
        const ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let d = temp_dir();
        let good = d.join("good");
        write_private(&good, ID);
        assert_eq!(load_or_create(&good).unwrap(), (ID.to_string(), false));

        // A symbolic link, even to a good file.
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert_refused(&link, "symbolic link");

        // A directory.
        let dir = d.join("dir");
        std::fs::create_dir(&dir).unwrap();
        assert_refused(&dir, "a directory, not a regular file");

        // A FIFO: refused at once, without waiting for a writer.
        let fifo = d.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert_refused(&fifo, "a FIFO, not a regular file");

        // Writable by others.
        let open = d.join("open");
        std::fs::write(&open, ID).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_refused(&open, "writable by group or others (mode 0666)");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert_refused(&open, "writable by group or others (mode 0620)");

        // Larger than 1 KiB, even though its trimmed content is a valid id.
        let big = d.join("big");
        write_private(&big, &format!("{ID}{}", " ".repeat(2000)));
        assert_refused(&big, "2036 bytes long; a server id file holds at most 1024");

        // Owned by another user (the tests run as root, which may give files away).
        // SAFETY: geteuid has no preconditions and cannot fail.
        if crate::sys::effective_uid() == 0 {
            let foreign = d.join("foreign");
            write_private(&foreign, ID);
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            assert_refused(
                &foreign,
                "owned by uid 65534, not by the plugin's effective uid 0",
            );
        } else {
            eprintln!("not root: the foreign-owner case needs chown and is skipped");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
