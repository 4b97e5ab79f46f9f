//! The paper's model zoo: every net of He et al. 2015 built from the architecture descriptions in
//! `models/arch/*.toml`, with seeded Kaiming-random weights, so any of them can be planned, run and
//! benchmarked without trained weights. The training crate builds its nets from the same [`Arch`].

mod build;

pub use build::{build, build_int8, calibrate_minmax, random_input, torch_name, with_torch_weights};

use crate::error::{Error, Result};
use serde::Deserialize;
use std::prelude::v1::*;

/// Stem and stage layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// 7x7/2 conv + 3x3/2 max pool, four stages of 64/128/256/512 (x4 for bottlenecks), 224x224 input.
    Imagenet,
    /// 3x3 conv, three stages of 16/32/64 filters, 32x32 input.
    Cifar,
}

/// Residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Block {
    /// Two 3x3 convs (ResNet-18/34, CIFAR nets).
    Basic,
    /// 1x1, 3x3, 1x1 with 4x expansion (ResNet-50/101/152).
    Bottleneck,
}

/// Shortcut option (paper Sec. 3.3 and Table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Shortcut {
    /// Identity; where dimensions change, strided subsampling plus zero-padded channels.
    A,
    /// Identity; 1x1 projection only where dimensions change.
    B,
    /// 1x1 projection on every shortcut.
    C,
    /// No shortcut: the "plain" counterpart.
    #[serde(rename = "none")]
    None,
}

/// One architecture description (a `models/arch/*.toml` file).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    pub name: String,
    pub family: Family,
    pub block: Block,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    pub shortcut: Shortcut,
    pub classes: usize,
}

impl Arch {
    /// Input [C, H, W].
    pub fn input(&self) -> [usize; 3] {
        match self.family {
            Family::Imagenet => [3, 224, 224],
            Family::Cifar => [3, 32, 32],
        }
    }
    /// Parses a TOML description.
    pub fn from_toml(text: &str) -> Result<Arch> {
        let a: Arch = toml::from_str(text).map_err(|e| Error::Arch(format!("{e}")))?;
        let stages = match a.family {
            Family::Imagenet => 4,
            Family::Cifar => 3,
        };
        if a.layers.len() != stages || a.layers.contains(&0) || a.classes == 0 {
            return Err(Error::Arch(format!(
                "`{}`: {:?} family needs {stages} non-empty stages and classes > 0",
                a.name, a.family
            )));
        }
        Ok(a)
    }
}

macro_rules! archs {
    ($($file:literal),* $(,)?) => {
        /// The shipped descriptions, in display order.
        const ARCH_FILES: &[&str] = &[$(include_str!(concat!("../../models/arch/", $file, ".toml"))),*];
    };
}

archs!(
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "plain18",
    "plain34",
    "resnet34-a",
    "resnet34-c",
    "resnet50-c",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "resnet20-b",
    "resnet20-c",
);

/// Every architecture in the zoo.
pub fn list() -> Result<Vec<Arch>> {
    ARCH_FILES.iter().map(|t| Arch::from_toml(t)).collect()
}

/// The architecture called `name`.
pub fn arch(name: &str) -> Result<Arch> {
    list()?.into_iter().find(|a| a.name == name).ok_or_else(|| {
        let names: Vec<String> = list().map(|l| l.into_iter().map(|a| a.name).collect()).unwrap_or_default();
        Error::Arch(format!("unknown architecture `{name}` (known: {})", names.join(", ")))
    })
}

/// ImageNet-1k class names in the standard (ILSVRC-2012, torchvision) order, one per line.
pub const IMAGENET1K_LABELS: &str = include_str!("../../models/labels/imagenet1k.txt");
/// CIFAR-10 class names in the dataset's order, one per line.
pub const CIFAR10_LABELS: &str = include_str!("../../models/labels/cifar10.txt");

/// The class names a zoo net of `family` with `classes` outputs is labelled with: ImageNet-1k for 1000
/// ImageNet classes, CIFAR-10 for 10 CIFAR classes, none otherwise.
pub fn labels(family: Family, classes: usize) -> Vec<String> {
    let list = match (family, classes) {
        (Family::Imagenet, 1000) => IMAGENET1K_LABELS,
        (Family::Cifar, 10) => CIFAR10_LABELS,
        _ => return Vec::new(),
    };
    list.lines().map(str::to_owned).collect()
}
