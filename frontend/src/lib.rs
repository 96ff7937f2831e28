//! Dockerfile lexer, parser, expansion, checks and lowering for kiln.

pub mod shell;
