//! ECDSA verification on a prehashed digest with fixed-base tables: the generator's table is
//! built once per process and the public key's on its first check (once per cache entry), so
//! a check is one table addition per 4 bits of each scalar, with no doubling.
//!
//! Why: the p256/p384 crates compute `u1·G + u2·Q` as two constant-time scalar
//! multiplications (4 doublings and a 16-way masked table scan per 4 bits, tables rebuilt on
//! every call). Everything in a verification is public (key, digest, signature), so neither
//! constant time nor per-call tables buy anything there, and SignData pays for them on every
//! signature. The curve arithmetic (point addition, normalization, scalar field) stays the
//! crates'; only the order of additions is ours. The equation checked is the one in the
//! crates' `verify_prehash`: with `z` the digest reduced as bits2field, `w = s⁻¹`,
//! the signature is accepted iff `R = (z·w)·G + (r·w)·Q` is not the identity and `x(R) mod n
//! = r`. The tests compare the result with the crates' own verification.

use p256::elliptic_curve::generic_array::typenum::Unsigned;
use p256::elliptic_curve::group::{Curve, Group as _};
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::{CurveArithmetic, FieldBytes, FieldBytesSize};

/// Entries per table row: every value of a 4-bit window.
const ROW: usize = 16;

/// `rows[i][j] = j · 16^i · P` for every 4-bit window `i` of a scalar, in affine form (mixed
/// additions are the cheapest the crates offer).
pub(super) struct Table<C: CurveArithmetic> {
    rows: Vec<[C::AffinePoint; ROW]>,
}

impl<C: CurveArithmetic> std::fmt::Debug for Table<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl<C: CurveArithmetic> Table<C> {
    /// The table of `point` (a thousand point additions and normalizations: once per key, not
    /// per signature).
    pub(super) fn new(point: C::ProjectivePoint) -> Self {
        let windows = 2 * FieldBytesSize::<C>::USIZE;
        let mut rows = Vec::with_capacity(windows);
        let mut base = point;
        for _ in 0..windows {
            let mut row = [C::ProjectivePoint::identity(); ROW];
            let mut acc = C::ProjectivePoint::identity();
            for entry in row.iter_mut() {
                *entry = acc;
                acc += base;
            }
            // acc = 16 · base: the next window's base.
            base = acc;
            let mut affine = [C::AffinePoint::default(); ROW];
            C::ProjectivePoint::batch_normalize(&row, &mut affine);
            rows.push(affine);
        }
        Table { rows }
    }

    /// `k · P` for the big-endian scalar `k` (variable time: only for public scalars).
    fn mul(&self, k: &FieldBytes<C>) -> C::ProjectivePoint {
        let mut sum = C::ProjectivePoint::identity();
        // Window 2m is the low nibble of the m-th byte from the end, 2m+1 its high nibble.
        for (m, byte) in k.iter().rev().enumerate() {
            for (i, nibble) in [(2 * m, byte & 0xf), (2 * m + 1, byte >> 4)] {
                if nibble != 0 {
                    if let Some(row) = self.rows.get(i) {
                        sum += row[usize::from(nibble)];
                    }
                }
            }
        }
        sum
    }
}

/// The digest as a field-size integer, as ECDSA's bits2field (SEC 1 §4.1.4): at least half the
/// field size, left-padded when shorter, its leftmost bytes when longer.
fn bits2field<C: CurveArithmetic>(digest: &[u8]) -> Option<FieldBytes<C>> {
    let size = FieldBytesSize::<C>::USIZE;
    if digest.len() < size / 2 {
        return None;
    }
    let mut out = FieldBytes::<C>::default();
    if digest.len() >= size {
        out.copy_from_slice(&digest[..size]);
    } else {
        out[size - digest.len()..].copy_from_slice(digest);
    }
    Some(out)
}

/// Whether `(r, s)` (both non-zero, below the group order: the signature parser's checks) is
/// a signature of `digest` by the key whose table is `key`; `generator` is the curve
/// generator's table.
pub(super) fn verify_prehash<C: CurveArithmetic>(
    generator: &Table<C>,
    key: &Table<C>,
    digest: &[u8],
    r: &C::Scalar,
    s: &C::Scalar,
) -> bool {
    let Some(z) = bits2field::<C>(digest) else {
        return false;
    };
    let z = <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&z);
    let Some(w) = Option::<C::Scalar>::from(Invert::invert_vartime(s)) else {
        return false;
    };
    let u1: FieldBytes<C> = (z * w).into();
    let u2: FieldBytes<C> = (*r * w).into();
    let point = generator.mul(&u1) + key.mul(&u2);
    if bool::from(point.is_identity()) {
        return false;
    }
    let x = point.to_affine().x();
    <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&x) == *r
}
