//! Activation memory: every value gets an offset in one arena. Values whose lifetimes (producing step to
//! last reading step) overlap never share bytes; the rest are packed greedily, largest first (the
//! TFLite "greedy by size" heuristic), at 64-byte alignment for SIMD loads.

use std::prelude::v1::*;

/// Alignment of every value in the arena.
pub const ALIGN: usize = 64;

/// A value to place: size in bytes and the inclusive step interval during which it must stay intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    fn overlaps(&self, o: &Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Offsets for `values` (same order) and the arena size. Sizes are rounded up to [`ALIGN`].
pub fn assign(values: &[Lifetime]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| (core::cmp::Reverse(values[i].bytes), i));
    let mut offsets = vec![0usize; values.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(values.len());
    let mut total = 0;
    for &i in &order {
        let size = values[i].bytes.next_multiple_of(ALIGN);
        // Conflicting neighbours sorted by offset; take the first gap that fits.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| values[j].overlaps(&values[i]))
            .map(|&j| (offsets[j], offsets[j] + values[j].bytes.next_multiple_of(ALIGN)))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (start, end) in busy {
            if at + size <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        total = total.max(at + size);
        placed.push(i);
    }
    (offsets, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_never_overlap_and_dead_ones_share() {
        let mut seed = 12345u64;
        for _ in 0..200 {
            let n = 1 + (seed % 30) as usize;
            let vals: Vec<Lifetime> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let first = (seed >> 33) as usize % 20;
                    let len = (seed >> 40) as usize % 5;
                    Lifetime { bytes: 1 + (seed >> 20) as usize % 5000, first, last: first + len }
                })
                .collect();
            let (off, total) = assign(&vals);
            for i in 0..n {
                assert_eq!(off[i] % ALIGN, 0);
                assert!(off[i] + vals[i].bytes <= total);
                for j in 0..i {
                    if vals[i].overlaps(&vals[j]) {
                        let (a, b) = (off[i]..off[i] + vals[i].bytes, off[j]..off[j] + vals[j].bytes);
                        assert!(a.end <= b.start || b.end <= a.start, "{i} {j} {vals:?} {off:?}");
                    }
                }
            }
        }
        // A chain a -> b -> c: a and c may share, so the arena is smaller than the sum.
        let chain = [
            Lifetime { bytes: 1000, first: 0, last: 1 },
            Lifetime { bytes: 1000, first: 1, last: 2 },
            Lifetime { bytes: 1000, first: 2, last: 3 },
        ];
        let (_, total) = assign(&chain);
        assert_eq!(total, 2 * 1024);
    }
}
