//! A string that must never be printed: client secrets, client assertions, federated tokens and
//! access tokens. `Debug` and `Display` show a fixed placeholder, so a secret that ends up in a log
//! line or an error message by accident leaks nothing. Its buffer is wiped when it is dropped, so
//! freed memory does not keep it either.

use std::fmt;

use zeroize::Zeroize;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        // Volatile writes over the whole capacity, which the optimizer cannot drop.
        self.0.zeroize();
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that has to send it (an HTTP header or form field).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Test support: a global allocator for the unit tests that can tell whether a secret was still
/// in a block when the block was freed.
#[cfg(test)]
#[allow(unsafe_code)] // a test helper: a GlobalAlloc is unsafe by definition
pub(crate) mod freed {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Hands out zero-filled blocks (so that every byte of a block is initialized when it is
    /// inspected) and, on a thread running `blocks_holding`, looks into each block it frees.
    struct Inspecting;

    #[global_allocator]
    static ALLOCATOR: Inspecting = Inspecting;

    thread_local! {
        /// The bytes searched for (address, length); length 0 when not inspecting.
        static PATTERN: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
        /// Freed blocks that still held the pattern.
        static FOUND: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: every call is forwarded to the system allocator with the same layout; `dealloc`
    // only reads the block before giving it back, and allocates nothing.
    unsafe impl GlobalAlloc for Inspecting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            System.alloc_zeroed(layout)
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            System.alloc_zeroed(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = PATTERN.try_with(|p| {
                let (addr, len) = p.get();
                if len == 0 || layout.size() < len {
                    return;
                }
                // SAFETY: the block is live until the call below, was zero-filled when
                // allocated (so fully initialized), and nothing else uses it any more.
                let block = std::slice::from_raw_parts(ptr, layout.size());
                // SAFETY: `blocks_holding` keeps the pattern borrowed while it is set.
                let pattern = std::slice::from_raw_parts(addr as *const u8, len);
                if block.windows(len).any(|w| w == pattern) {
                    let _ = FOUND.try_with(|f| f.set(f.get() + 1));
                }
            });
            System.dealloc(ptr, layout)
        }
    }

    /// Runs `f` and counts the heap blocks this thread freed meanwhile that still held
    /// `pattern` (which must not be empty, and should be long enough to be unique).
    pub(crate) fn blocks_holding<R>(pattern: &[u8], f: impl FnOnce() -> R) -> (R, usize) {
        assert!(!pattern.is_empty());
        FOUND.with(|c| c.set(0));
        PATTERN.with(|p| p.set((pattern.as_ptr() as usize, pattern.len())));
        let result = f();
        PATTERN.with(|p| p.set((0, 0)));
        (result, FOUND.with(Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_secret_is_wiped() {
        const VALUE: &str = "hunter2-super-secret-3f9a1c";
        // The detector sees an ordinary string that is freed with its content...
        let ((), found) = freed::blocks_holding(VALUE.as_bytes(), || drop(VALUE.to_string()));
        assert_eq!(found, 1);
        // ... and no trace of a secret, its clone, or one built from a String.
        let ((), found) = freed::blocks_holding(VALUE.as_bytes(), || {
            let s = Secret::new(VALUE);
            let copy = s.clone();
            let from_string = Secret::new(String::from(VALUE));
            assert_eq!(copy.expose(), VALUE);
            drop((s, copy, from_string));
        });
        assert_eq!(found, 0, "a dropped Secret left its value in freed memory");
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-super-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-super-secret");
    }
}
