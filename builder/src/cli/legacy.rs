//! `docker build`'s legacy flags that buildx accepts and ignores (hidden in
//! its help): kiln accepts them too, so scripts written for `docker build`
//! run, and says on stderr that each given one has no effect.

/// The legacy flags of `kiln build`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LegacyArgs {
    /// Ignored: BuildKit keeps no intermediate containers.
    #[arg(long, hide = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = super::parse_bool)]
    pub rm: Option<bool>,
    /// Ignored: BuildKit keeps no intermediate containers.
    #[arg(long = "force-rm", hide = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = super::parse_bool)]
    pub force_rm: Option<bool>,
    /// Ignored: the context is not sent over a network.
    #[arg(long, hide = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = super::parse_bool)]
    pub compress: Option<bool>,
    /// Ignored: removed with BuildKit.
    #[arg(long, hide = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = super::parse_bool)]
    pub squash: Option<bool>,
    /// Ignored: Windows container isolation.
    #[arg(long, hide = true, value_name = "VALUE")]
    pub isolation: Option<String>,
    /// Ignored: use `RUN --security=insecure` with `--allow security.insecure`.
    #[arg(long = "security-opt", hide = true, value_name = "VALUE")]
    pub security_opt: Vec<String>,
    /// Ignored: resource limits of the legacy builder.
    #[arg(short = 'm', long, hide = true, value_name = "VALUE")]
    pub memory: Option<String>,
    /// Ignored.
    #[arg(long = "memory-swap", hide = true, value_name = "VALUE")]
    pub memory_swap: Option<String>,
    /// Ignored.
    #[arg(short = 'c', long = "cpu-shares", hide = true, value_name = "VALUE")]
    pub cpu_shares: Option<i64>,
    /// Ignored.
    #[arg(long = "cpu-period", hide = true, value_name = "VALUE")]
    pub cpu_period: Option<i64>,
    /// Ignored.
    #[arg(long = "cpu-quota", hide = true, value_name = "VALUE")]
    pub cpu_quota: Option<i64>,
    /// Ignored.
    #[arg(long = "cpuset-cpus", hide = true, value_name = "VALUE")]
    pub cpuset_cpus: Option<String>,
    /// Ignored.
    #[arg(long = "cpuset-mems", hide = true, value_name = "VALUE")]
    pub cpuset_mems: Option<String>,
}

impl LegacyArgs {
    /// One note per legacy flag given, for stderr.
    pub fn notes(&self) -> Vec<String> {
        let mut given: Vec<(&str, &str)> = Vec::new();
        let limit = "kiln sets no resource limits on build steps";
        let mut flag = |on: bool, name: &'static str, why: &'static str| {
            if on {
                given.push((name, why));
            }
        };
        flag(
            self.rm.is_some(),
            "--rm",
            "BuildKit keeps no intermediate containers",
        );
        flag(
            self.force_rm.is_some(),
            "--force-rm",
            "BuildKit keeps no intermediate containers",
        );
        flag(
            self.compress.is_some(),
            "--compress",
            "the context is read locally, not sent over a network",
        );
        flag(
            self.squash.is_some(),
            "--squash",
            "squash was removed with BuildKit; squash with a multi-stage Dockerfile instead",
        );
        flag(
            self.isolation.is_some(),
            "--isolation",
            "isolation is deprecated with BuildKit",
        );
        flag(
            !self.security_opt.is_empty(),
            "--security-opt",
            "use RUN --security=insecure with --allow security.insecure instead",
        );
        flag(self.memory.is_some(), "--memory", limit);
        flag(self.memory_swap.is_some(), "--memory-swap", limit);
        flag(self.cpu_shares.is_some(), "--cpu-shares", limit);
        flag(self.cpu_period.is_some(), "--cpu-period", limit);
        flag(self.cpu_quota.is_some(), "--cpu-quota", limit);
        flag(self.cpuset_cpus.is_some(), "--cpuset-cpus", limit);
        flag(self.cpuset_mems.is_some(), "--cpuset-mems", limit);
        given
            .into_iter()
            .map(|(name, why)| {
                format!("note: {name} is ignored (accepted for docker build compatibility): {why}")
            })
            .collect()
    }
}
