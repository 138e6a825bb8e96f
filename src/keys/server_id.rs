//! This server's identifier: `key_identifier_value`, or a UUID kept in `key_identifier_file`.
//!
//! The file is created atomically (temp file with mode 0600, fsync, rename, fsync of the
//! directory), so a crash never leaves a half-written id that would orphan every key.
//! Surrounding whitespace (a trailing newline from an editor) is accepted on read.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::PluginError;

/// Reads the server id from `path`, creating the file with a new UUIDv4 when it does not exist.
/// Returns the canonical lowercase UUID and whether it was newly created.
pub fn load_or_create(path: &Path) -> Result<(String, bool), PluginError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                PluginError::internal(format!(
                    "failed to parse server ID from path: {}: content is not UTF-8 text",
                    path.display()
                ))
            })?;
            let id = uuid::Uuid::parse_str(text.trim()).map_err(|e| {
                PluginError::internal(format!(
                    "failed to parse server ID from path: {}: {e}",
                    path.display()
                ))
            })?;
            Ok((id.hyphenated().to_string(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = crate::random::uuid_v4("a server id")?
                .hyphenated()
                .to_string();
            write_atomically(path, id.as_bytes()).map_err(|e| {
                PluginError::internal(format!(
                    "failed to persist server ID on path: {}: {e}",
                    path.display()
                ))
            })?;
            Ok((id, true))
        }
        Err(e) => Err(PluginError::internal(format!(
            "failed to read server ID from path: {}: {e}",
            path.display()
        ))),
    }
}

fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
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
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
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
        std::fs::write(&p, "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE\n").unwrap();
        assert_eq!(
            load_or_create(&p).unwrap().0,
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
    }

    #[test]
    fn clear_errors() {
        let d = temp_dir();
        let p = d.join("id");
        std::fs::write(&p, "not-a-uuid").unwrap();
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
}
