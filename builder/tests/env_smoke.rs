//! The test environment itself: if a registry or the base image is missing,
//! these fail first and say so, instead of every other test failing obscurely.

mod support;

use support::TestEnv;

fn client(env: &TestEnv) -> reqwest::Client {
    let pem = std::fs::read(env.ca_cert()).expect("read the test CA");
    let ca = reqwest::Certificate::from_pem(&pem).expect("parse the test CA");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("build an HTTP client")
}

#[tokio::test]
async fn plain_registry_answers_v2_without_auth() {
    let env = TestEnv::load();
    let resp = client(&env)
        .get(format!("http://{}/v2/", env.registry()))
        .send()
        .await
        .expect("GET /v2/ on the plain registry");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("docker-distribution-api-version")
            .and_then(|v| v.to_str().ok()),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn tls_registry_asks_for_basic_auth() {
    let env = TestEnv::load();
    let c = client(&env);
    let url = format!("https://{}/v2/", env.registry_tls());
    let resp = c
        .get(&url)
        .send()
        .await
        .expect("GET /v2/ on the TLS registry");
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok());
    assert!(
        challenge.is_some_and(|c| c.starts_with("Basic ")),
        "expected a Basic challenge, got {challenge:?}"
    );
    let ok = c
        .get(&url)
        .basic_auth(
            env.get("KILN_TEST_TLS_USER"),
            Some(env.get("KILN_TEST_TLS_PASS")),
        )
        .send()
        .await
        .expect("GET /v2/ with credentials");
    assert_eq!(ok.status(), 200);
    let bad = c
        .get(&url)
        .basic_auth(env.get("KILN_TEST_TLS_USER"), Some("wrong"))
        .send()
        .await
        .expect("GET /v2/ with a wrong password");
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn token_registry_sends_a_bearer_challenge_and_the_realm_grants_by_user() {
    let env = TestEnv::load();
    let c = client(&env);
    let resp = c
        .get(format!("http://{}/v2/", env.registry_token()))
        .send()
        .await
        .expect("GET /v2/ on the token registry");
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let realm = env.get("KILN_TEST_TOKEN_REALM");
    assert!(challenge.starts_with("Bearer "), "challenge: {challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{realm}\"")),
        "challenge: {challenge}"
    );

    // The pull-only user is granted pull but not push.
    let scope = "repository:library/busybox:pull,push";
    let token: serde_json::Value = c
        .get(realm)
        .query(&[
            ("service", env.get("KILN_TEST_TOKEN_SERVICE")),
            ("scope", scope),
        ])
        .basic_auth(
            env.get("KILN_TEST_TOKEN_RO_USER"),
            Some(env.get("KILN_TEST_TOKEN_RO_PASS")),
        )
        .send()
        .await
        .expect("ask the realm")
        .json()
        .await
        .expect("token JSON");
    let jwt = token["token"].as_str().expect("a token");
    let claims = jwt.split('.').nth(1).expect("a JWT has three parts");
    let claims = base64_url_decode(claims);
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("claims JSON");
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));

    let denied = c
        .get(realm)
        .query(&[
            ("service", env.get("KILN_TEST_TOKEN_SERVICE")),
            ("scope", scope),
        ])
        .basic_auth(env.get("KILN_TEST_TOKEN_RO_USER"), Some("wrong"))
        .send()
        .await
        .expect("ask the realm with a wrong password");
    assert_eq!(denied.status(), 401);
}

#[tokio::test]
async fn busybox_index_has_amd64_and_arm64() {
    let env = TestEnv::load();
    let index: serde_json::Value = client(&env)
        .get(format!(
            "http://{}/v2/library/busybox/manifests/latest",
            env.registry()
        ))
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .expect("GET the busybox index")
        .json()
        .await
        .expect("index JSON");
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index with manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}

/// Decodes unpadded base64url (JWT segments) without another dependency.
fn base64_url_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64url character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
