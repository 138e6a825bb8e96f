//! xorshift64*: small, fast, deterministic; enough to spread test inputs (not for cryptography).
//! The bounded fuzz loops (`src/fuzz.rs`), the interleaving tests' steps and key names, and the
//! template garbage loop all draw from it, so a failing seed replays everywhere the same way.

/// A seeded pseudo-random generator; the same seed gives the same sequence.
pub struct Rng(u64);

impl Rng {
    /// A generator for one loop. `AZKV_FUZZ_SEED` (a number) shifts every loop to other
    /// inputs; without it runs are reproducible.
    pub fn new(seed: u64) -> Self {
        let extra = std::env::var("AZKV_FUZZ_SEED")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // A zero state would stay zero.
        Rng((seed ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15)).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Random bytes decoded lossily: reaches odd characters, replacement chars included.
    pub fn lossy_string(&mut self, max_len: usize) -> String {
        String::from_utf8_lossy(&self.bytes(max_len)).into_owned()
    }

    /// A string glued from `pieces`.
    pub fn soup(&mut self, pieces: &[&str], max_pieces: usize) -> String {
        let n = self.below(max_pieces + 1);
        (0..n).map(|_| *self.pick(pieces)).collect()
    }
}
