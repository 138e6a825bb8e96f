//! The go-plugin handshake: magic cookie check, a private unix socket, and the one line on stdout
//! that tells spire-server where to dial.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const COOKIE_KEY: &str = "KeyManager";
pub(crate) const COOKIE_VALUE: &str = "KeyManager";

/// What a person running the binary by hand sees.
pub const NOT_A_PROGRAM: &str =
    "This binary is a plugin. These are not meant to be executed directly.\n\
Please execute the program that consumes these plugins, which will\n\
load any plugins automatically.\n\
(azure_key_vault: a SPIRE server KeyManager plugin; configure it in spire-server's\n\
server.conf with plugin_cmd.)";

/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

pub fn cookie_ok(value: Option<&str>) -> bool {
    value == Some(COOKIE_VALUE)
}

/// A 0700 directory holding the plugin's socket, removed (with the socket) on drop.
pub(crate) struct SocketDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl SocketDir {
    /// Creates the private directory under `base` (`PLUGIN_UNIX_SOCKET_DIR`, else `TMPDIR`,
    /// else `/tmp`). Falls back to `/tmp` when the socket path would not fit in `sun_path`.
    pub(crate) fn create(base: Option<&Path>) -> std::io::Result<SocketDir> {
        let default = std::env::temp_dir();
        let base = base.map(Path::to_path_buf).unwrap_or(default);
        match Self::create_in(&base) {
            Ok(d) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput && base != Path::new("/tmp") => {
                Self::create_in(Path::new("/tmp"))
            }
            Err(e) => Err(e),
        }
    }

    fn create_in(base: &Path) -> std::io::Result<SocketDir> {
        // "azkv-XXXXXX/plugin.sock" adds 23 bytes to the base.
        if base.as_os_str().len() + 24 > SUN_PATH_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        let dir = crate::sys::make_private_dir(&base.join("azkv-XXXXXX"))?;
        let socket = dir.join("plugin.sock");
        Ok(SocketDir { dir, socket })
    }

    pub(crate) fn socket_path(&self) -> &Path {
        &self.socket
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the socket to `group` (`PLUGIN_UNIX_SOCKET_GROUP`, a name or a numeric id), as
    /// go-plugin does: the socket becomes group-owned with mode 0660, and the private directory
    /// group-owned with mode 0710 so members can reach the socket but not list the directory.
    /// Call once the socket exists, before the handshake line.
    pub(crate) fn share_with_group(&self, group: &str) -> std::io::Result<()> {
        let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let gid = resolve_group(group, &etc_group).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("unknown group {group:?} in PLUGIN_UNIX_SOCKET_GROUP"),
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(&self.dir, 0o710), (&self.socket, 0o660)] {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Removes the socket and the directory (also done on drop).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A group id from a numeric id or a name in `/etc/group` text (read directly: name-service
/// lookups are not available to a statically linked binary).
fn resolve_group(group: &str, etc_group: &str) -> Option<u32> {
    let group = group.trim();
    if group.is_empty() {
        return None;
    }
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let gid = fields.nth(1)?;
        (name == group).then(|| gid.parse().ok()).flatten()
    })
}

/// `CORE|APP|NETWORK|ADDR|PROTOCOL|` exactly as a Go SDK plugin prints it on Linux.
pub(crate) fn handshake_line(socket: &Path) -> String {
    format!("1|1|unix|{}|grpc|\n", socket.display())
}

/// Writes the handshake line to stdout and flushes. Nothing else is ever written to stdout.
pub(crate) fn announce(socket: &Path) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(handshake_line(socket).as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cookie() {
        assert!(cookie_ok(Some("KeyManager")));
        assert!(!cookie_ok(Some("keymanager")));
        assert!(!cookie_ok(None));
    }

    #[test]
    fn private_dir_is_0700_and_removed() {
        let d = SocketDir::create(None).unwrap();
        let mode = std::fs::metadata(d.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(d.socket_path().as_os_str().len() <= SUN_PATH_MAX);
        let dir = d.dir().to_path_buf();
        drop(d);
        assert!(!dir.exists());
    }

    #[test]
    fn long_base_falls_back_to_tmp() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let d = SocketDir::create(Some(&long)).unwrap();
        assert!(d.dir().starts_with("/tmp"));
        assert!(d.socket_path().as_os_str().len() <= SUN_PATH_MAX);
    }

    #[test]
    fn groups_resolve_by_id_or_name() {
        let etc = "root:x:0:\nspire:x:1234:alice,bob\n# odd line\nbroken\n";
        assert_eq!(resolve_group("1234", etc), Some(1234));
        assert_eq!(resolve_group("spire", etc), Some(1234));
        assert_eq!(resolve_group("root", etc), Some(0));
        assert_eq!(resolve_group("nobody-here", etc), None);
        assert_eq!(resolve_group("broken", etc), None);
        assert_eq!(resolve_group("", etc), None);
    }

    #[test]
    fn shared_socket_is_group_owned_0660_in_a_0710_dir() {
        use std::os::unix::fs::MetadataExt;
        let d = SocketDir::create(None).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(d.socket_path()).unwrap();
        // Our own primary group: chown to it needs no privilege.
        let gid = crate::sys::group_id();
        d.share_with_group(&gid.to_string()).unwrap();
        let dir = std::fs::metadata(d.dir()).unwrap();
        let sock = std::fs::metadata(d.socket_path()).unwrap();
        assert_eq!((dir.mode() & 0o777, dir.gid()), (0o710, gid));
        assert_eq!((sock.mode() & 0o777, sock.gid()), (0o660, gid));
        assert!(d.share_with_group("no-such-group-azkv").is_err());
    }

    #[test]
    fn line_format() {
        assert_eq!(
            handshake_line(Path::new("/tmp/azkv-abc/plugin.sock")),
            "1|1|unix|/tmp/azkv-abc/plugin.sock|grpc|\n"
        );
    }
}
