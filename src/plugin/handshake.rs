//! The go-plugin handshake: magic cookie check, a private unix socket, and the one line on stdout
//! that tells spire-server where to dial.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const COOKIE_KEY: &str = "KeyManager";
pub const COOKIE_VALUE: &str = "KeyManager";

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
pub struct SocketDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl SocketDir {
    /// Creates the private directory under `base` (`PLUGIN_UNIX_SOCKET_DIR`, else `TMPDIR`,
    /// else `/tmp`). Falls back to `/tmp` when the socket path would not fit in `sun_path`.
    pub fn create(base: Option<&Path>) -> std::io::Result<SocketDir> {
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
        let template = base.join("azkv-XXXXXX");
        let c = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mut raw = c.into_bytes_with_nul();
        // mkdtemp creates the directory with mode 0700, atomically and with a unique name.
        let p = unsafe { libc::mkdtemp(raw.as_mut_ptr() as *mut libc::c_char) };
        if p.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        raw.pop();
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
        let socket = dir.join("plugin.sock");
        Ok(SocketDir { dir, socket })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the socket and the directory (also done on drop).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `CORE|APP|NETWORK|ADDR|PROTOCOL|` exactly as a Go SDK plugin prints it on Linux.
pub fn handshake_line(socket: &Path) -> String {
    format!("1|1|unix|{}|grpc|\n", socket.display())
}

/// Writes the handshake line to stdout and flushes. Nothing else is ever written to stdout.
pub fn announce(socket: &Path) -> std::io::Result<()> {
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
    fn line_format() {
        assert_eq!(
            handshake_line(Path::new("/tmp/azkv-abc/plugin.sock")),
            "1|1|unix|/tmp/azkv-abc/plugin.sock|grpc|\n"
        );
    }
}
