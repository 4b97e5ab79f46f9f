//! Instruction-set tiers: what a kernel needs, what this CPU has, and the `RESEDGE_ISA` override.
//!
//! Two chains share one enum: x86_64 (AVX2 + FMA < AVX-512 < AVX-512 VNNI) and AArch64 (NEON < dotprod <
//! i8mm); `Scalar` runs everywhere. Resolution order (STYLE 2.2): the environment override (std only), else
//! runtime detection (std: `is_x86_feature_detected!` / `is_aarch64_feature_detected!`), else what the
//! target was compiled for (no_std: `cfg!(target_feature)`; NEON is part of every aarch64 target except the
//! softfloat one). A caller can always pass a lower tier in `PlanOptions::max_isa`.

/// Instruction-set tier a kernel needs. Tiers of one architecture are ordered (each implies the ones below
/// it); tiers of different architectures are unrelated, and `Scalar` runs everywhere. [`Isa::allows`] never
/// lets one architecture's tier admit another's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    /// AArch64 Advanced SIMD (ARMv8.0: Cortex-A53/A57/A72).
    Neon,
    /// NEON + `SDOT` (ARMv8.2 dotprod: Cortex-A55/A76/A78).
    NeonDot,
    /// NEON + dotprod + `SMMLA` (ARMv8.6 i8mm: Neoverse V1/N2, Cortex-A710 and later).
    NeonI8mm,
    /// x86_64 AVX2 + FMA (Haswell, Zen 1 and later).
    Avx2,
    /// x86_64 AVX-512 F/BW/VL/DQ (Skylake-SP, Zen 4 and later).
    Avx512,
    /// AVX-512 + VNNI (`VPDPBUSD`: Cascade Lake, Ice Lake, Zen 4 and later).
    Avx512Vnni,
}

/// The CPU family a tier belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Any,
    Aarch64,
    X86_64,
}

impl Arch {
    /// The architecture this build targets (`Any` for one with no SIMD tiers).
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else if cfg!(target_arch = "x86_64") {
        Arch::X86_64
    } else {
        Arch::Any
    };

    /// Whether tier `isa` can exist on this architecture (its own chain, or scalar).
    pub fn runs(self, isa: Isa) -> bool {
        isa.arch() == Arch::Any || isa.arch() == self
    }
}

