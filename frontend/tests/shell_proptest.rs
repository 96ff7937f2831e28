//! The lexer never panics, whatever the word, env or escape character.

use kiln_frontend::shell::vars::env_from_pairs;
use kiln_frontend::shell::Lexer;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_shell_like_input(word in "[-a-z${}:+?#%/*\\\\'\" `\t\n]{0,40}", backtick in any::<bool>()) {
        let env = env_from_pairs(["a=x y", "b=", "c=/usr/local/bin"]);
        let mut lex = Lexer::new(if backtick { '`' } else { '\\' });
        let _ = lex.process(&word, &env);
        lex.raw_quotes = true;
        lex.skip_unset_env = true;
        let _ = lex.process(&word, &env);
    }

    #[test]
    fn never_panics_on_any_string(word in any::<String>()) {
        let env = env_from_pairs(["a=x"]);
        let _ = Lexer::default().process(&word, &env);
    }

    #[test]
    fn plain_words_are_unchanged(word in "[a-zA-Z0-9_./-]{0,30}") {
        let env = env_from_pairs(["a=x"]);
        prop_assert_eq!(Lexer::default().process_word(&word, &env).unwrap(), word);
    }
}
