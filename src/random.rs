//! Every random value the plugin makes (key names, server ids, claim nonces, client assertion
//! ids) comes from here, as a `Result`. Reading the system's randomness can fail: in the static
//! glibc build the `getrandom` crate finds no `getrandom` symbol and reads /dev/urandom instead,
//! which a container without /dev lacks; `uuid::Uuid::new_v4` would panic there.

use crate::error::PluginError;

/// The system could not give random bytes for `purpose`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failed to get random bytes for {purpose}: {cause}; is /dev/urandom available?")]
pub struct RandomError {
    purpose: &'static str,
    cause: String,
}

impl From<RandomError> for PluginError {
    fn from(e: RandomError) -> Self {
        PluginError::internal(e.to_string())
    }
}

impl From<RandomError> for std::io::Error {
    fn from(e: RandomError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Fills `buf` from the system's randomness; `purpose` names the value in the error.
pub(crate) fn fill(buf: &mut [u8], purpose: &'static str) -> Result<(), RandomError> {
    #[cfg(test)]
    if testing::failing() {
        return Err(RandomError {
            purpose,
            cause: "No such file or directory (os error 2)".into(),
        });
    }
    getrandom::fill(buf).map_err(|e| RandomError {
        purpose,
        cause: e.to_string(),
    })
}

/// A random (version 4) UUID.
pub(crate) fn uuid_v4(purpose: &'static str) -> Result<uuid::Uuid, RandomError> {
    let mut b = [0u8; 16];
    fill(&mut b, purpose)?;
    Ok(uuid::Builder::from_random_bytes(b).into_uuid())
}

/// Makes `fill` fail on the current thread, as it does with no /dev/urandom.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;

    thread_local! {
        static FAIL: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn failing() -> bool {
        FAIL.with(Cell::get)
    }

    /// `fill` fails on this thread until the guard is dropped.
    pub(crate) fn fail_on_this_thread() -> Guard {
        FAIL.with(|f| f.set(true));
        Guard
    }

    pub(crate) struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            FAIL.with(|f| f.set(false));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = super::uuid_v4("a test").unwrap();
        let b = super::uuid_v4("a test").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.get_version(), Some(uuid::Version::Random));
    }

    #[test]
    fn failure_names_the_purpose_and_dev_urandom() {
        let _g = super::testing::fail_on_this_thread();
        let e = super::uuid_v4("a key name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to get random bytes for a key name: No such file or directory (os error 2); is /dev/urandom available?"
        );
    }
}
