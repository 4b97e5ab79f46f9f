//! The CPU backend: the plan's own kernels. It takes no steps from the CPU executor (everything already
//! runs there), so an [`super::OffloadExecutor`] over it is the plain [`crate::plan::Executor`].

use super::{Backend, Device};
use crate::error::{Error, Result};
use crate::plan::{Plan, Step};
use std::prelude::v1::*;

/// The host CPU.
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn offloads(&self) -> bool {
        false
    }
    fn unsupported(&self, _: &Plan<'_>, _: &Step<'_>) -> Option<String> {
        Some("the CPU executor runs it".into())
    }
    fn prepare<'p>(&self, _: &'p Plan<'_>, _: &[bool]) -> Result<Box<dyn Device + 'p>> {
        Err(Error::BackendUnavailable { backend: "cpu", why: "the CPU has no separate device".into() })
    }
}
