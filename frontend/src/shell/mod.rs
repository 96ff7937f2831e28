//! Shell-word processing as BuildKit does it: quote removal, escapes and `$` expansion.

pub mod lexer;
pub mod pattern;
pub mod vars;

pub use lexer::{Expansion, Lexer, ShellError};
pub use vars::VarLookup;
