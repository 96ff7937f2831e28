//! Dockerfile lexer, parser, expansion, checks and lowering for kiln.
