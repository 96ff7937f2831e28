//! The step prefix of progress names, as BuildKit numbers them:
//! `[stage 2/5] RUN ...`, the stage name left out when the Dockerfile has one
//! stage, the index padded to the width of the total.

/// Numbers one stage's steps.
#[derive(Debug)]
pub(super) struct Steps {
    label: String,
    index: usize,
    total: usize,
}

impl Steps {
    /// `label` (platform and stage name, possibly empty) over `total` steps.
    pub(super) fn new(label: String, total: usize) -> Steps {
        Steps {
            label,
            index: 0,
            total,
        }
    }

    /// Counts `n` more steps (ONBUILD triggers, known once the base is).
    pub(super) fn add(&mut self, n: usize) {
        self.total += n;
    }

    /// The next step's name for `text`.
    pub(super) fn next(&mut self, text: &str) -> String {
        self.index += 1;
        if self.total == 0 {
            return text.to_string();
        }
        let width = self.total.to_string().len();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("{} ", self.label)
        };
        format!("[{label}{:>width$}/{}] {text}", self.index, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_as_buildkit() {
        let mut s = Steps::new(String::new(), 2);
        assert_eq!(s.next("FROM x"), "[1/2] FROM x");
        let mut s = Steps::new("build".into(), 11);
        assert_eq!(s.next("RUN a"), "[build  1/11] RUN a");
        assert_eq!(Steps::new(String::new(), 0).next("RUN a"), "RUN a");
    }
}
