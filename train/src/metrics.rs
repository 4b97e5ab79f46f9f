//! Per-epoch metrics and their CSV file (one header line, one row per epoch).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// What one epoch measured. Errors are fractions (0.1 = 10 %); test values are NaN when not evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    /// Error on the augmented training batches, in training mode (as the paper's curves).
    pub train_err: f64,
    pub test_loss: f64,
    pub test_err: f64,
    /// Training time of this epoch (excluding evaluation).
    pub train_s: f64,
    /// Wall time since the run started, summed over resumed runs.
    pub elapsed_s: f64,
    pub images_per_s: f64,
}

pub const HEADER: &str = "epoch,lr,train_loss,train_err,test_loss,test_err,train_s,elapsed_s,images_per_s";

impl EpochRow {
    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3},{:.1}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_err,
            self.test_loss,
            self.test_err,
            self.train_s,
            self.elapsed_s,
            self.images_per_s
        )
    }

    pub fn from_csv(line: &str) -> Result<EpochRow> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 9 {
            bail!("expected 9 fields, got {}: {line:?}", f.len());
        }
        let n = |i: usize| -> Result<f64> { f[i].parse::<f64>().with_context(|| format!("field {i} of {line:?}")) };
        Ok(EpochRow {
            epoch: f[0].parse().with_context(|| format!("epoch in {line:?}"))?,
            lr: n(1)?,
            train_loss: n(2)?,
            train_err: n(3)?,
            test_loss: n(4)?,
            test_err: n(5)?,
            train_s: n(6)?,
            elapsed_s: n(7)?,
            images_per_s: n(8)?,
        })
    }
}

/// Reads a metrics CSV.
pub fn read(path: &Path) -> Result<Vec<EpochRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim() == HEADER => {}
        other => bail!("{}: header {other:?} is not {HEADER:?}", path.display()),
    }
    lines.filter(|l| !l.trim().is_empty()).map(EpochRow::from_csv).collect()
}

/// Writes all rows (rewriting the file, so a resumed run drops rows past its checkpoint).
pub fn write(path: &Path, rows: &[EpochRow]) -> Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{HEADER}")?;
    for r in rows {
        writeln!(f, "{}", r.to_csv())?;
    }
    Ok(())
}
