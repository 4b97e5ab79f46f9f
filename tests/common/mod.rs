//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

/// SplitMix64: a tiny seeded generator, so every case is reproducible from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + (self.next() % ((hi - lo) as u64 + 1)) as i64
    }
    pub fn i32(&mut self, lo: i32, hi: i32) -> i32 {
        self.int(lo as i64, hi as i64) as i32
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform index in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn i8s(&mut self, len: usize, lo: i32, hi: i32) -> Vec<i8> {
        (0..len).map(|_| self.i32(lo, hi) as i8).collect()
    }
    pub fn f32s(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo as f64, hi as f64) as f32).collect()
    }
}

/// A file of the shared fixtures (`../shared/data`, or `$RESEDGE_SHARED/data`); asserts it exists.
pub fn shared_data(rel: &str) -> std::path::PathBuf {
    let root = std::env::var_os("RESEDGE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let p = root.join("data").join(rel);
    assert!(
        p.exists(),
        "{} is missing (the tests need ../shared beside the repository, or RESEDGE_SHARED)",
        p.display()
    );
    p
}
