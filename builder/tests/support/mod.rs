//! What the end-to-end tests share: the test environment made by
//! `testdata/env/setup.sh` and the `kiln` binary under test.
#![allow(dead_code)] // Each test file uses a different part of this module.

mod build;
mod executors;
mod fixture;
// The network peers are the solver's (its executor suite uses them too).
#[path = "../../../solver/tests/support/net.rs"]
mod net;
mod oracle;
mod proxy;
mod report;
mod store;
mod validate;

#[allow(unused_imports)] // Each test file uses a different part.
pub use build::{executed, read_json, Build};
#[allow(unused_imports)] // Each test file uses a different part.
pub(crate) use executors::for_both_executors;
#[allow(unused_imports)] // Each test file uses a different part.
pub use fixture::{build_with, busybox, read, setup_binfmt};
#[allow(unused_imports)] // Each test file uses a different part.
pub use net::{host_global_ipv4, pong_server};
#[allow(unused_imports)] // Each test file uses a different part.
pub use oracle::{sha256_digest, sha256_hex, skopeo, skopeo_raw_json, stdout_ok, unique};
#[allow(unused_imports)] // Each test file uses a different part.
pub use proxy::{run_bounded, FaultProxy};
#[allow(unused_imports)] // Each test file uses a different part.
pub use report::Tally;
#[allow(unused_imports)] // Each test file uses a different part.
pub use store::{check_store, files_holding};
#[allow(unused_imports)] // Each test file uses a different part.
pub use validate::{
    validate_archive, validate_layout, validate_named, validate_remote, validate_store,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The addresses, credentials and paths written by `testdata/env/setup.sh start`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: BTreeMap<String, String>,
}

impl TestEnv {
    /// Reads `$KILN_TESTENV/env` (default `/tmp/kiln-testenv/env`).
    ///
    /// Panics with a message naming the setup script when the environment is
    /// missing: integration tests must fail loudly, never skip.
    pub fn load() -> TestEnv {
        let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".to_string());
        let path = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the test environment is not set up ({}: {e}); run `bash testdata/env/setup.sh start` as root first \
                 (or the whole suite with `bash testdata/test.sh`)",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        TestEnv { vars }
    }

    /// One variable of the env file; panics naming the variable when it is absent.
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!("{key} missing from the test env file; rerun testdata/env/setup.sh start")
        })
    }

    /// The plain-HTTP registry without auth, `host:port`.
    pub fn registry(&self) -> &str {
        self.get("KILN_TEST_REGISTRY")
    }

    /// The HTTPS registry with basic auth, `host:port`.
    pub fn registry_tls(&self) -> &str {
        self.get("KILN_TEST_REGISTRY_TLS")
    }

    /// The registry with bearer-token auth, `host:port`.
    pub fn registry_token(&self) -> &str {
        self.get("KILN_TEST_REGISTRY_TOKEN")
    }

    /// The CA certificate that signed the TLS registry's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        PathBuf::from(self.get("KILN_TEST_CA"))
    }
}

/// The `kiln` binary Cargo built for these tests.
pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}