impl Isa {
    /// Every tier, lowest first.
    pub const ALL: &'static [Isa] =
        &[Isa::Scalar, Isa::Neon, Isa::NeonDot, Isa::NeonI8mm, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The name used by `RESEDGE_ISA`, logs and `resedge inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::NeonDot => "dotprod",
            Isa::NeonI8mm => "i8mm",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name() == name)
    }

    pub fn arch(self) -> Arch {
        match self {
            Isa::Scalar => Arch::Any,
            Isa::Neon | Isa::NeonDot | Isa::NeonI8mm => Arch::Aarch64,
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => Arch::X86_64,
        }
    }

    /// True if a kernel needing `need` may run where `self` is the highest allowed tier.
    pub fn allows(self, need: Isa) -> bool {
        need == Isa::Scalar || (need.arch() == self.arch() && need <= self)
    }

    /// The best tier this CPU runs (runtime detection with std, the compile-time target without).
    pub fn detect() -> Isa {
        detect()
    }

    /// The tier plans use by default: `RESEDGE_ISA` if set (capped at [`Isa::detect`], with a warning when it
    /// asks for more or names no tier), else [`Isa::detect`].
    pub fn configured() -> Isa {
        let best = Isa::detect();
        #[cfg(feature = "std")]
        if let Ok(v) = std::env::var("RESEDGE_ISA") {
            return match Isa::from_name(v.trim()) {
                Some(want) if best.allows(want) => want,
                Some(want) => {
                    log::warn!("RESEDGE_ISA={v}: this CPU has no {} tier; using {}", want.name(), best.name());
                    best
                }
                None => {
                    let names: std::vec::Vec<_> =
                        Isa::ALL.iter().filter(|i| Arch::HOST.runs(**i)).map(|i| i.name()).collect();
                    log::warn!("RESEDGE_ISA={v} names no tier (one of {}); using {}", names.join("|"), best.name());
                    best
                }
            };
        }
        best
    }
}

/// Whether this CPU runs 512-bit vector instructions as two 256-bit halves: AMD Zen 4 (family 19h; Zen 3, the
/// same family, has no AVX-512). Its AVX-512 kernels then do per cycle what the AVX2 ones do, so plan-time
/// choices tuned for full-width AVX-512 (where Winograd starts to pay) follow the AVX2 ones instead. Read
/// from `cpuid`, so a machine always plans the same way; false off x86_64.
pub(crate) fn splits_512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__cpuid;
        let (vendor, id) = (__cpuid(0), __cpuid(1));
        // "AuthenticAMD"; the family is the base field plus the extended one when the base is 0xf.
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let base = (id.eax >> 8) & 0xf;
        let family = if base == 0xf { base + ((id.eax >> 20) & 0xff) } else { base };
        amd && family == 0x19
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX-512 VBMI (byte permutes across the whole register: Ice Lake, Zen 4 and later;
/// Cascade Lake's VNNI tier lacks it). Kernels that need it check at plan time, like [`splits_512`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_vbmi() -> bool {
    #[cfg(feature = "std")]
    return std::is_x86_feature_detected!("avx512vbmi");
    #[cfg(not(feature = "std"))]
    return cfg!(target_feature = "avx512vbmi");
}

#[cfg(all(target_arch = "aarch64", feature = "std"))]
fn detect() -> Isa {
    if std::arch::is_aarch64_feature_detected!("i8mm") && std::arch::is_aarch64_feature_detected!("dotprod") {
        Isa::NeonI8mm
    } else if std::arch::is_aarch64_feature_detected!("dotprod") {
        Isa::NeonDot
    } else if std::arch::is_aarch64_feature_detected!("neon") {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

#[cfg(all(target_arch = "aarch64", not(feature = "std")))]
fn detect() -> Isa {
    if cfg!(all(target_feature = "i8mm", target_feature = "dotprod")) {
        Isa::NeonI8mm
    } else if cfg!(target_feature = "dotprod") {
        Isa::NeonDot
    } else if cfg!(target_feature = "neon") {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    // Runtime detection with std, the compile-time target features without.
    #[cfg(feature = "std")]
    macro_rules! has {
        ($($f:tt),*) => { true $(&& std::is_x86_feature_detected!($f))* };
    }
    #[cfg(not(feature = "std"))]
    macro_rules! has {
        ($($f:tt),*) => { true $(&& cfg!(target_feature = $f))* };
    }
    // POPCNT came before AVX2 in every x86 line; kernels count lane masks with it.
    let avx2 = has!("avx2", "fma", "popcnt");
    let avx512 = avx2 && has!("avx512f", "avx512bw", "avx512vl", "avx512dq");
    if avx512 && has!("avx512vnni") {
        Isa::Avx512Vnni
    } else if avx512 {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
fn detect() -> Isa {
    Isa::Scalar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_tiers_nest() {
        for &i in Isa::ALL {
            assert_eq!(Isa::from_name(i.name()), Some(i));
            assert!(i.allows(Isa::Scalar) && i.allows(i));
        }
        assert!(Isa::NeonI8mm.allows(Isa::Neon) && !Isa::Neon.allows(Isa::NeonDot));
        assert!(!Isa::Scalar.allows(Isa::Neon));
        assert!(Isa::Avx512Vnni.allows(Isa::Avx2) && !Isa::Avx2.allows(Isa::Avx512));
        assert!(!Isa::Avx512Vnni.allows(Isa::Neon) && !Isa::NeonI8mm.allows(Isa::Avx2));
        assert_eq!(Isa::from_name("avx9"), None);
    }
}
