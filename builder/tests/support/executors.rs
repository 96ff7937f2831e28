//! Running one test body once per RUN executor.

/// Makes `native::NAME` and `oci::NAME` tests calling `NAME(executor)` for each listed function.
#[allow(unused_macros)] // Only the per-executor test files use it.
macro_rules! for_both_executors {
    ($($name:ident),* $(,)?) => {
        mod native {
            $( #[test] fn $name() { super::$name("native") } )*
        }
        mod oci {
            $( #[test] fn $name() { super::$name("oci") } )*
        }
    };
}

#[allow(unused_imports)] // Only the per-executor test files use it.
pub(crate) use for_both_executors;
