//! Dockerfile lexer, parser, expansion, checks and lowering for kiln.

pub mod directives;
pub mod error;
pub mod parser;
pub mod shell;
pub mod suggest;

pub use error::{ErrorKind, Location, SourceError};
pub use parser::{parse, parse_named, Ast, Heredoc, Node};

pub mod instructions;
pub mod lint;
pub mod lower;
pub mod stages;
