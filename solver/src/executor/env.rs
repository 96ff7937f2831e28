//! The process environment of a step.

/// The PATH a step gets when its environment has none (BuildKit's default for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Completes `env` (`KEY=VALUE` entries) with `PATH` and `HOME` when unset and
/// the extra (secret) variables; later duplicates of a key win.
pub fn process_env(env: &[String], home: &str, extra: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(env.len() + extra.len() + 2);
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        out.retain(|e| e.split('=').next() != Some(key.as_str()));
        out.push(entry);
    };
    for e in env {
        set(e.clone());
    }
    for (k, v) in extra {
        set(format!("{k}={v}"));
    }
    let has = |out: &Vec<String>, k: &str| out.iter().any(|e| e.split('=').next() == Some(k));
    if !has(&out, "PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&out, "HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// The value of `PATH` in an environment list.
pub fn path_of(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_later_wins() {
        let env = process_env(
            &["A=1".into(), "A=2".into()],
            "/root",
            &[("TOKEN".into(), "s3cr=t".into())],
        );
        assert_eq!(
            env,
            vec![
                format!("PATH={DEFAULT_PATH}"),
                "A=2".to_string(),
                "TOKEN=s3cr=t".to_string(),
                "HOME=/root".to_string()
            ]
        );
        let env = process_env(&["PATH=/x".into(), "HOME=/h".into()], "/root", &[]);
        assert_eq!(env, vec!["PATH=/x".to_string(), "HOME=/h".to_string()]);
        assert_eq!(path_of(&env), "/x");
    }
}
