//! The expansion budget of one Dockerfile: how many bytes ARG/ENV expansion
//! may add, so values that double from line to line fail fast with a
//! located error instead of exhausting memory.

use std::cell::Cell;

use crate::error::SourceError;
use crate::instructions::Ctx;

/// Bytes expansion may add over the whole Dockerfile (64 MiB): the growth
/// of every expanded word, the environment of every RUN and the ENV a stage
/// inherits from its base stage.
pub const EXPANSION_BUDGET: usize = 64 << 20;

/// What is left of [`EXPANSION_BUDGET`] (shared by the resolver's closures).
#[derive(Debug)]
pub(crate) struct Budget {
    left: Cell<usize>,
}

impl Budget {
    /// A full budget.
    pub(crate) fn new() -> Budget {
        Budget::with_limit(EXPANSION_BUDGET)
    }

    /// A budget of `limit` bytes.
    pub(crate) fn with_limit(limit: usize) -> Budget {
        Budget {
            left: Cell::new(limit),
        }
    }

    /// Spends `bytes` for the instruction at `cx`; fails there once the budget is gone.
    pub(crate) fn spend(&self, bytes: usize, cx: &Ctx) -> Result<(), SourceError> {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(cx.expansion_error(format!(
                    "variable expansion in this Dockerfile grows past {} MiB",
                    EXPANSION_BUDGET >> 20
                )))
            }
        }
    }

    /// Spends what expanding `word` into `result` added.
    pub(crate) fn grew(&self, word: &str, result: &str, cx: &Ctx) -> Result<(), SourceError> {
        self.spend(result.len().saturating_sub(word.len()), cx)
    }
}

/// The bytes of an environment (`KEY=value` entries).
pub(crate) fn env_size(vars: &[(String, String)]) -> usize {
    vars.iter().map(|(k, v)| k.len() + v.len() + 1).sum()
}
